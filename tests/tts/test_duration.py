"""tts.duration (prompt-rate rule, per-phone duration model) and the tts.bin.fit_duration CLI."""

import json

import numpy as np
import pytest

from tts.bin import fit_duration as fit_cli
from tts.duration import PhoneDurationModel, rule_frames, same_speaker_pairs

TRUE_WEIGHTS = {"a": 0.5, "b": 0.8, "c": 1.0, "d": 1.2, "e": 1.5, "f": 2.0, "g": 0.7, "h": 1.3, "|": 0.4}
TRUE_RATES = {"s0": 3.0, "s1": 4.0, "s2": 5.0, "s3": 6.0, "s4": 8.0}


def synthetic(n_utts=400, noise=0.01, seed=0):
    """Utterances drawn from a known model: frames = rate(speaker) * sum of weights * (1 + noise)."""
    rng = np.random.default_rng(seed)
    phones = [p for p in TRUE_WEIGHTS if p != "|"]
    seqs, frames, speakers = [], [], []
    for u in range(n_utts):
        spk = f"s{u % len(TRUE_RATES)}"
        seq = []
        for _ in range(rng.integers(2, 8)):
            seq += (["|"] if seq else []) + list(rng.choice(phones, rng.integers(1, 6)))
        seqs.append(seq)
        speakers.append(spk)
        frames.append(TRUE_RATES[spk] * sum(TRUE_WEIGHTS[p] for p in seq) * (1 + noise * rng.standard_normal()))
    return seqs, frames, speakers


def test_rule_arithmetic():
    assert rule_frames(["a", "b", "|", "c", "d"], 100, ["a", "|", "b"]) == 50.0  # 100 * 2 / 4
    assert rule_frames(["a"], 3.5, ["x", "y", "z"]) == 10.5
    assert rule_frames(["a", "|", "b", "|", "c"], 30, ["a", "b", "c", "d", "e", "f"]) == 60.0


@pytest.mark.parametrize("args, match", [
    (([], 10, ["a"]), "prompt_phones"),
    ((["a"], 10, []), "target_phones"),
    ((["|"], 10, ["a"]), "prompt_phones"),
    ((["a"], 0, ["a"]), "prompt_frames"),
    ((["a"], -3, ["a"]), "prompt_frames"),
    ((["a"], float("nan"), ["a"]), "prompt_frames"),
])
def test_rule_errors(args, match):
    with pytest.raises(ValueError, match=match):
        rule_frames(*args)


def test_model_recovers_known_weights_and_rates():
    seqs, frames, speakers = synthetic()
    model = PhoneDurationModel.fit(seqs, frames, speakers, rounds=10)
    # the fitted weights have mean 1 over the training phone tokens ("|" excluded)
    counts = {p: sum(s.count(p) for s in seqs) for p in TRUE_WEIGHTS}
    scale = sum(TRUE_WEIGHTS[p] * counts[p] for p in counts if p != "|") / sum(
        counts[p] for p in counts if p != "|")
    for p, w in TRUE_WEIGHTS.items():
        assert model.weights[p] == pytest.approx(w / scale, rel=0.08), p
    for s, r in TRUE_RATES.items():
        assert model.speaker_rates[s] == pytest.approx(r * scale, rel=0.03), s
    # and predicts same-speaker totals better than the rule
    pairs = [(seqs[i + 5], frames[i + 5], seqs[i], frames[i]) for i in range(len(seqs) - 5)]
    ev = model.evaluate(pairs)
    assert ev.n == len(pairs)
    assert ev.model_mare < 0.05 < ev.rule_mare
    assert ev.model_mare < ev.rule_mare / 3


def test_model_predict_save_load(tmp_path):
    model = PhoneDurationModel({"a": 2.0, "b": 0.5, "|": 0.25})
    # W(prompt) = 2 + .25 + .5 = 2.75; W(target) = .5 + .5 + 1 (unknown "z")
    assert model.predict(["a", "|", "b"], 55.0, ["b", "b", "z"]) == pytest.approx(55 / 2.75 * 2.0)
    path = tmp_path / "exp" / "duration.json"
    model.save(path)
    loaded = PhoneDurationModel.load(path)
    assert loaded.weights == model.weights
    assert loaded.predict(["a"], 10, ["b"]) == model.predict(["a"], 10, ["b"])
    with pytest.raises(ValueError, match="prompt_frames"):
        model.predict(["a"], 0, ["b"])
    with pytest.raises(ValueError, match="target_phones"):
        model.predict(["a"], 1, [])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": {"a": 1}}))
    with pytest.raises(ValueError, match="bad.json"):
        PhoneDurationModel.load(bad)


def test_fit_errors():
    with pytest.raises(ValueError, match="differ in length"):
        PhoneDurationModel.fit([["a"]], [1.0, 2.0], ["s"])
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        PhoneDurationModel.fit([["a"], ["b"]], [1.0, 0.0], ["s", "s"])
    with pytest.raises(ValueError, match=r"phone_seqs\[0\]"):
        PhoneDurationModel.fit([["|"]], [1.0], ["s"])
    with pytest.raises(ValueError, match="empty"):
        PhoneDurationModel.fit([], [], [])
    with pytest.raises(ValueError, match="weights"):
        PhoneDurationModel({"a": -1.0})


def test_same_speaker_pairs():
    utt2spk = {"a-1": "a", "a-2": "a", "a-3": "a", "b-1": "b"}
    assert same_speaker_pairs(list(utt2spk), utt2spk) == [("a-1", "a-2"), ("a-2", "a-3"), ("a-3", "a-1")]
    with pytest.raises(ValueError, match="c-1"):
        same_speaker_pairs(["c-1"], utt2spk)


def write_set(directory, seqs, frames, speakers, prefix):
    directory.mkdir(parents=True)
    utts = [f"{s}-{prefix}{i:04d}" for i, s in enumerate(speakers)]
    (directory / "phones").write_text("".join(f"{u} {' '.join(q)}\n" for u, q in zip(utts, seqs)),
                                      encoding="utf-8")
    (directory / "shape").write_text("".join(f"{u} {max(1, round(f))},4\n" for u, f in zip(utts, frames)))
    (directory / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in zip(utts, speakers)))
    return [str(directory / n) for n in ("phones", "shape", "utt2spk")]


def test_cli_end_to_end(tmp_path):
    train = write_set(tmp_path / "train", *synthetic(300, seed=1), prefix="t")
    dev = write_set(tmp_path / "dev", *synthetic(60, seed=2), prefix="d")
    out = tmp_path / "exp" / "duration.json"
    argv = ["--phones", train[0], "--shape", train[1], "--utt2spk", train[2], "--out", str(out),
            "--dev_phones", dev[0], "--dev_shape", dev[1], "--dev_utt2spk", dev[2], "--log_level", "ERROR"]
    assert fit_cli.main(argv) == 0
    model = PhoneDurationModel.load(out)
    assert set(model.weights) == set(TRUE_WEIGHTS)
    result = json.loads((out.parent / "duration_eval.json").read_text())
    assert result["pairs"] == 60
    assert result["model_mare"] < result["rule_mare"]
    with pytest.raises(SystemExit):
        fit_cli.main(argv[:8] + ["--dev_phones", dev[0]])  # dev options come together
    bad_shape = tmp_path / "bad_shape"
    bad_shape.write_text("s0-t0000 abc\n")
    with pytest.raises(SystemExit, match="bad_shape.*s0-t0000"):
        fit_cli.main(["--phones", train[0], "--shape", str(bad_shape), "--utt2spk", train[2], "--out", str(out)])
