"""audio_gen.evaluate: Fréchet distance numerics, a tiny classifier on a tiny audible task,
caption adherence, the fit/score/table CLI and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_gen import evaluate as ev

SR = 16000
FIELDS = ("melody_family", "drums", "tempo_bucket", "mode")
TINY = dict(fields=FIELDS, epochs=16, crop_seconds=1.5, batch_size=16, lr=3e-3, channels=(8, 16, 16, 32),
            embed_dim=32, dropout=0.1, feature=ev.FeatureConfig(n_mels=32))


# --------------------------------------------------------------------------- tiny audible task

def synth_clip(rng: np.random.Generator, timbre: str, drums: bool, tempo: str, mode: str) -> np.ndarray:
    """An arpeggio of a major/minor triad (random root) in one timbre, notes every 0.5 s (slow)
    or 0.18 s (fast), with a noise burst on each note when ``drums``; 2-3 s at 16 kHz."""
    dur = rng.uniform(2.0, 3.0)
    x = np.zeros(int(dur * SR))
    step = {"slow": 0.5, "fast": 0.18}[tempo] * rng.uniform(0.9, 1.1)
    intervals = (0, 4, 7, 12) if mode == "major" else (0, 3, 7, 12)
    root = 48 + rng.integers(0, 12)
    for k, onset in enumerate(np.arange(0.0, dur - 0.05, step)):
        i0 = int(onset * SR)
        t = np.arange(min(len(x) - i0, int(step * SR))) / SR
        phase = 440.0 * 2 ** ((root + intervals[k % 4] - 69) / 12) * t
        wave = {"sine": np.sin(2 * np.pi * phase), "square": np.sign(np.sin(2 * np.pi * phase)),
                "sawtooth": 2 * (phase % 1.0) - 1}[timbre]
        x[i0:i0 + len(t)] += 0.3 * wave * np.exp(-3 * t / step) * np.minimum(1.0, t / 0.01)
        if drums:
            n = min(len(x) - i0, int(0.08 * SR))
            x[i0:i0 + n] += 0.5 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * SR))
    return (x * rng.uniform(0.5, 1.0)).astype(np.float32)


def make_data_dir(root: Path, name: str, n: int, seed: int, shuffle_labels: bool = False) -> Path:
    """A data dir (wav.scp + fields.jsonl) of ``n`` clips with balanced random fields; with
    ``shuffle_labels`` the fields written are those of other clips (a control task)."""
    rng = np.random.default_rng(seed)
    d = root / name
    (d / "wav").mkdir(parents=True, exist_ok=True)
    choices = {"melody_family": ["sine", "square", "sawtooth"], "drums": [True, False],
               "tempo_bucket": ["slow", "fast"], "mode": ["major", "minor"]}
    rows = [{f: choices[f][rng.integers(len(choices[f]))] for f in FIELDS} for _ in range(n)]
    written = [dict(r) for r in rows]
    if shuffle_labels:
        perm = rng.permutation(n)
        written = [dict(rows[p]) for p in perm]
    with open(d / "wav.scp", "w") as scp, open(d / "fields.jsonl", "w") as fj:
        for i, (r, w) in enumerate(zip(rows, written, strict=True)):
            utt = f"{name}_{i:03d}"
            path = d / "wav" / f"{utt}.wav"
            sf.write(path, synth_clip(rng, r["melody_family"], r["drums"], r["tempo_bucket"], r["mode"]), SR)
            scp.write(f"{utt} {path}\n")
            fj.write(json.dumps({"utt": utt, "caption": "a tune", "tempo": 100, **w}) + "\n")
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Train (96 clips), dev (32, picks the epoch) and held-out test (48) dirs, and a classifier."""
    root = tmp_path_factory.mktemp("music")
    train, dev, test = (make_data_dir(root, name, n, seed) for name, n, seed in
                        (("train", 96, 1), ("dev", 32, 2), ("test", 48, 3)))
    res = ev.fit_classifier(train, dev, root / "clf", ev.TrainOptions(**TINY))
    return root, train, dev, test, res


def test_tiny_classifier_learns_audible_fields(tiny):
    root, _, _, test, res = tiny
    clf = ev.FieldClassifier.from_dir(root / "clf")
    acc = ev.score_system(clf, test / "wav.scp", test / "fields.jsonl").adherence.accuracy
    print("held-out accuracy", acc, "epoch seconds", [round(h["seconds"], 2) for h in res.history])
    for f in ("melody_family", "drums", "tempo_bucket"):
        assert acc[f] >= 0.9, (f, acc)


