"""recipes/gen.sh end to end on a tiny synth_music corpus: rendering, tokenizer fit and codes,
caption tokens, MAGNeT and the AR baseline trained one epoch by ESPnet's trainer, generation by
rescoring and Hybrid-MAGNeT, the codec round trip, the field classifier, scores and the
RESULTS.md table; then a resumed stage 6 that generates nothing again."""

import json
import shutil
import subprocess

import pytest
import soundfile as sf

from tests.conftest import ROOT, TORCH_THREADS, recipe_env

TINY = """\
# tiny {model} for tests: every stage runs, nothing is expected to be learned
model: {model}
model_conf: {{d_model: 16, num_layers: 1, num_heads: 2, ff_mult: 2, dropout: 0.0, text_layers: 1, max_frames: 100}}
batch_type: sorted
batch_size: 4
max_epoch: 1
optim: adam
optim_conf: {{lr: 0.001}}
best_model_criterion: [[valid, acc, max]]
keep_nbest_models: 1
num_workers: 0
"""


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_gen_recipe_end_to_end(tmp_path):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    recipe = tmp_path / "egs" / "synth_music" / "gen1"
    shutil.copytree(ROOT / "egs/synth_music/gen1", recipe, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))
    for model in ("magnet", "ar"):
        (recipe / "conf" / f"{model}_tiny.yaml").write_text(TINY.format(model=model))
    cmd = ["./run.sh", "--local_data_opts", "--num_train 8 --num_dev 2 --num_test 3 --seconds 2 --nj 1",
           "--tokenizer_opts", "--num_codebooks 2 --codebook_size 8 --iters 2 --griffin_lim_iters 2",
           "--magnet_config", "conf/magnet_tiny.yaml", "--ar_config", "conf/ar_tiny.yaml",
           "--methods", "magnet_rescore hybrid", "--gen_opts", "--seconds 1 --steps 2,2 --hybrid_seconds 0.3",
           "--batch_size", "2", "--classifier_opts", "--epochs 1 --batch_size 4 --crop_seconds 1",
           "--eval_seconds", "1", "--num_threads", str(TORCH_THREADS)]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (recipe / "run.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len((recipe / "dump/codes/train/codes.scp").read_text().splitlines()) == 8
    assert len((recipe / "dump/captions/test/text_int").read_text().splitlines()) == 3
    for model in ("magnet", "ar"):
        assert (recipe / f"exp/{model}_{model}_tiny/1epoch.pth").is_file()
    for system in ("magnet_rescore", "hybrid", "resynth"):
        out = recipe / "exp/generate" / system / "test"
        utts = [line.split()[0] for line in (out / "wav.scp").read_text().splitlines()]
        assert len(utts) == 3, system
        wav, sr = sf.read(out / "wav" / f"{utts[0]}.wav")
        assert sr == 16000 and (len(wav) == 16000 if system != "resynth" else len(wav) == 32000), (system, len(wav))
    results = {}
    for system in ("real", "resynth", "magnet_rescore", "hybrid"):
        res = json.loads((recipe / "exp/eval/test" / system / "result.json").read_text())
        assert res["n_clips"] == 3 and res["frechet_distance"] is not None
        results[system] = res
    assert results["real"]["frechet_distance"] == pytest.approx(0.0, abs=1e-6)  # same clips, same 1 s
    table = (recipe / "RESULTS.md").read_text()
    assert "## Text-to-audio on test" in table and "hybrid" in table and "magnet_rescore" in table
    # resumed generation: nothing left to do, nothing rewritten
    wav = recipe / "exp/generate/hybrid/test/wav" / f"{utts[0]}.wav"
    before = wav.stat().st_mtime_ns
    r = subprocess.run(cmd + ["--stage", "6", "--stop_stage", "6"], cwd=recipe, env=recipe_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert wav.stat().st_mtime_ns == before
    assert "0 generated" in r.stdout
