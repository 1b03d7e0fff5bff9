"""asr.data.real: test_real from pocketsphinx-testdata (real and fabricated trees)."""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from nar.base.kaldi import read_data_dir
from asr.data.real import POCKETSPHINX_DATA, parse_transcription, prepare_test_real
from asr.data.text import MissingToolError


def test_parse_transcription(tmp_path):
    path = tmp_path / "t"
    path.write_text("<s> Ten of CLUBS  </s> (001)\n\n<s> five, five </s> (002)\n")
    assert parse_transcription(str(path)) == {"001": "ten of clubs", "002": "five five"}
    path.write_text("no id here\n")
    with pytest.raises(ValueError, match=r"t:1: expected '<s> words </s> \(id\)'"):
        parse_transcription(str(path))


def _fake_tree(root):
    for sub, trans, key, sr, channels in (("cards", "cards.transcription", "001", 16000, 1),
                                          ("librivox", "transcription", "book-0870", 8000, 2)):
        os.makedirs(root / sub)
        x = 0.2 * np.sin(np.arange(sr // 2) * 0.05)
        sf.write(root / sub / f"{key}.wav", np.stack([x] * channels, axis=1), sr,
                 subtype="PCM_16")
        (root / sub / trans).write_text(f"<s> words of {sub} </s> ({key})\n")


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_fabricated_tree_converts_to_16k_mono(tmp_path):
    _fake_tree(tmp_path / "ps")
    out = str(tmp_path / "test_real")
    assert prepare_test_real(out, root=str(tmp_path / "ps")) == 2
    d = read_data_dir(out)
    assert d.text == {"cards-001": "words of cards", "librivox-book-0870": "words of librivox"}
    assert d.wav_scp["cards-001"] == str(tmp_path / "ps" / "cards" / "001.wav")
    info = sf.info(d.wav_scp["librivox-book-0870"])
    assert (info.samplerate, info.channels) == (16000, 1)
    assert d.wav_scp["librivox-book-0870"].startswith(os.path.join(out, "wav"))


def test_missing_package_named(tmp_path):
    with pytest.raises(MissingToolError, match="pocketsphinx-testdata"):
        prepare_test_real(str(tmp_path / "o"), root=str(tmp_path / "none"))


@pytest.mark.skipif(not os.path.isdir(POCKETSPHINX_DATA), reason="pocketsphinx-testdata missing")
def test_installed_pocketsphinx_testdata(tmp_path):
    out = str(tmp_path / "test_real")
    assert prepare_test_real(out) == 10
    d = read_data_dir(out)
    assert d.text["cards-001"] == "ten of clubs"
    assert set(d.spk2utt) == {"cards", "librivox"}
    assert all(v.startswith(POCKETSPHINX_DATA) for v in d.wav_scp.values())
