"""nar.base.kaldi (data directories) and asr.audio.load_audio, including every error they report."""

import logging
import os

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioFileError, load_audio
from nar.base.kaldi import (DataDirError, read_data_dir, read_kaldi_map, spk2utt_from_utt2spk,
                            validate_data_dir, write_data_dir)


def _good_dir(tmp_path, segments=False):
    wavs = {}
    for i, utt in enumerate(["spkA-000001", "spkA-000002", "spkB-000001"]):
        path = str(tmp_path / f"{utt}.wav")
        sf.write(path, 0.1 * np.sin(np.arange(1600) * (0.1 + i)), 16000, subtype="PCM_16")
        wavs[utt] = path
    data = str(tmp_path / "data")
    text = {"spkB-000001": "third one", "spkA-000002": "second one", "spkA-000001": "first one"}
    utt2spk = {u: u.split("-")[0] for u in text}
    if segments:
        write_data_dir(data, wav_scp={"rec1": wavs["spkA-000001"]}, text=text, utt2spk=utt2spk,
                       segments={u: ("rec1", 0.0, 0.05) for u in text})
    else:
        write_data_dir(data, wav_scp=wavs, text=text, utt2spk=utt2spk,
                       extra={"utt2dur": {u: 0.1 for u in text}})
    return data


