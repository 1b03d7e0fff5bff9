"""asr.data.synth_en: a tiny corpus is valid, held-out, deterministic, resumable, idempotent."""

import filecmp
import itertools
import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from asr.data import synth_en as se
from nar.base.kaldi import read_data_dir, read_kaldi_map, validate_data_dir
from asr.data.text import MissingToolError, Sentence, filter_sentences

TOOLS = ("espeak-ng", "flite", "festival", "sox")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="espeak-ng, flite, festival or sox not installed")
TINY = dict(train_hours=0.005, dev_utts=3, test_utts=3, seed=0)


def _sentences(n=60):
    adjs = "quiet brave gentle clever hungry sleepy proud lucky".split()
    nouns = "farmer sailor river garden teacher kitten castle window".split()
    verbs = "watched painted followed carried remembered visited".split()
    raw = [("fake", f"The {a} {n} {v} the old {m} today.")
           for a, n, v, m in itertools.product(adjs, nouns, verbs, nouns) if n != m]
    return filter_sentences(raw[::37][:n])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "a")
    stats = se.build_corpus(out, nj=2, sentences=_sentences(), **TINY)
    return out, stats


def _wavs(out):
    found = {}
    for root, _, files in os.walk(os.path.join(out, "wav")):
        for name in files:
            found[os.path.relpath(os.path.join(root, name), out)] = os.path.join(root, name)
    return found


def _same_corpus(a, b):
    for split in se.SPLITS:
        for name in ("text", "utt2spk", "spk2utt", "utt2dur"):
            assert filecmp.cmp(os.path.join(a, split, name), os.path.join(b, split, name),
                               shallow=False), (split, name)
        scp_a = {k: os.path.relpath(v, a) for k, v in read_kaldi_map(f"{a}/{split}/wav.scp").items()}
        scp_b = {k: os.path.relpath(v, b) for k, v in read_kaldi_map(f"{b}/{split}/wav.scp").items()}
        assert scp_a == scp_b
    wa, wb = _wavs(a), _wavs(b)
    assert sorted(wa) == sorted(wb) and wa
    for rel in wa:
        assert filecmp.cmp(wa[rel], wb[rel], shallow=False), rel


@needs_tools
def test_tiny_corpus_valid_with_every_engine(corpus):
    out, stats = corpus
    for split in se.SPLITS:
        validate_data_dir(os.path.join(out, split))
    assert set(stats["splits"]["train"]) == {"all", "espeak", "flite", "festival"}
    assert set(stats["splits"]["test"]) == {"all", "espeak", "flite", "festival"}
    for path in _wavs(out).values():
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames > 1600
    assert not [p for p in _wavs(out) if not p.endswith(".wav")]


@needs_tools
def test_splits_disjoint_in_voices_and_sentences(corpus):
    out, _ = corpus
    d = {s: read_data_dir(os.path.join(out, s)) for s in se.SPLITS}
    train_spk = set(d["train"].spk2utt) | set(d["dev"].spk2utt)
    assert not set(d["test"].spk2utt) & train_spk
    train_v, test_v = se.default_voices()
    assert set(d["test"].spk2utt) <= {v.speaker for v in test_v}
    texts = {s: set(d[s].text.values()) for s in se.SPLITS}
    for a, b in itertools.combinations(se.SPLITS, 2):
        assert not texts[a] & texts[b], (a, b)


@needs_tools
def test_deterministic_whatever_nj(corpus, tmp_path):
    out, _ = corpus
    other = str(tmp_path / "b")
    se.build_corpus(other, nj=1, sentences=_sentences(), **TINY)
    _same_corpus(out, other)


@needs_tools
def test_idempotent_and_options_checked(corpus):
    out, stats = corpus
    mtimes = {p: os.stat(p).st_mtime_ns for p in _wavs(out).values()}
    assert se.build_corpus(out, nj=2, sentences=_sentences(), **TINY) == stats
    assert mtimes == {p: os.stat(p).st_mtime_ns for p in _wavs(out).values()}
    with pytest.raises(ValueError, match=r"built with other options \(seed\)"):
        se.build_corpus(out, nj=2, sentences=_sentences(), **{**TINY, "seed": 1})


