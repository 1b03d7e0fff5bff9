"""tts.evaluate: WER arithmetic, MOS/SIM plumbing, input errors, the CLI and the table.

Judges are fakes where the point is the plumbing; the real ones (pocketsphinx, DistillMOS,
Resemblyzer) each run one tiny case when installed.
"""

import json
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from tts import evaluate as ev
from tts.evaluate import Judges, evaluate, evaluate_systems, format_table, main

SR = ev.SAMPLE_RATE


def voice(f0: float, formants, seconds: float = 2.0) -> np.ndarray:
    """A crude vowel-like signal: harmonics of ``f0`` (with vibrato) shaped by resonances, in
    4 Hz syllables."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / SR
    src = sum(np.sin(k * phase) / k for k in range(1, 30))
    freqs = np.fft.rfftfreq(len(src), 1 / SR)
    gain = sum(1 / (1 + ((freqs - fm) / bw) ** 2) for fm, bw in formants)
    y = np.fft.irfft(np.fft.rfft(src) * gain, len(src)) * 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


VOICE_A = {"f0": 110, "formants": [(700, 80), (1200, 100), (2600, 150)]}
VOICE_B = {"f0": 230, "formants": [(400, 60), (2000, 100), (3000, 150)]}


def write(path, wav, sr=SR):
    sf.write(str(path), wav, sr)
    return str(path)


def tone(seconds=0.5, freq=440.0, amp=0.3, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def one_thread():
    """Real judges on one torch thread: on a shared 2-core machine two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_loading(monkeypatch):
    """Fail if any judge model is loaded (input errors must come first)."""
    def fail(judges):
        raise AssertionError("a judge was loaded before the inputs were checked")
    for name in ev.JUDGES:
        monkeypatch.setitem(ev.LOADERS, name, fail)


@pytest.fixture
def two_utts(tmp_path):
    wavs = {"u1": write(tmp_path / "u1.wav", tone(1.0)), "u2": write(tmp_path / "u2.wav", tone(0.5, 220))}
    texts = {"u1": "The cat sat on the mat.", "u2": "hello world", "u3": "not synthesised"}
    return wavs, texts


class FakeRecognizer:
    def __init__(self, outputs):
        self.outputs, self.lengths = outputs, []

    def __call__(self, wavs):
        self.lengths = [w.numel() for w in wavs]
        return list(self.outputs)


# --------------------------------------------------------------------------- WER