def test_shuffled_labels_stay_near_chance(tmp_path, tiny):
    """Labels that carry no information (train and dev labels permuted across clips): the
    dev accuracy stays near the majority-class baseline."""
    _, _, _, test, _ = tiny
    train = make_data_dir(tmp_path, "shuf_train", 96, 1, shuffle_labels=True)
    dev = make_data_dir(tmp_path, "shuf_dev", 48, 3, shuffle_labels=True)
    res = ev.fit_classifier(train, dev, tmp_path / "clf", ev.TrainOptions(**dict(TINY, epochs=8)))
    baseline = json.loads((tmp_path / "clf" / "config.json").read_text())["valid_majority_baseline"]
    last = res.history[-1]["valid_accuracy"]
    print("shuffled labels: last-epoch dev accuracy", last, "majority baseline", baseline)
    for f in FIELDS:  # 48 clips: one binomial standard deviation is about 0.07
        assert last[f] <= max(baseline[f], 1 / 2) + 0.2, (f, last, baseline)


def test_adherence_of_real_clips_equals_classifier_accuracy(tiny):
    root, _, dev, test, res = tiny
    clf = ev.FieldClassifier.from_dir(root / "clf")
    score = ev.score_system(clf, dev / "wav.scp", dev / "fields.jsonl", dev / "wav.scp", name="real")
    assert score.adherence.accuracy == pytest.approx(res.valid_accuracy, abs=1e-12)
    assert score.adherence.mean == pytest.approx(sum(res.valid_accuracy.values()) / len(FIELDS))
    assert score.frechet_distance == pytest.approx(0.0, abs=1e-6)
    assert score.adherence.n_clips == 32 and score.n_reference == 32
    # against other real clips the FD is positive
    other = ev.score_system(clf, dev / "wav.scp", dev / "fields.jsonl", test / "wav.scp")
    assert other.frechet_distance > 0 and other.n_reference == 48
    # a clip's prediction does not depend on the other clips it is scored with
    one = dict(list(ev.read_scp(dev / "wav.scp").items())[:1])
    (utt, single), = clf.predict(one).items()
    row = next(r for r in score.predictions if r["utt"] == utt)
    assert single.labels == row["predicted"]


def test_resume_continues_to_the_same_model(tmp_path, tiny):
    _, train, _, test, _ = tiny
    opts = dict(TINY, epochs=2, channels=(4, 4, 8, 8), embed_dim=8)
    ev.fit_classifier(train, test, tmp_path / "a", ev.TrainOptions(**opts))
    ev.fit_classifier(train, test, tmp_path / "b", ev.TrainOptions(**dict(opts, epochs=1)))
    res = ev.fit_classifier(train, test, tmp_path / "b", ev.TrainOptions(**opts))  # continues at epoch 2
    assert [h["epoch"] for h in res.history] == [1, 2]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["net"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["net"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    with pytest.raises(ev.EvaluationError, match="other options"):
        ev.fit_classifier(train, test, tmp_path / "b", ev.TrainOptions(**dict(opts, lr=0.1)))


def test_killed_fit_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, tiny, monkeypatch):
    """Killed during epoch 2 (after the epoch-1 checkpoint), a rerun continues at epoch 2 and
    ends with the weights, history and model.pt of an uninterrupted run."""
    _, train, _, test, _ = tiny
    opts = ev.TrainOptions(**dict(TINY, epochs=3, channels=(4, 4, 8, 8), embed_dim=8))
    once = ev.fit_classifier(train, test, tmp_path / "once", opts)
    real_epoch = ev._train_epoch
    epochs_run = []

    def dies_in_epoch_2(net, opt, feats, y, o, epoch):
        epochs_run.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(net, opt, feats, y, o, epoch)

    monkeypatch.setattr(ev, "_train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        ev.fit_classifier(train, test, tmp_path / "twice", opts)
    assert torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=True)["step"] == 1
    monkeypatch.setattr(ev, "_train_epoch", lambda *a: epochs_run.append(a[-1]) or real_epoch(*a))
    twice = ev.fit_classifier(train, test, tmp_path / "twice", opts)
    assert epochs_run == [1, 2, 2, 3]
    assert [h["epoch"] for h in twice.history] == [1, 2, 3] and twice.best_epoch == once.best_epoch
    for name in ("checkpoint.pt", "model.pt"):
        a, b = (torch.load(tmp_path / d / name, weights_only=True) for d in ("once", "twice"))
        a, b = (x["net"] if name == "checkpoint.pt" else x for x in (a, b))
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=f"{name} {k}", rtol=0, atol=0)