@needs_tools
def test_resume_after_deleting_wavs_and_sentinels(corpus, tmp_path):
    out, _ = corpus
    copy = str(tmp_path / "c")
    se.build_corpus(copy, nj=2, sentences=_sentences(), **TINY)
    train = read_kaldi_map(os.path.join(copy, "train", "wav.scp"))
    victims = sorted(train)[:2]
    for utt in victims:
        os.remove(train[utt])
        with open(os.path.join(os.path.dirname(train[utt]), f".{utt}.wav.tmp"), "wb") as f:
            f.write(b"RIFF truncated")  # what a kill during sox leaves behind
    os.remove(os.path.join(copy, ".state", "train.done"))
    for name in os.listdir(os.path.join(copy, ".state", "train")):
        os.remove(os.path.join(copy, ".state", "train", name))
    se.build_corpus(copy, nj=2, sentences=_sentences(), **TINY)
    _same_corpus(out, copy)
    assert all(os.path.exists(train[utt]) for utt in victims)


@needs_tools
def test_crash_midway_then_rerun_finishes(corpus, tmp_path, monkeypatch):
    out, _ = corpus
    crashed = str(tmp_path / "d")
    real_chunk, calls = se.synthesize_chunk, []

    def crash_after_one(chunk, out_dir):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        return real_chunk(chunk, out_dir)

    monkeypatch.setattr(se, "synthesize_chunk", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        se.build_corpus(crashed, nj=1, sentences=_sentences(), **TINY)
    done = _wavs(crashed)
    assert done and not os.path.exists(os.path.join(crashed, ".state", "test.done"))
    reference = _wavs(out)
    assert all(filecmp.cmp(done[r], reference[r], shallow=False) for r in done)
    monkeypatch.setattr(se, "synthesize_chunk", real_chunk)
    se.build_corpus(crashed, nj=1, sentences=_sentences(), **TINY)
    _same_corpus(out, crashed)


def test_plan_shares_heldout_and_prefix_stable():
    sents = [Sentence(f"sentence number {w} is here", f"sentence number {w} is here.", "x")
             for w in map(_word, range(3000))]
    train_v, test_v = se.default_voices()
    plan = se.plan_corpus(sents, train_v, test_v, 0.5, 50, 60, seed=3)
    assert plan == se.plan_corpus(sents, train_v, test_v, 0.5, 50, 60, seed=3)
    secs = {e: sum(u.est_dur for u in plan["train"] if u.engine == e) for e in se.ENGINES}
    total = sum(secs.values())
    assert 1800 <= total < 1800 + 10
    for engine, share in se.DEFAULT_SHARES.items():
        assert abs(secs[engine] / total - share) < 0.01
    assert {u.speaker for u in plan["test"]} <= {v.speaker for v in test_v}
    assert {u.speaker for u in plan["dev"]} <= {v.speaker for v in train_v}
    assert len({u.text for s in plan.values() for u in s}) == sum(map(len, plan.values()))
    bigger = se.plan_corpus(sents, train_v, test_v, 1.0, 50, 60, seed=3)
    assert bigger["train"][:0] == [] and set(plan["train"]) <= set(bigger["train"])
    assert bigger["test"] == plan["test"] and bigger["dev"] == plan["dev"]
    other_seed = se.plan_corpus(sents, train_v, test_v, 0.5, 50, 60, seed=4)
    assert other_seed["test"] != plan["test"]
    jobs = se.assign_jobs(plan["train"], 3)
    assert sorted(u.utt_id for j in jobs for u in j) == sorted(u.utt_id for u in plan["train"])


def _word(i):
    letters = "abcdefghij"
    return "w" + "".join(letters[int(c)] for c in str(i))


def test_voice_catalogue_heldout_combos():
    train_v, test_v = se.default_voices()
    assert not {v.spec for v in train_v} & {v.spec for v in test_v}
    held_espeak = [v.name.split("+") for v in test_v if v.engine == "espeak"]
    train_accents = {v.name.split("+")[0] for v in train_v if v.engine == "espeak"}
    train_variants = {v.name.split("+")[1] for v in train_v if v.engine == "espeak"}
    assert held_espeak and all(a in train_accents and b in train_variants for a, b in held_espeak)
    assert {v.spec for v in test_v if v.engine != "espeak"} == {"flite:rms", "festival:ked_diphone"}
    speakers = [v.speaker for v in train_v + test_v]
    assert len(set(speakers)) == len(speakers)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") for s in speakers)


def test_bad_options():
    train_v, test_v = se.default_voices()
    with pytest.raises(ValueError, match=r"must be '<engine>:<name>\[@<warp>\]'"):
        se.parse_voice("mbrola:us1")
    with pytest.raises(ValueError, match="held-out test voices also in the training voices"):
        se.plan_corpus(_sentences(), train_v, train_v[:1], 0.001, 1, 1, seed=0)
    with pytest.raises(ValueError, match="needs more sentences"):
        se.plan_corpus(_sentences(), train_v, test_v, 10.0, 1, 1, seed=0)


def test_missing_program_names_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match=r"'sox' not found: install the Debian package 'sox'"):
        se.check_tools([se.parse_voice("espeak:en-us+m1")])


