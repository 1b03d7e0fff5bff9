"""conf/train_ctc_sp.yaml: ESPnet's preprocessor built from it speed-perturbs training audio only.

The check is the resampled length: a factor f turns N samples into about N / f, and the
factors are the config's; validation (train=False) leaves the audio untouched.
"""

import argparse
import random
from pathlib import Path

import numpy as np
import yaml

from asr.task import NARASRTask

ROOT = Path(__file__).resolve().parents[2]


def _preprocessor(train: bool, config: str = "train_ctc_sp.yaml"):
    conf = yaml.safe_load((ROOT / "egs/synth_en/asr1/conf" / config).read_text())
    args = argparse.Namespace(use_preprocessor=True, preprocessor="default",
                              preprocessor_conf=conf["preprocessor_conf"], token_type="char",
                              token_list=["<blank>", "<unk>", "a", "b", "<sos/eos>"], bpemodel=None,
                              non_linguistic_symbols=None, cleaner=None, g2p=None)
    factors = [e[2]["factor"] for e in conf["preprocessor_conf"]["data_aug_effects"][0][1]]
    return NARASRTask.build_preprocess_fn(args, train=train), factors, conf["preprocessor_conf"]


def test_speed_perturbation_config_changes_training_lengths_by_its_factors():
    fn, factors, conf = _preprocessor(train=True)
    assert conf["fs"] == 16000 and 0 < conf["data_aug_prob"] < 1
    rng = np.random.default_rng(0)
    n = 16000
    # ESPnet draws the probability and apply_n from numpy's global RNG, the effect from `random`
    np.random.seed(0)
    random.seed(0)
    lengths = []
    for i in range(40):
        out = fn(f"u{i}", {"speech": rng.standard_normal(n).astype(np.float32), "text": "ab"})
        lengths.append(len(out["speech"]))
    expected = {n} | {round(n / f) for f in factors}
    assert all(min(abs(length - e) for e in expected) <= 2 for length in lengths), lengths
    changed = sum(length != n for length in lengths)
    assert 20 <= changed <= 40  # probability 0.8 of 40
    assert len({length for length in lengths if length != n}) >= 3  # several factors drawn


def test_validation_audio_is_not_perturbed():
    fn, _, _ = _preprocessor(train=False)
    x = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    out = fn("v", {"speech": x.copy(), "text": "ab"})
    assert np.array_equal(out["speech"], x)


def test_formant_warp_config_warps_without_changing_length():
    """conf/train_ctc_sp_fw.yaml: ESPnet's preprocessor applies our registered formant_warp effect.

    Truth: an utterance that kept its length was not speed-perturbed, so if it changed, the warp
    did it, and it must then equal asr.data.formant.warp_formants at some factor in the config's
    range (found by matching the output against a grid of factors).
    """
    from asr.data.formant import warp_formants
    from tests.asr.test_formant import _vowel

    fn, factors, conf = _preprocessor(train=True, config="train_ctc_sp_fw.yaml")
    warp = [e for e in conf["data_aug_effects"] if e[1] == "formant_warp"][0][2]
    x = _vowel(seconds=0.5)
    # a warp alone (length kept) is drawn with probability 0.8 * 1/2 * 1/2 = 0.2 per call; both
    # global generators ESPnet draws from are seeded so the count does not depend on test order
    np.random.seed(3)
    random.seed(3)
    warped = 0
    grid = np.linspace(warp["min_alpha"], warp["max_alpha"], 41)
    for i in range(30):
        out = fn(f"u{i}", {"speech": x.copy(), "text": "ab"})["speech"]
        expected = {x.size} | {round(x.size / f) for f in factors}
        assert min(abs(out.size - e) for e in expected) <= 2
        if out.size == x.size and not np.array_equal(out, x):
            warped += 1
            err = [np.abs(out - warp_formants(x, a, iterations=12)).max() for a in grid]
            assert min(err) < 0.02 * np.abs(x).max(), min(err)
    assert warped >= 3, warped
