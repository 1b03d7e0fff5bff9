"""asr.bin.select_checkpoints: the n best epochs on another validation set, averaged."""

import itertools
import json
import os
import shutil
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr import Speech2Text
from asr.audio import as_waveform
from asr.bin import select_checkpoints as sc
from asr.bin.average_checkpoints import average
from nar.base.kaldi import read_kaldi_map
from asr.scoring import score


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(1, 30), st.sampled_from([1.0, 2.5, 3.0, 7.25, 9.0]), min_size=1, max_size=9),
       st.integers(1, 10))
def test_choose_is_the_brute_force_best_subset(errors, nbest):
    k = min(nbest, len(errors))
    # brute force: of all k-subsets, the lowest total error; among those, the latest epochs
    best = min(itertools.combinations(sorted(errors), k),
               key=lambda c: (sum(errors[e] for e in c), sorted((-e for e in c))))
    assert sc.choose(errors, nbest) == sorted(best)


def test_choose_bad_arguments():
    with pytest.raises(ValueError, match="nbest"):
        sc.choose({1: 1.0}, 0)
    with pytest.raises(ValueError, match="no epoch"):
        sc.choose({}, 1)


@pytest.fixture(scope="module")
def model_dir(tiny_recipe):
    return tiny_recipe / "exp/asr_train_tiny_char"


def _decode_and_score(model_dir, checkpoint, data_dir):
    utts, refs = read_kaldi_map(str(data_dir / "wav.scp")), read_kaldi_map(str(data_dir / "text"))
    s2t = Speech2Text(model_dir, model_file=checkpoint, search="greedy")
    hyps = {k: s2t(as_waveform(utts[k], 16000)).text for k in sorted(utts)}
    report, _ = score(refs, hyps)
    return 100 * report.wer, 100 * report.cer


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_select_scores_every_epoch_and_averages_the_best(tiny_recipe, model_dir, tmp_path):
    data_dir = tiny_recipe / "dump/raw/dev"
    config = str(tiny_recipe / "conf/decode_greedy.yaml")
    checkpoints = sc.epoch_checkpoints(model_dir)
    assert sorted(checkpoints) == [1, 2]  # the tiny recipe keeps both epochs
    prefix = tmp_path / "sel" / "dev.cer"
    record = sc.select(model_dir, data_dir, config, [1], "cer", prefix, progress=False)
    # each epoch's error is what decoding with that checkpoint and scoring gives
    for epoch, path in checkpoints.items():
        wer, cer = _decode_and_score(model_dir, path, data_dir)
        assert record["epochs"][str(epoch)]["cer"] == pytest.approx(cer, abs=1e-3)
        assert record["epochs"][str(epoch)]["wer"] == pytest.approx(wer, abs=1e-3)
    errors = {e: record["epochs"][str(e)]["cer"] for e in checkpoints}
    assert record["chosen"] == sc.choose(errors, 1) and record["best"] == "ave_1best"
    expected = average([str(checkpoints[e]) for e in record["chosen"]])
    for name in ("dev.cer.ave_1best.pth", "dev.cer.ave.pth"):
        assert _same_state(torch.load(tmp_path / "sel" / name), expected)
    assert json.loads((tmp_path / "sel" / "dev.cer.json").read_text())["chosen"] == record["chosen"]

    # several n: every average is decoded and scored, the best on this set is kept
    record = sc.select(model_dir, data_dir, config, [1, 2], "cer", prefix, progress=False)
    for key, n in (("ave_1best", 1), ("ave_2best", 2)):
        got = record["averages"][key]
        assert got["epochs"] == sc.choose(errors, n)
        assert got["cer"] == pytest.approx(_decode_and_score(model_dir, got["file"], data_dir)[1], abs=1e-3)
    best = min(("ave_1best", "ave_2best"), key=lambda k: record["averages"][k]["cer"])
    assert record["best"] == best and record["chosen"] == record["averages"][best]["epochs"]
    assert _same_state(torch.load(tmp_path / "sel" / "dev.cer.ave.pth"),
                       average([str(checkpoints[e]) for e in record["chosen"]]))
    # the chosen average loads for decoding
    assert Speech2Text(model_dir, model_file=tmp_path / "sel" / "dev.cer.ave.pth").model_file.is_file()

    # resume: a scored epoch or average is not decoded again (its cached result is used)
    stamp = tmp_path / "sel" / "dev.cer.json"
    cached = json.loads(stamp.read_text())
    cached["epochs"]["1"]["cer"] = -1.0  # markers only a cache hit can return
    cached["averages"]["ave_2best"]["cer"] = -2.0
    stamp.write_text(json.dumps(cached))
    again = sc.select(model_dir, data_dir, config, [1, 2], "cer", prefix, progress=False)
    assert again["epochs"]["1"]["cer"] == -1.0
    assert again["averages"]["ave_1best"]["epochs"] == [1]  # epoch 1 now ranks first: recomputed
    assert again["averages"]["ave_2best"]["cer"] == -2.0  # same epochs: cached
    assert again["best"] == "ave_2best" and again["chosen"] == [1, 2]