@needs_tools
def test_unknown_voices_rejected():
    with pytest.raises(ValueError, match="espeak variant 'nosuch'"):
        se.check_tools([se.parse_voice("espeak:en-us+nosuch")])
    with pytest.raises(ValueError, match="flite voice 'flite:nosuch' unknown"):
        se.check_tools([se.parse_voice("flite:nosuch")])
    with pytest.raises(ValueError, match="festival voice 'festival:nosuch' unknown"):
        se.check_tools([se.parse_voice("festival:nosuch")])


@needs_tools
def test_silent_and_empty_output_dropped(tmp_path, monkeypatch, caplog):
    # independent of what other tests in this process did to logging (levels, disabled loggers)
    caplog.set_level(logging.WARNING, logger=se.__name__)
    monkeypatch.setattr(logging.getLogger(se.__name__), "disabled", False)
    out = str(tmp_path / "e")
    utt = se._make_utt(0, se.parse_voice("espeak:en-us+m1"), 7, _sentences()[0])
    raw = str(tmp_path / "raw.wav")
    sf.write(raw, np.zeros(1600), 16000)
    assert se._finish(utt, raw, out) == "silent audio"
    sf.write(raw, np.zeros(0), 16000)
    assert se._finish(utt, raw, out) == "empty audio"
    monkeypatch.setattr(se, "_engine_command",
                        lambda u, r: ["sox", "-n", "-r", "16000", r, "trim", "0", "0.5"])
    assert se.synthesize_chunk([utt], out) == {utt.utt_id: "silent audio"}
    assert "dropped" in caplog.text and not os.path.exists(se.wav_path(out, utt))


