"""recipes/tts.sh end to end on the tiny tree: phonemes, tokens (the tiny codec recipe's
tokenizers), T2S and S2A trained one epoch by ESPnet's trainer, duration model, synthesis with
prompts of the same speaker, codec resynthesis, scoring and the RESULTS.md table."""

import json
import shutil
import subprocess

import pytest
import soundfile as sf

from tests.conftest import ROOT, TORCH_THREADS, recipe_env

TINY = """\
# tiny MaskGCT {model} for tests: every stage runs, nothing is expected to be learned
model: {model}
model_conf: {{d_model: 16, num_layers: 1, num_heads: 2, ff_mult: 2, dropout: 0.0}}
batch_type: numel
batch_bins: {bins}
max_epoch: 1
optim: adam
optim_conf: {{lr: 0.001}}
best_model_criterion: [[valid, acc, max]]
keep_nbest_models: 1
num_workers: 0
"""


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_tts_recipe_on_the_tiny_tree(tiny_recipe, tiny_codec_recipe):
    recipe = tiny_recipe.parent / "tts1"
    if recipe.exists():
        shutil.rmtree(recipe)
    shutil.copytree(ROOT / "egs/synth_en/tts1", recipe, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))
    (recipe / "dump").mkdir()
    (recipe / "dump" / "raw").symlink_to(tiny_recipe / "dump" / "raw")
    (recipe / "conf" / "t2s_tiny.yaml").write_text(TINY.format(model="t2s", bins=2000))
    (recipe / "conf" / "s2a_tiny.yaml").write_text(TINY.format(model="s2a", bins=6000))
    # the tiny test set has one utterance per voice; the training set gives same-speaker prompts
    cmd = ["./run.sh", "--stage", "3", "--valid_set", "test", "--test_sets", "train",
           "--semantic_tokenizer", "../codec1/exp/semantic_l-1_k4",
           "--t2s_config", "conf/t2s_tiny.yaml", "--s2a_config", "conf/s2a_tiny.yaml", "--s2a_tag", "tiny",
           "--synth_opts", "--max_utts 2 --t2s_steps 3", "--batch_size", "2",
           "--judges", "sim", "--asr_model_dir", "", "--num_threads", str(TORCH_THREADS)]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (recipe / "run.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    n_train = len((tiny_recipe / "dump/raw/train/wav.scp").read_text().splitlines())
    assert len((recipe / "dump/phones/train/phones_int").read_text().splitlines()) == n_train
    assert len((recipe / "dump/semantic/train/semantic.scp").read_text().splitlines()) == n_train
    assert (recipe / "exp/t2s_t2s_tiny/1epoch.pth").is_file()  # default name: from the config
    assert (recipe / "exp/s2a_tiny/1epoch.pth").is_file() and (recipe / "exp/s2a_tiny/train.log").is_file()  # --s2a_tag
    assert json.loads((recipe / "exp/duration/duration.json").read_text())
    synth = recipe / "exp/synth/maskgct_rule/train"
    utts = [line.split()[0] for line in (synth / "wav.scp").read_text().splitlines()]
    assert len(utts) == 2
    prompts = dict(line.split(maxsplit=1) for line in (synth / "prompt.scp").read_text().splitlines())
    spk = dict(line.split() for line in (tiny_recipe / "dump/raw/train/utt2spk").read_text().splitlines())
    for u in utts:
        wav, sr = sf.read(synth / "wav" / f"{u}.wav")
        assert sr == 16000 and len(wav) > 0
        prompt_utt = prompts[u].rsplit("/", 1)[-1].removesuffix(".wav")
        assert prompt_utt != u and spk[prompt_utt] == spk[u]  # a different utterance of the same voice
    table = (recipe / "RESULTS.md").read_text()
    for row in ("| ground truth |", "| codec resynthesis |", "| MaskGCT (rule) |"):
        assert row in table, table