def test_select_bad_inputs(tiny_recipe, model_dir, tmp_path, capsys):
    data_dir = tiny_recipe / "dump/raw/dev"
    out = tmp_path / "x"
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        sc.select(tmp_path, data_dir, None, [1], "cer", out)
    with pytest.raises(FileNotFoundError, match="no wav.scp"):
        sc.select(model_dir, tmp_path, None, [1], "cer", out)
    with pytest.raises(ValueError, match="metric"):
        sc.select(model_dir, data_dir, None, [1], "ter", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((model_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="keep_nbest_models"):
        sc.select(empty, data_dir, None, [1], "cer", out)
    vtln = tmp_path / "vtln.yaml"
    vtln.write_text("speaker_warps: [0.9, 1.0]\n")
    with pytest.raises(ValueError, match="speaker_warps"):
        sc.select(model_dir, data_dir, str(vtln), [1], "cer", out)
    assert sc.main(["--model_dir", str(tmp_path / "nope"), "--data_dir", str(data_dir)]) == 1
    assert "config.yaml" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nbest"):
        sc.select(model_dir, data_dir, None, [0], "cer", out)
    assert not list(tmp_path.glob("x.*"))


def test_recipe_decodes_with_the_chosen_checkpoint(tiny_recipe, model_dir, tmp_path):
    """recipes/asr.sh --inference_model: stage 6 decodes with that file, into decode dirs named by it."""
    from tests.conftest import recipe_env

    recipe = tiny_recipe.parent / f"asr1_select_{os.getpid()}"  # beside the tiny recipe: ../../../recipes
    recipe.mkdir()
    try:
        for name in ("run.sh", "path.sh", "conf", "local", "data", "dump"):
            (recipe / name).symlink_to(tiny_recipe / name)
        (recipe / "exp").mkdir()
        (recipe / "exp" / "asr_stats_char").symlink_to(tiny_recipe / "exp" / "asr_stats_char")  # shapes: window
        exp = recipe / "exp" / model_dir.name
        exp.mkdir()
        for f in model_dir.iterdir():  # config, checkpoints, feature statistics; not its decode dirs
            if f.is_file():
                (exp / f.name).symlink_to(f)
        base = ["./run.sh", "--stage", "6", "--stop_stage", "7", "--asr_config", "conf/train_tiny.yaml",
                "--inference_configs", "conf/decode_greedy.yaml", "--test_sets", "dev", "--num_threads", "1"]
        r = subprocess.run(base + ["--inference_model", "3epoch.pth"], cwd=recipe, env=recipe_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode != 0 and "3epoch.pth does not exist" in r.stdout + r.stderr
        r = subprocess.run(base + ["--inference_model", "1epoch.pth"], cwd=recipe, env=recipe_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        out = exp / "decode_greedy_1epoch" / "dev"
        assert json.loads((out / "rtf.json").read_text())["model_file"] == f"exp/{model_dir.name}/1epoch.pth"
        # the hypotheses are those of asr.bin.decode with that checkpoint (same batching and threads)
        from asr.bin import decode

        direct = tmp_path / "direct"
        decode.main(["--model_dir", str(model_dir), "--model_file", str(model_dir / "1epoch.pth"),
                     "--data_dir", str(tiny_recipe / "dump/raw/dev"), "--output_dir", str(direct),
                     "--config", str(tiny_recipe / "conf/decode_greedy.yaml"), "--num_threads", "1"])
        assert (out / "text").read_text() == (direct / "text").read_text()
        assert (out / "scoring" / "scores.json").is_file()
        assert "decode_greedy_1epoch" in (recipe / "RESULTS.md").read_text()
    finally:
        shutil.rmtree(recipe)