def test_wer_against_hand_computed_counts(two_utts, tmp_path):
    wavs, texts = two_utts
    wavs["u3"] = write(tmp_path / "u3.wav", tone(1.0, sr=22050), sr=22050)  # resampled to 16 kHz
    # sorted utts u1, u2, u3; refs 6 + 2 + 2 words
    fake = FakeRecognizer(["the cat sat on mat",        # 1 deletion
                           "Hello, World! again",      # 1 insertion (punctuation normalised away)
                           ""])                         # 2 deletions
    res = evaluate(wavs, texts, judges=Judges(("pocketsphinx",), models={"pocketsphinx": fake}), progress=False)
    s = res.summary
    assert s["n"] == 3 and s["ref_words"] == 10 and s["errors_pocketsphinx"] == 4
    assert s["wer_pocketsphinx"] == pytest.approx(40.0)  # corpus WER: 4 / 10, not the mean of rows
    assert [r["utt"] for r in res.rows] == ["u1", "u2", "u3"]
    assert [r["errors_pocketsphinx"] for r in res.rows] == [1, 1, 2]
    assert [r["wer_pocketsphinx"] for r in res.rows] == pytest.approx([100 / 6, 50.0, 100.0])
    assert res.rows[1]["hyp_pocketsphinx"] == "hello world again"
    assert fake.lengths == [SR, SR // 2, SR]
    assert s["seconds"] == pytest.approx(2.5)


def test_asr_judge_uses_the_same_scoring(two_utts):
    wavs, texts = two_utts
    fake = FakeRecognizer(["the cat sat on the mat", "yellow world"])
    s = evaluate(wavs, texts, judges=Judges(("asr",), models={"asr": fake}), progress=False).summary
    assert s["wer_asr"] == pytest.approx(100 / 8) and "wer_pocketsphinx" not in s
    assert s["cer_asr"] == pytest.approx(100 * 2 / 33)  # hello -> yellow: h->y, +w; 22 + 11 characters


# --------------------------------------------------------------------------- MOS / SIM plumbing

def test_mos_judges_and_dnsmos_skipped_without_speechmos(two_utts, monkeypatch, caplog):
    wavs, texts = two_utts
    monkeypatch.setitem(sys.modules, "speechmos", None)  # "import speechmos" raises ImportError
    scores = iter([3.0, 4.0])
    judges = Judges(("distillmos", "dnsmos"), models={"distillmos": lambda w: {"mos_distillmos": next(scores)}})
    with caplog.at_level("INFO", logger="tts.evaluate"):
        res = evaluate(wavs, texts, judges=judges, progress=False)
    assert res.summary["mos_distillmos"] == pytest.approx(3.5)
    assert res.summary["skipped_judges"] == ["dnsmos"] and "mos_dnsmos" not in res.summary
    assert [r["mos_distillmos"] for r in res.rows] == [3.0, 4.0]
    assert any("dnsmos" in r.message and "skipped" in r.message for r in caplog.records)


def test_dnsmos_through_speechmos_api(two_utts, monkeypatch):
    wavs, texts = two_utts
    seen = []

    def run(audio, sr):
        seen.append((audio.dtype, sr, float(np.abs(audio).max())))
        return {"ovrl_mos": 2.5, "sig_mos": 3.0, "bak_mos": 3.5, "p808_mos": 3.2}

    monkeypatch.setitem(sys.modules, "speechmos", types.SimpleNamespace(dnsmos=types.SimpleNamespace(run=run)))
    s = evaluate(wavs, texts, judges=("dnsmos",), progress=False).summary
    assert s["mos_dnsmos"] == 2.5 and s["mos_dnsmos_p808"] == 3.2 and s["skipped_judges"] == []
    assert seen == [(np.float32, SR, pytest.approx(0.3, abs=1e-3))] * 2


def test_sim_plumbing_with_a_fake_encoder(tmp_path, caplog):
    calls = []

    def encode(wav):  # loud -> (1, 0), quiet -> (1, 1)
        calls.append(wav.numel())
        return np.array([1.0, 0.0]) if wav.abs().max() > 0.2 else np.array([1.0, 1.0])

    wavs = {"a": write(tmp_path / "a.wav", tone(0.5, amp=0.1)), "b": write(tmp_path / "b.wav", tone(0.3)),
            "c": write(tmp_path / "c.wav", np.zeros(SR // 4, np.float32))}
    prompt = write(tmp_path / "p.wav", tone(0.7, amp=0.5))
    texts = {k: "some words" for k in wavs}
    judges = Judges(("sim",), models={"sim": encode})
    with caplog.at_level("WARNING", logger="tts.evaluate"):
        res = evaluate(wavs, texts, {k: prompt for k in wavs}, judges, progress=False)
    assert [r["sim"] for r in res.rows] == pytest.approx([2 ** -0.5, 1.0, 0.0])
    assert res.summary["sim"] == pytest.approx((2 ** -0.5 + 1.0) / 3)
    assert calls.count(int(0.7 * SR)) == 1  # the shared prompt is embedded once
    assert any("'c'" in r.message and "silent" in r.message for r in caplog.records)


def test_sim_with_resemblyzer(tmp_path, one_thread):
    pytest.importorskip("resemblyzer")
    import torchaudio.functional as taf

    a, b = voice(**VOICE_A), voice(**VOICE_B)
    a22 = taf.resample(torch.from_numpy(a), SR, 22050).numpy()
    wavs = {"same": write(tmp_path / "a.wav", a), "other": write(tmp_path / "b.wav", b)}
    prompt = write(tmp_path / "a22.wav", a22, 22050)  # both compared with voice A, read at 22.05 kHz
    prompts = {"same": prompt, "other": prompt}
    res = evaluate(wavs, {"same": "a", "other": "b"}, prompts, judges=("sim",), progress=False)
    sim = {r["utt"]: r["sim"] for r in res.rows}
    assert sim["same"] == pytest.approx(1.0, abs=0.01)
    assert sim["other"] < sim["same"] - 0.2


# --------------------------------------------------------------------------- input errors

def test_unknown_judge_and_asr_without_model_dir(two_utts, no_loading, capsys):
    wavs, texts = two_utts
    with pytest.raises(ValueError, match=r"unknown judge\(s\) \['whisper'\].*pocketsphinx, asr"):
        evaluate(wavs, texts, judges=("pocketsphinx", "whisper"))
    with pytest.raises(ValueError, match="judge 'asr' needs an ASR model dir"):
        evaluate(wavs, texts, judges="pocketsphinx,asr")
    with pytest.raises(FileNotFoundError, match="no_such_dir: ASR model dir"):
        Judges(("asr",), asr_model_dir="no_such_dir")
    assert main(["--wav_scp", "w.scp", "--text", "t", "--out_dir", "o", "--judges", "asr"]) == 2
    assert "--asr_model_dir" in capsys.readouterr().err


def test_missing_wav_file(two_utts, tmp_path, no_loading):
    wavs, texts = two_utts
    wavs["u2"] = str(tmp_path / "gone.wav")
    with pytest.raises(FileNotFoundError, match=r"gone\.wav: wav of utterance 'u2' not found"):
        evaluate(wavs, texts, judges=("pocketsphinx",))


def test_stereo_audio(two_utts, tmp_path, no_loading):
    wavs, texts = two_utts
    sf.write(str(tmp_path / "st.wav"), np.stack([tone(), tone()], axis=1), SR)
    wavs["u1"] = str(tmp_path / "st.wav")
    with pytest.raises(ValueError, match=r"st\.wav: wav of utterance 'u1' has 2 channels; mono"):
        evaluate(wavs, texts, judges=("distillmos",))
    with pytest.raises(ValueError, match=r"st\.wav: 2 channels; mono"):
        ev.load_audio(wavs["u1"])


def test_prompt_missing_for_sim(two_utts, tmp_path, no_loading):
    wavs, texts = two_utts
    with pytest.raises(ValueError, match="judge 'sim' needs prompts"):
        evaluate(wavs, texts, None, judges=("sim",))
    prompts = {"u1": wavs["u1"]}
    with pytest.raises(ValueError, match=r"utterance 'u2' has no prompt in p\.scp"):
        evaluate(wavs, texts, prompts, judges=("sim",), prompt_source="p.scp")
    prompts["u2"] = str(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError, match=r"nope\.wav: prompt wav not found"):
        evaluate(wavs, texts, prompts, judges=("sim",))
    prompts["u2"] = write(tmp_path / "quiet.wav", np.zeros(800, np.float32))
    with pytest.raises(ValueError, match=r"quiet\.wav: the prompt of 'u2' is silent"):
        evaluate(wavs, texts, prompts, judges=("sim",), progress=False)
    evaluate(wavs, texts, None, judges=Judges(("pocketsphinx",), models={"pocketsphinx": FakeRecognizer(["", ""])}),
             progress=False)  # no prompts needed without sim
    texts["u1"] = "?!"
    with pytest.raises(ValueError, match=r"t\.txt: the text of 'u1' \('\?!'\) is empty after normalisation"):
        evaluate(wavs, texts, judges=("distillmos",), text_source="t.txt")


def test_cli_names_the_text_file_of_an_utterance_without_text(tmp_path, no_loading, capsys):
    wav = write(tmp_path / "x.wav", tone())
    (tmp_path / "wav.scp").write_text(f"spk-1 {wav}\nspk-2 {wav}\n")
    (tmp_path / "text").write_text("spk-1 hello there\n")
    rc = main(["--wav_scp", str(tmp_path / "wav.scp"), "--text", str(tmp_path / "text"),
               "--judges", "pocketsphinx", "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"utterance 'spk-2' ({wav}) has no text in {tmp_path / 'text'}" in err


# --------------------------------------------------------------------------- CLI and table

def test_cli_scores_writes_and_tabulates(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ev.LOADERS, "pocketsphinx", lambda j: FakeRecognizer(["hello world", "good bye"]))
    loads = []
    monkeypatch.setitem(ev.LOADERS, "distillmos", lambda j: loads.append(1) or (lambda w: {"mos_distillmos": 3.25}))
    w1, w2 = write(tmp_path / "1.wav", tone()), write(tmp_path / "2.wav", tone(0.25))
    (tmp_path / "wav.scp").write_text(f"s-1 {w1}\ns-2 {w2}\n")
    (tmp_path / "text").write_text("s-1 hello world\ns-2 good night\n")
    out = tmp_path / "maskgct"
    rc = main(["--wav_scp", str(tmp_path / "wav.scp"), "--text", str(tmp_path / "text"),
               "--judges", "pocketsphinx,distillmos", "--out_dir", str(out)])
    line = capsys.readouterr().out.strip()
    assert rc == 0 and line.startswith("n=2 wer_pocketsphinx=25.0% mos_distillmos=3.25 ->")
    result = json.loads((out / "result.json").read_text())
    assert result["wer_pocketsphinx"] == 25.0 and result["text"] == str(tmp_path / "text")
    tsv = (out / "per_utt.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["utt", "seconds", "words", "hyp_pocketsphinx", "errors_pocketsphinx",
                                  "wer_pocketsphinx", "mos_distillmos"]
    assert tsv[2].split("\t") == ["s-2", "0.25", "2", "good bye", "1", "50.0", "3.25"]

    gt = tmp_path / "gt" / "result.json"
    gt.parent.mkdir()
    gt.write_text(json.dumps({"n": 2, "wer_pocketsphinx": 12.5, "mos_distillmos": 4.0, "sim": 0.9}))
    md = tmp_path / "RESULTS_part.md"
    rc = main(["table", "--results", str(gt), str(out / "result.json"), "--names", "ground truth,MaskGCT",
               "--out", str(md)])
    assert rc == 0 and md.read_text() == capsys.readouterr().out
    assert md.read_text().splitlines()[2:] == ["| ground truth | 2 | 12.5 | 4.00 | 0.900 |",
                                                "| MaskGCT | 2 | 25.0 | 3.25 | – |"]
    assert main(["table", "--results", str(gt), "--names", "a,b"]) == 2
    assert "2 names for 1 --results" in capsys.readouterr().err


def test_format_table_columns_and_missing_values():
    table = format_table([("ground truth", {"n": 3, "wer_asr": 10.0, "sim": 0.91234}),
                          ("codec | resyn", {"n": 3, "wer_asr": 12.345, "mos_distillmos": 3.456}),
                          ("MaskGCT", {"n": 3, "wer_asr": float("nan")})])
    assert table == ("| system | utts | WER ASR % | DistillMOS | SIM |\n"
                     "|---|---|---|---|---|\n"
                     "| ground truth | 3 | 10.0 | – | 0.912 |\n"
                     "| codec / resyn | 3 | 12.3 | 3.46 | – |\n"
                     "| MaskGCT | 3 | – | – | – |\n")
    with pytest.raises(ValueError, match="rows is empty"):
        format_table([])
    with pytest.raises(TypeError, match="summary of 'x' must be a mapping"):
        format_table([("x", [1, 2])])


def test_evaluate_systems_loads_each_judge_once(two_utts, monkeypatch):
    wavs, texts = two_utts
    loads = []
    monkeypatch.setitem(ev.LOADERS, "distillmos",
                        lambda j: loads.append(1) or (lambda w: {"mos_distillmos": float(w.numel())}))
    res = evaluate_systems({"gt": wavs, "resyn": {"u1": wavs["u1"]}}, texts, judges=("distillmos",), progress=False)
    assert loads == [1] and list(res) == ["gt", "resyn"]
    assert res["resyn"].summary["mos_distillmos"] == SR and res["gt"].summary["n"] == 2


# --------------------------------------------------------------------------- real judges, one tiny case each

def test_real_pocketsphinx_and_distillmos(tmp_path, one_thread):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("distillmos")
    wavs = {"a": write(tmp_path / "a.wav", voice(**VOICE_A, seconds=1.0))}
    res = evaluate(wavs, {"a": "a vowel"}, judges=("pocketsphinx", "distillmos"), progress=False)
    assert isinstance(res.rows[0]["hyp_pocketsphinx"], str)
    assert 0.0 <= res.summary["wer_pocketsphinx"] and 0.5 < res.summary["mos_distillmos"] < 5.5
