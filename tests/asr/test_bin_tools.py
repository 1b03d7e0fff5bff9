"""Small CLIs: checkpoint averaging, data formatting, decode config checking."""

import numpy as np
import pytest
import soundfile
import torch

from asr.bin import average_checkpoints, decode, format_data
from asr.bin.decode import load_decode_config
from nar.base.kaldi import DataDirError, read_kaldi_map, write_data_dir


def test_average_checkpoints(tmp_path):
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    torch.save(a, tmp_path / "1epoch.pth")
    torch.save(b, tmp_path / "2epoch.pth")
    out = tmp_path / "ave.pth"
    average_checkpoints.main(["--output", str(out), str(tmp_path / "1epoch.pth"), str(tmp_path / "2epoch.pth")])
    ave = torch.load(out)
    assert torch.equal(ave["w"], torch.tensor([2.0, 4.0]))
    assert int(ave["n"]) == 7
    torch.save({"other": torch.zeros(1)}, tmp_path / "3epoch.pth")
    with pytest.raises(ValueError, match="3epoch.pth"):
        average_checkpoints.average([str(tmp_path / "1epoch.pth"), str(tmp_path / "3epoch.pth")])


def _data_dir(tmp_path, durations):
    wavs, text, spk = {}, {}, {}
    for i, d in enumerate(durations):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, np.random.default_rng(i).normal(size=int(16000 * d)).astype(np.float32) * 0.1, 16000)
        wavs[f"s-u{i}"], text[f"s-u{i}"], spk[f"s-u{i}"] = str(path), "hello world", "s"
    write_data_dir(str(tmp_path / "src"), wavs, text, spk)
    return tmp_path / "src"


def test_format_data_filters_by_duration(tmp_path):
    src = _data_dir(tmp_path, [0.05, 1.0, 2.0])
    format_data.main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--min_duration", "0.1", "--max_duration", "1.5"])
    assert list(read_kaldi_map(str(tmp_path / "dst/wav.scp"))) == ["s-u1"]
    assert read_kaldi_map(str(tmp_path / "dst/utt2num_samples"))["s-u1"] == "16000"
    assert (tmp_path / "dst/.done").exists()


def test_format_data_errors_name_the_file(tmp_path):
    src = _data_dir(tmp_path, [1.0])
    (src / "text").write_text("s-u9 other utterance\n")
    with pytest.raises(DataDirError, match="text"):
        format_data.main(["--src", str(src), "--dst", str(tmp_path / "dst")])


def test_decode_config_rejects_unknown_keys(tmp_path):
    conf = tmp_path / "d.yaml"
    conf.write_text("search: beam\nbeam: 4\n")
    with pytest.raises(ValueError, match="beam_size"):
        load_decode_config(str(conf))


def test_decode_needs_one_output_dir_per_data_dir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        decode.main(["--model_dir", str(tmp_path), "--data_dir", "a", "b", "--output_dir", "c"])
    assert "2 --data_dir but 1 --output_dir" in capsys.readouterr().err


def test_restrict_vocabulary_keeps_only_in_vocabulary_sentences():
    from asr.data.text import Sentence, restrict_vocabulary

    sents = [Sentence(t, t, "x") for t in ["a b", "a c", "a a b", "d e f", "b a"]]
    kept = restrict_vocabulary(sents, 2)  # a (5), b (3) are the two most frequent words
    assert [s.text for s in kept] == ["a b", "a a b", "b a"]
    assert restrict_vocabulary(sents, 0) == sents