def _edit(data, name, lines):
    with open(os.path.join(data, name), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _lines(data, name):
    with open(os.path.join(data, name)) as f:
        return f.read().splitlines()


def test_write_read_roundtrip_sorted(tmp_path):
    data = _good_dir(tmp_path)
    validate_data_dir(data)
    assert _lines(data, "spk2utt") == ["spkA spkA-000001 spkA-000002", "spkB spkB-000001"]
    assert [line.split()[0] for line in _lines(data, "text")] == sorted(
        line.split()[0] for line in _lines(data, "text"))
    d = read_data_dir(data)
    assert d.text["spkA-000002"] == "second one"
    assert d.spk2utt == spk2utt_from_utt2spk(d.utt2spk)
    assert d.extra["utt2dur"]["spkB-000001"] == "0.1"


def test_segments_dir_validates(tmp_path):
    data = _good_dir(tmp_path, segments=True)
    validate_data_dir(data)
    assert read_data_dir(data).segments["spkB-000001"] == ("rec1", 0.0, 0.05)
    _edit(data, "segments", ["spkA-000001 rec9 0.000 0.050", "spkA-000002 rec1 0.0 0.05",
                             "spkB-000001 rec1 0.0 0.05"])
    with pytest.raises(DataDirError, match=r"segments: recording 'rec9'"):
        validate_data_dir(data)


def _break_missing(data):
    os.remove(os.path.join(data, "utt2spk"))
    return r"utt2spk: file missing"


def _break_duplicate(data):
    _edit(data, "text", _lines(data, "text") + [_lines(data, "text")[-1]])
    return r"text:4: duplicate key 'spkB-000001'"


def _break_unsorted(data):
    _edit(data, "text", list(reversed(_lines(data, "text"))))
    return r"text: not sorted"


def _break_text_extra(data):
    _edit(data, "text", _lines(data, "text") + ["spkC-000001 extra"])
    return r"text: 1 utterance\(s\) not in .*wav.scp, e.g. 'spkC-000001'"


def _break_wav_extra(data):
    _edit(data, "text", _lines(data, "text")[:-1])
    return r"wav.scp: 1 utterance\(s\) not in .*text, e.g. 'spkB-000001'"


def _break_empty_transcript(data):
    _edit(data, "text", _lines(data, "text")[:-1] + ["spkB-000001"])
    return r"text: empty transcript for 'spkB-000001'"


def _break_audio(data):
    os.remove(read_kaldi_map(os.path.join(data, "wav.scp"))["spkA-000002"])
    return r"wav.scp: audio file of 'spkA-000002' missing: .*spkA-000002.wav"


def _break_spk2utt(data):
    _edit(data, "spk2utt", ["spkA spkA-000001", "spkB spkB-000001"])
    return r"spk2utt: does not match .*utt2spk \(speaker 'spkA'\)"


def _break_speaker_order(data):
    _edit(data, "utt2spk", ["spkA-000001 zed", "spkA-000002 alpha", "spkB-000001 alpha"])
    _edit(data, "spk2utt", ["alpha spkA-000002 spkB-000001", "zed spkA-000001"])
    return r"utt2spk: sorted by utterance but not by speaker"


def _break_utt2spk_value(data):
    _edit(data, "utt2spk", ["spkA-000001", "spkA-000002 spkA", "spkB-000001 spkB"])
    return r"utt2spk:1: key 'spkA-000001' has no value"


@pytest.mark.parametrize("breaker", [
    _break_missing, _break_duplicate, _break_unsorted, _break_text_extra, _break_wav_extra,
    _break_empty_transcript, _break_audio, _break_spk2utt, _break_speaker_order,
    _break_utt2spk_value])
def test_validate_names_file_and_problem(tmp_path, breaker):
    data = _good_dir(tmp_path)
    pattern = breaker(data)
    with pytest.raises(DataDirError, match=pattern) as info:
        validate_data_dir(data)
    assert isinstance(info.value, ValueError)
    assert data in str(info.value)


def test_validate_missing_dir(tmp_path):
    with pytest.raises(DataDirError, match="data directory missing"):
        validate_data_dir(str(tmp_path / "nope"))


def test_validate_skips_commands_and_archives(tmp_path):
    data = _good_dir(tmp_path)
    _edit(data, "wav.scp", ["spkA-000001 sox a.flac -t wav - |", "spkA-000002 feats.ark:123",
                            "spkB-000001 " + read_kaldi_map(os.path.join(data, "wav.scp"))["spkB-000001"]])
    validate_data_dir(data)


# --------------------------------------------------------------------------- load_audio


def test_load_audio_ok(tmp_path):
    path = str(tmp_path / "ok.wav")
    sf.write(path, np.full(800, 0.25), 16000, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (800,)
    assert np.allclose(audio, 0.25, atol=1e-4)


def _write(path, data, sr=16000, subtype="PCM_16"):
    sf.write(path, data, sr, subtype=subtype)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "audio file missing"),
    ("garbage", "cannot read audio"),
    ("empty", r"audio is empty \(0 samples\)"),
    ("zeros", "all zeros"),
    ("nan", "NaN or Inf"),
    ("inf", "NaN or Inf"),
    ("stereo", r"2 channels, expected mono; downmix it \(sox .* -c 1 out.wav\) or pass "
               "allow_multichannel=True"),
])
def test_load_audio_errors_name_the_file(tmp_path, case, pattern):
    path = str(tmp_path / f"{case}.wav")
    if case == "garbage":
        with open(path, "wb") as f:
            f.write(b"RIFF\0\0not really a wav file")
    elif case == "empty":
        _write(path, np.zeros(0))
    elif case == "zeros":
        _write(path, np.zeros(400))
    elif case in ("nan", "inf"):
        x = np.full(400, 0.1, dtype=np.float32)
        x[7] = np.nan if case == "nan" else np.inf
        _write(path, x, subtype="FLOAT")
    elif case == "stereo":
        _write(path, np.stack([np.full(400, 0.2), np.full(400, 0.4)], axis=1))
    with pytest.raises(AudioFileError, match=pattern) as info:
        load_audio(path)
    assert str(info.value).startswith(path)


def test_load_audio_downmix_when_allowed(tmp_path):
    path = str(tmp_path / "stereo.wav")
    _write(path, np.stack([np.full(400, 0.2), np.full(400, 0.4)], axis=1))
    audio = load_audio(path, allow_multichannel=True)
    assert audio.shape == (400,) and np.allclose(audio, 0.3, atol=1e-4)


def test_load_audio_resamples_with_warning(tmp_path, caplog):
    path = str(tmp_path / "eight_k.wav")
    _write(path, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000), sr=8000)
    with caplog.at_level(logging.WARNING, logger="asr.audio"):
        audio = load_audio(path, target_sr=16000)
    assert audio.dtype == np.float32 and abs(audio.shape[0] - 16000) <= 2
    assert any(path in r.getMessage() and "8000 Hz" in r.getMessage() for r in caplog.records)
    assert load_audio(path, target_sr=None).shape == (8000,)