# --------------------------------------------------------------------------- Fréchet distance

def _closed_form_commuting(mu1, d1, mu2, d2):
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2))


def test_fd_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    d1, d2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    want = _closed_form_commuting(mu1, d1, mu2, d2)
    assert ev.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want, rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # shared eigenvectors: S1 and S2 commute
    s1, s2 = (q * d1) @ q.T, (q * d2) @ q.T
    assert ev.frechet_distance(mu1, (s1 + s1.T) / 2, mu2, (s2 + s2.T) / 2) == pytest.approx(want, rel=1e-9)
    # one dimension: (m1 - m2)^2 + (sd1 - sd2)^2
    assert ev.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_fd_of_samples_approaches_the_analytic_value():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    d1, d2 = np.array([1.0, 0.25, 2.0]), np.array([0.5, 1.0, 2.0])
    x = mu1 + rng.standard_normal((200000, 3)) * np.sqrt(d1)
    y = mu2 + rng.standard_normal((200000, 3)) * np.sqrt(d2)
    assert ev.frechet_distance_embeddings(x, y) == pytest.approx(_closed_form_commuting(mu1, d1, mu2, d2), abs=0.02)


def test_fd_identity_symmetry_and_rank_deficient():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(30, 8)) * 2 + 1  # 20 < 128-like: singular-ish ok
    assert ev.frechet_distance_embeddings(x, x) == pytest.approx(0.0, abs=1e-9)
    assert ev.frechet_distance_embeddings(x, y) == pytest.approx(ev.frechet_distance_embeddings(y, x), rel=1e-9)
    few = rng.normal(size=(4, 8))  # rank 3 covariance in 8 dimensions
    assert math.isfinite(ev.frechet_distance_embeddings(few, y))
    assert ev.frechet_distance_embeddings(few, few) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 5), seed=st.integers(0, 2 ** 31 - 1))
def test_fd_matches_scipy_sqrtm(d, seed):
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-7, abs=1e-8)


def test_fd_input_checks():
    with pytest.raises(ValueError, match="sigma1"):
        ev.frechet_distance([0, 0], [[1, 0.5], [0, 1]], [0, 0], np.eye(2))
    with pytest.raises(ValueError, match="differ"):
        ev.frechet_distance([0, 0], np.eye(2), [0], np.eye(1))
    with pytest.raises(ValueError, match="M >= 2"):
        ev.fit_gaussian(np.zeros((1, 3)))


# --------------------------------------------------------------------------- CLI and errors

