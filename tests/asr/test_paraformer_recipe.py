"""The recipe trains, decodes and scores a (tiny) Paraformer; Speech2Text serves it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile
import torch

from nar.base.kaldi import read_kaldi_map
from asr.inference import Speech2Text

DECODES = ("decode_paraformer", "decode_paraformer_rescore", "decode_paraformer_ctcfire")


@pytest.fixture(scope="module")
def model_dir(tiny_paraformer_recipe):
    return tiny_paraformer_recipe / "exp/asr_train_tiny_paraformer_char"


@pytest.fixture(scope="module")
def wavs(tiny_paraformer_recipe):
    scp = read_kaldi_map(str(tiny_paraformer_recipe / "dump/raw/test/wav.scp"))
    return [torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in scp.values()]


def test_recipe_trains_decodes_and_scores_paraformer(tiny_paraformer_recipe, model_dir):
    r = tiny_paraformer_recipe
    assert (model_dir / "valid.loss.ave.pth").exists()
    log = (model_dir / "train.log").read_text()
    assert "loss_pre=" in log and "glance_ratio=" in log  # quantity loss and GLM were trained
    for dec in DECODES:  # run.sh chose the Paraformer decode configs from the model type
        for dset in ("test",):  # the family reruns decode test only (conftest)
            out = model_dir / dec / dset
            utts = (r / "dump/raw" / dset / "text").read_text().splitlines()
            assert len((out / "text").read_text().splitlines()) == len(utts)
            scores = json.loads((out / "scoring/scores.json").read_text())
            assert scores["utterances"] == len(utts)
    rows = [line for line in (r / "RESULTS.md").read_text().splitlines()
            if line.startswith("| asr_train_tiny_paraformer_char")]
    assert len(rows) == 3


def test_batch_equals_items(model_dir, wavs):
    s2t = Speech2Text(model_dir)
    batch = s2t(wavs)
    for wav, hyp in zip(wavs, batch):
        one = s2t(wav)
        assert one.token_ids == hyp.token_ids and one.timestamps == hyp.timestamps
        assert one.score == pytest.approx(hyp.score, abs=1e-3)


def test_ctc_firing_serves_batches_like_items_and_only_for_paraformer(model_dir, wavs, tiny_recipe):
    s2t = Speech2Text(model_dir, firing="ctc")
    assert s2t.decoder.firing == "ctc"
    assert s2t.model.firing == "predictor"  # the decode option is not written onto the module
    batch = s2t(wavs)
    for wav, hyp in zip(wavs, batch):
        one = s2t(wav)
        assert one.token_ids == hyp.token_ids and one.timestamps == hyp.timestamps
    with pytest.raises(ValueError, match="firing must be one of"):
        Speech2Text(model_dir, firing="spikes")
    with pytest.raises(ValueError, match=r"\['firing'\] are not options of a ctc model"):
        Speech2Text(tiny_recipe / "exp/asr_train_tiny_char", firing="ctc")


def test_timestamps_are_within_the_audio(model_dir, wavs):
    s2t = Speech2Text(model_dir)
    for wav, hyp in zip(wavs, s2t(wavs)):
        assert len(hyp.timestamps) == len(hyp.token_ids)
        duration = wav.numel() / s2t.sample_rate
        assert all(0 <= s < e <= duration + 0.1 for s, e in hyp.timestamps)
        assert all(a[0] <= b[0] for a, b in zip(hyp.timestamps, hyp.timestamps[1:]))


def test_too_short_input_is_refused_and_a_silent_one_gives_an_empty_hypothesis(model_dir, wavs):
    s2t = Speech2Text(model_dir)
    # 50 ms: ESPnet's conv2d subsampling needs 7 STFT frames (960 samples) for one encoder frame;
    # in a padded batch its mask arithmetic would grant this item one frame that it refuses alone,
    # so it is refused either way (batched equals alone), naming the input
    short = (0.01 * np.random.default_rng(0).standard_normal(800)).astype(np.float32)
    with pytest.raises(ValueError, match=r"inputs\[0\]: 800 samples .* at least 960 samples"):
        s2t([short, wavs[0]])
    # 60 ms of faint noise: one encoder frame, on which the predictor fires no token
    faint = (0.01 * np.random.default_rng(0).standard_normal(960)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hyps = s2t([faint, wavs[0]])
    assert hyps[0].text == "" and hyps[0].token_ids == () and hyps[0].timestamps == ()
    assert any("inputs[0]" in str(w.message) and "fired no token" in str(w.message) for w in caught)
    assert hyps[1].token_ids == s2t(wavs[0]).token_ids


def test_ctc_only_options_are_refused_for_paraformer(model_dir):
    with pytest.raises(ValueError, match="paraformer model decodes with search in"):
        Speech2Text(model_dir, search="beam")
    with pytest.raises(ValueError, match="length_candidates"):
        Speech2Text(model_dir, length_candidates=-1)