@needs_tools
def test_cli(tmp_path, capsys):
    assert se.main(["--list_voices"]) == 0
    assert "flite:rms\tflite_rms" in capsys.readouterr().out
    out = str(tmp_path / "cli")
    assert se.main(["--out", out, "--train_hours", "0.002", "--dev_utts", "1", "--test_utts",
                    "1", "--nj", "1", "--text_sources", "fortunes", "--voices",
                    "espeak:en-us+m1", "flite:kal16", "--test_voices", "espeak:en-gb+f2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test"]["espeak"]["speakers"] == 1
    with open(os.path.join(out, "meta", "train.tsv")) as f:
        header = f.readline().split("\t")
    assert header[:3] == ["utt_id", "speaker", "engine"]
    assert se.main(["--out", out, "--seed", "5", "--text_sources", "fortunes"]) == 1
    # the same corpus again with the unseen-voice dev split: added, printed, the rest untouched
    assert se.main(["--out", out, "--train_hours", "0.002", "--dev_utts", "1", "--test_utts",
                    "1", "--nj", "1", "--text_sources", "fortunes", "--voices",
                    "espeak:en-us+m1", "flite:kal16", "--test_voices", "espeak:en-gb+f2",
                    "--unseen_dev_warps", "1.3"]) == 0
    assert json.loads(capsys.readouterr().out)[se.UNSEEN_DEV]["flite"]["speakers"] == 1
    assert set(read_kaldi_map(os.path.join(out, se.UNSEEN_DEV, "utt2spk")).values()) == {"flite_kal16_w130"}


def test_formant_warped_voice_variants_parse_and_stay_held_out():
    v = se.parse_voice("flite:slt@0.88")
    assert (v.engine, v.name, v.warp) == ("flite", "slt", 0.88)
    assert v.spec == "flite:slt@0.88" and se.parse_voice(v.spec) == v
    assert v.speaker == "flite_slt_w088" and se.parse_voice("flite:slt").speaker == "flite_slt"
    for bad, match in (("flite:slt@x", "not a number"), ("flite:slt@3", "outside")):
        with pytest.raises(ValueError, match=match):
            se.parse_voice(bad)
    train_v, test_v = se.default_voices()
    more = se.warp_variants(train_v, [0.88, 1.0, 1.12])
    added = more[len(train_v):]
    base = [x for x in train_v if x.engine in se.WARP_ENGINES]
    assert len(added) == 2 * len(base) == 10  # 3 flite + 2 festival voices, 1.0 adds nothing
    assert {(x.engine, x.name) for x in added} == {(x.engine, x.name) for x in base}
    assert se.warp_variants(more, [0.88]) == more  # no duplicates
    assert len({x.speaker for x in more + test_v}) == len(more) + len(test_v)
    with pytest.raises(ValueError, match="outside"):
        se.warp_variants(train_v, [0.5])
    # a warped copy of a held-out voice would leak it into training
    with pytest.raises(ValueError, match="formant-warped variants included"):
        se.plan_corpus(_sentences(), train_v + [se.parse_voice("flite:rms@0.9")], test_v,
                       0.001, 1, 1, seed=0)
    sents = [Sentence(f"sentence number {w} is here", f"sentence number {w} is here.", "x")
             for w in map(_word, range(3000))]
    plan = se.plan_corpus(sents, more, test_v, 0.5, 50, 60, seed=3)
    warped = [u for u in plan["train"] if u.warp != 1.0]
    assert warped and all(u.engine in se.WARP_ENGINES and u.speaker.endswith(
        f"_w{round(u.warp * 100):03d}") for u in warped)
    secs = {e: sum(u.est_dur for u in plan["train"] if u.engine == e) for e in se.ENGINES}
    assert abs(secs["flite"] / sum(secs.values()) - se.DEFAULT_SHARES["flite"]) < 0.01  # shares kept


@needs_tools
def test_formant_warp_applied_to_the_engine_output(tmp_path):
    """The variant is the same utterance (length, f0) with its spectral envelope moved down."""
    import librosa

    sent = _sentences()[0]
    utt = se._make_utt(0, se.parse_voice("flite:slt@0.85"), 3, sent)
    plain = se.Utterance(**{**utt.__dict__, "warp": 1.0})
    audio = {}
    for u, sub in ((utt, "w"), (plain, "p")):
        raw = str(tmp_path / f"{sub}.wav")
        se._run(se._engine_command(u, raw))
        assert se._finish(u, raw, str(tmp_path / sub)) is None
        audio[sub], sr = sf.read(se.wav_path(str(tmp_path / sub), u), dtype="float32")
    assert audio["w"].shape == audio["p"].shape and sr == se.SAMPLE_RATE
    f0 = {k: np.nanmedian(librosa.pyin(a, fmin=80, fmax=400, sr=sr)[0]) for k, a in audio.items()}
    assert f0["w"] == pytest.approx(f0["p"], rel=0.03)
    centroid = {k: float(np.median(librosa.feature.spectral_centroid(y=a, sr=sr)))
                for k, a in audio.items()}
    assert 0.8 < centroid["w"] / centroid["p"] < 0.95


@needs_tools
def test_formant_warps_recorded_in_the_corpus_config(tmp_path):
    out = str(tmp_path / "w")
    opts = dict(TINY, voices=["espeak:en-us+m1", "flite:kal16"], test_voices=["espeak:en-gb+f2"])
    se.build_corpus(out, nj=1, sentences=_sentences(), formant_warps=[0.9], **opts)
    speakers = set(read_kaldi_map(os.path.join(out, "train", "utt2spk")).values()) | set(
        read_kaldi_map(os.path.join(out, "dev", "utt2spk")).values())
    assert "flite_kal16_w090" in speakers
    with pytest.raises(ValueError, match="formant_warps"):
        se.build_corpus(out, nj=1, sentences=_sentences(), **opts)


def test_plan_unseen_dev_has_new_vocal_tracts_and_dev_sentences():
    train = [se.parse_voice(v) for v in ("espeak:en-us+m1", "flite:kal16", "flite:kal16@0.9",
                                         "festival:kal_diphone", "festival:kal_diphone@0.9")]
    dev = [se._make_utt(0, train[i % len(train)], 100 + i, s) for i, s in enumerate(_sentences(12))]
    utts = se.plan_unseen_dev(dev, train, [0.7, 1.4], seed=0)
    # every dev sentence once, under its own sentence index, by a variant training never had
    assert sorted((u.utt_id.rsplit("-", 1)[1], u.text) for u in utts) == sorted(
        (u.utt_id.rsplit("-", 1)[1], u.text) for u in dev)
    voices = {(u.engine, u.voice, u.warp) for u in utts}
    assert voices == {(e, n, w) for e, n in (("flite", "kal16"), ("festival", "kal_diphone")) for w in (0.7, 1.4)}
    trained = {v.speaker for v in train}
    assert not trained & {u.speaker for u in utts}
    assert all(u.speaker.endswith(("_w070", "_w140")) for u in utts)
    # 12 sentences over 4 voices round-robin: 3 each
    assert sorted(sum(u.speaker == s for u in utts) for s in {u.speaker for u in utts}) == [3] * 4
    assert se.plan_unseen_dev(dev, train, [0.7, 1.4], seed=0) == utts  # deterministic
    with pytest.raises(ValueError, match="warp of the training voices"):
        se.plan_unseen_dev(dev, train, [0.9], seed=0)
    with pytest.raises(ValueError, match="warp of the training voices"):
        se.plan_unseen_dev(dev, train, [1.0], seed=0)
    with pytest.raises(ValueError, match="outside"):
        se.plan_unseen_dev(dev, train, [0.5], seed=0)
    with pytest.raises(ValueError, match="no unwarped"):
        se.plan_unseen_dev(dev, train[:1], [0.7], seed=0)


@needs_tools
def test_build_unseen_dev_on_a_finished_corpus(tmp_path):
    out = str(tmp_path / "u")
    opts = dict(TINY, voices=["espeak:en-us+m1", "flite:kal16"], test_voices=["espeak:en-gb+f2"])
    with pytest.raises(ValueError, match="not complete"):
        se.build_unseen_dev(out, [0.75])
    se.build_corpus(out, nj=1, sentences=_sentences(), **opts)
    config = open(os.path.join(out, ".state", "config.json")).read()
    stats = se.build_unseen_dev(out, [0.75], nj=1)
    split = os.path.join(out, se.UNSEEN_DEV)
    validate_data_dir(split)
    dev_text = read_kaldi_map(os.path.join(out, "dev", "text"))
    text = read_kaldi_map(os.path.join(split, "text"))
    assert sorted(text.values()) == sorted(dev_text.values()) and stats["all"]["utts"] == len(dev_text)
    assert set(read_kaldi_map(os.path.join(split, "utt2spk")).values()) == {"flite_kal16_w075"}
    assert open(os.path.join(out, ".state", "config.json")).read() == config  # the corpus is unchanged
    # idempotent; other factors are refused; the main build still sees a complete corpus
    mtimes = {p: os.path.getmtime(p) for p in _wavs(out).values()}
    assert se.build_unseen_dev(out, [0.75], nj=1) == stats
    assert {p: os.path.getmtime(p) for p in _wavs(out).values()} == mtimes
    with pytest.raises(ValueError, match="built with warps"):
        se.build_unseen_dev(out, [0.7])
    se.build_corpus(out, nj=1, sentences=_sentences(), **opts)
