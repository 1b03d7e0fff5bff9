"""Reliability of ASR inputs where they enter (issue #34): audio scale, truncated files, inputs too
short for the model or too long to decode in one piece, and a too-short utterance in a recipe's
test set. Every case asserts that the message names the input and the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from asr import Speech2Text
from asr.audio import AudioFileError, as_waveform, load_audio
from nar.base.kaldi import read_kaldi_map


@pytest.fixture(scope="module")
def model_dir(tiny_recipe):
    return tiny_recipe / "exp/asr_train_tiny_char"


@pytest.fixture(scope="module")
def s2t(model_dir):
    return Speech2Text(model_dir)


def _tone(n: int, sr: int = 16000) -> np.ndarray:
    return (0.1 * np.cos(2 * np.pi * 220 * np.arange(n) / sr)).astype(np.float32)


# ---------------------------------------------------------------- amplitude scale
def test_float_samples_at_int16_scale_are_refused():
    loud = _tone(8000) * 32767 / 0.1 * 0.5  # what wav.astype(float) of int16 samples looks like
    with pytest.raises(ValueError) as err:
        as_waveform(loud, 16000, name="inputs[2]")
    msg = str(err.value)
    assert msg.startswith("inputs[2]:") and "looks like int16" in msg and "32768" in msg


def test_int16_and_int32_arrays_are_rescaled_to_unit_range():
    x = _tone(4000)
    for dtype, scale in ((np.int16, 32768), (np.int32, 2**31)):
        wav = as_waveform((x * scale).astype(dtype), 16000, name="inputs[0]")
        assert wav.dtype == torch.float32
        assert np.allclose(wav.numpy(), x, atol=2.0 / 32768)


def test_float_within_headroom_is_accepted():
    wav = as_waveform(_tone(4000) * 12, 16000)  # peak 1.2: clipped audio, not another scale
    assert float(wav.abs().max()) == pytest.approx(1.2, rel=1e-4)


# ---------------------------------------------------------------- truncated files
def test_a_wav_cut_in_the_middle_is_named_as_truncated(tmp_path):
    full = tmp_path / "full.wav"
    soundfile.write(full, _tone(16000), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert soundfile.read(cut)[0].shape[0] < 16000  # libsndfile itself reads the half silently
    with pytest.raises(AudioFileError) as err:
        load_audio(str(cut))
    msg = str(err.value)
    assert str(cut) in msg and "truncated" in msg and "16000 samples" in msg
    assert load_audio(str(full)).shape == (16000,)  # the intact file still loads


def test_a_cut_flac_is_named(tmp_path):
    full = tmp_path / "full.flac"
    soundfile.write(full, _tone(16000), 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioFileError) as err:
        load_audio(str(cut))
    assert str(cut) in str(err.value) and ("truncated" in str(err.value) or "corrupt" in str(err.value))


def test_streamed_wav_with_unknown_data_size_is_not_called_truncated(tmp_path):
    path = tmp_path / "stream.wav"
    soundfile.write(path, _tone(1600), 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    pos = raw.index(b"data")
    raw[pos + 4 : pos + 8] = (0xFFFFFFFF).to_bytes(4, "little")  # as a streaming writer leaves it
    path.write_bytes(bytes(raw))
    assert load_audio(str(path)).shape == (1600,)


# ---------------------------------------------------------------- too short / too long
def test_min_samples_matches_the_front_end_arithmetic_and_the_encoder(s2t):
    # the tiny config: STFT n_fft 512 centred (reflect padding needs > 256 samples), hop 160, conv2d
    # subsampling (ESPnet needs 7 input frames): 1 + n // 160 >= 7  ->  n >= 960
    assert s2t.min_samples == 960
    # brute force on the model itself, either side of the bound
    assert int(s2t.encode([torch.from_numpy(_tone(960))]).lengths[0]) >= 1
    with pytest.raises(Exception):
        out = s2t.encode([torch.from_numpy(_tone(959))])
        assert int(out.lengths[0]) >= 1


@pytest.mark.parametrize("n", [1, 399, 959])
def test_an_input_too_short_for_the_model_is_named(s2t, n):
    ok = _tone(16000)
    with pytest.raises(ValueError) as err:
        s2t([ok, _tone(n)])
    msg = str(err.value)
    assert msg.startswith("inputs[1]:") and f"{n} samples" in msg and "960 samples" in msg
    assert s2t(_tone(960)).text is not None  # the bound itself decodes


def test_an_input_too_long_for_one_piece_is_refused_before_allocation(model_dir):
    s2t = Speech2Text(model_dir, max_seconds=None)
    twenty_minutes = torch.from_numpy(np.tile(_tone(16000), 20 * 60))
    with pytest.raises(ValueError) as err:
        s2t(twenty_minutes)
    msg = str(err.value)
    assert msg.startswith("inputs[0]: 1200 s") and "GiB" in msg and "max_seconds='auto'" in msg


# ---------------------------------------------------------------- a recipe test set
def test_decode_skips_a_one_sample_utterance_and_decodes_the_rest(tiny_recipe, model_dir, tmp_path, capsys):
    from asr.bin.decode import main as decode_main

    src = tiny_recipe / "dump/raw/test"
    scp = read_kaldi_map(str(src / "wav.scp"))
    data = tmp_path / "test_short"
    data.mkdir()
    one = tmp_path / "one_sample.wav"
    soundfile.write(one, np.array([0.1], dtype=np.float32), 16000)
    keys = sorted(scp)
    lines = {k: scp[k] for k in keys}
    lines["zz_one_sample"] = str(one)
    (data / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
    out = tmp_path / "decode"
    decode_main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(out),
                 "--batch_size", "2", "--num_threads", "1"])
    err = capsys.readouterr().err
    assert "skipped 1 of 5 utterances" in err and "zz_one_sample" in err and "960 samples" in err
    hyps = read_kaldi_map(str(out / "text"), allow_empty_value=True)
    assert list(hyps) == list(lines)  # every utterance has a line, in the data dir's order
    assert hyps["zz_one_sample"] == ""
    alone = Speech2Text(model_dir)
    for k in keys:  # the others decoded as they decode on their own
        assert hyps[k] == alone(scp[k]).text
    assert json.loads((out / "rtf.json").read_text())["skipped_too_short"] == ["zz_one_sample"]


def test_stage2_drops_too_short_training_utterances_by_id(tmp_path, caplog):
    """Stage 2 (asr.bin.format_data with the recipe's --min_duration, for train and valid sets):
    a one-sample utterance is dropped, counted and named in the log; the others stay."""
    import logging

    from asr.bin.format_data import main as format_main

    src = tmp_path / "data"
    src.mkdir()
    lengths = {"u1": 16000, "u2_tiny": 1, "u3": 8000, "u4_long": 16000 * 3}
    for utt, n in lengths.items():
        soundfile.write(tmp_path / f"{utt}.wav", _tone(n), 16000)
    (src / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in lengths))
    (src / "text").write_text("".join(f"{u} hello\n" for u in lengths))
    (src / "utt2spk").write_text("".join(f"{u} s1\n" for u in lengths))
    (src / "spk2utt").write_text("s1 " + " ".join(lengths) + "\n")
    with caplog.at_level(logging.INFO):
        format_main(["--src", str(src), "--dst", str(tmp_path / "dump"), "--min_duration", "0.1",
                     "--max_duration", "2"])
    assert "dropped 1 of 4 utterances shorter than 0.1 s: u2_tiny (0.000 s)" in caplog.text
    assert "dropped 1 of 4 utterances longer than 2 s: u4_long (3.000 s)" in caplog.text
    assert list(read_kaldi_map(str(tmp_path / "dump/wav.scp"))) == ["u1", "u3"]