def test_cli_fit_score_table_round_trip(tmp_path, tiny, capsys):
    _, train, _, test, _ = tiny
    clf = tmp_path / "clf"
    assert ev.main(["fit", "--train_dir", str(train), "--valid_dir", str(test), "--out_dir", str(clf),
                    "--epochs", "1", "--fields", "drums,mode", "--channels", "4,4,8,8", "--embed_dim", "8",
                    "--n_mels", "32", "--crop_seconds", "1"]) == 0
    cfg = json.loads((clf / "config.json").read_text())
    assert set(cfg["labels"]) == {"drums", "mode"} and cfg["labels"]["drums"] == [False, True]
    # a "generated" set: half of the test clips under their caption utt ids
    gen = tmp_path / "gen.scp"
    gen.write_text("".join(f"{u} {p}\n" for u, p in list(ev.read_scp(test / "wav.scp").items())[::2]))
    for name, scp in (("real", test / "wav.scp"), ("gen", gen)):
        assert ev.main(["score", "--classifier", str(clf), "--wav_scp", str(scp), "--fields",
                        str(test / "fields.jsonl"), "--reference_wav_scp", str(test / "wav.scp"),
                        "--name", name, "--out_dir", str(tmp_path / name)]) == 0
    res = json.loads((tmp_path / "gen" / "result.json").read_text())
    assert res["n_clips"] == 24 and res["n_reference"] == 48 and res["frechet_distance"] > 0
    rows = [json.loads(line) for line in (tmp_path / "gen" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and set(rows[0]) == {"utt", "predicted", "caption", "correct"}
    assert res["accuracy"]["mode"] == pytest.approx(np.mean([r["correct"]["mode"] for r in rows]))
    out = tmp_path / "RESULTS_table.md"
    assert ev.main(["table", "--results", str(tmp_path / "real" / "result.json"), str(tmp_path / "gen" / "result.json"),
                    "--names", "real,magnet", "--relative_to", "real", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "| system | clips | drums | mode | mean | rel. to real | FD |"
    assert lines[2].startswith("| real | 48 |") and lines[2].endswith("| 100.0 | 0.000 |")
    assert lines[3].startswith("| magnet | 24 |")


def _error(capsys, argv) -> str:
    assert ev.main(argv) == 2
    return capsys.readouterr().err


def test_errors_name_the_file_and_problem(tmp_path, tiny, capsys):
    root, _, _, test, _ = tiny
    clf = root / "clf"
    fields = str(test / "fields.jsonl")
    score = ["score", "--classifier", str(clf), "--fields", fields, "--out_dir", str(tmp_path / "o")]
    wav = next(iter(ev.read_scp(test / "wav.scp").values()))

    scp = tmp_path / "unknown.scp"
    scp.write_text(f"not_a_caption {wav}\n")
    err = _error(capsys, score + ["--wav_scp", str(scp)])
    assert str(scp) in err and "not_a_caption" in err and "fields.jsonl" in err

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    scp.write_text(f"test_000 {empty}\n")
    err = _error(capsys, score + ["--wav_scp", str(scp)])
    assert str(scp) in err and "empty" in err

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    scp.write_text(f"test_000 {bad}\n")
    err = _error(capsys, score + ["--wav_scp", str(scp)])
    assert str(scp) in err and str(bad) in err and "cannot read" in err

    scp.write_text(f"test_000 {tmp_path / 'missing.wav'}\n")
    assert "does not exist" in _error(capsys, score + ["--wav_scp", str(scp)])

    scp.write_text(f"test_000 {wav}\n")
    err = _error(capsys, score + ["--wav_scp", str(scp), "--field_names", "drums,accomp_family"])
    assert "accomp_family" in err and "not predicted by the classifier" in err

    no_cfg = tmp_path / "no_cfg"
    no_cfg.mkdir()
    err = _error(capsys, ["score", "--classifier", str(no_cfg), "--fields", fields, "--wav_scp", str(scp),
                          "--out_dir", str(tmp_path / "o")])
    assert str(no_cfg) in err and "no config.json" in err

    broken = tmp_path / "fields.jsonl"
    broken.write_text('{"utt": "test_000", "drums": true}\n{oops\n')
    err = _error(capsys, ["score", "--classifier", str(clf), "--fields", str(broken), "--wav_scp", str(scp),
                          "--out_dir", str(tmp_path / "o")])
    assert f"{broken}:2" in err and "not valid JSON" in err

    broken.write_text('{"utt": "test_000", "drums": true}\n')
    err = _error(capsys, ["score", "--classifier", str(clf), "--fields", str(broken), "--wav_scp", str(scp),
                          "--out_dir", str(tmp_path / "o")])
    assert str(broken) in err and "test_000" in err and "has no field" in err


def test_max_seconds_judges_the_first_seconds_of_every_clip(tmp_path, tiny):
    root, _, dev, _, _ = tiny
    clf = ev.FieldClassifier.from_dir(root / "clf")
    wavs = dict(list(ev.read_scp(dev / "wav.scp").items())[:3])
    full = ev.load_clips(wavs, clf.feature, "wav.scp")
    cut = ev.load_clips(wavs, clf.feature, "wav.scp", max_seconds=1.0)
    hop = clf.feature.hop_length
    assert all(c.shape[1] == SR // hop + 1 < f.shape[1] for c, f in zip(cut, full))
    # the judged prefix is what a clip cut to 1 s on disk gives
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    for utt, path in wavs.items():
        audio, sr = sf.read(path)
        sf.write(cut_dir / f"{utt}.wav", audio[:SR], sr)
    on_disk = ev.load_clips({u: str(cut_dir / f"{u}.wav") for u in wavs}, clf.feature, "wav.scp")
    for a, b in zip(cut, on_disk):
        assert torch.allclose(a, b, atol=1e-4)
