"""nar.base: token lists, experiment directories (the one checkpoint rule), Kaldi map reading
options, validators and length masks — each against a brute-force or hand-written truth."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.base.checks import check_choice, check_int, check_number
from nar.base.experiment import CHECKPOINT_PREFERENCE, epoch_checkpoints, find_checkpoint, read_config, resolve_path
from nar.base.kaldi import DataDirError, read_kaldi_map
from nar.base.tensors import length_mask
from nar.base.tokens import read_token_list


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2, 9), min_size=1, max_size=6), st.integers(0, 8))
def test_length_mask_matches_brute_force(lengths, size):
    mask = length_mask(torch.tensor(lengths), size)
    assert mask.shape == (len(lengths), size) and mask.dtype == torch.bool
    assert mask.tolist() == [[t < n for t in range(size)] for n in lengths]


def test_token_list_file_and_inline(tmp_path):
    f = tmp_path / "tokens.txt"
    f.write_text("<blank>\nhello\n |\n<sos/eos>\n", encoding="utf-8")
    assert read_token_list(f) == ["<blank>", "hello", " |", "<sos/eos>"]
    assert read_token_list(str(f)) == read_token_list(["<blank>", "hello", " |", "<sos/eos>"])
    inline = ["a", "b"]
    out = read_token_list(inline)
    assert out == inline and out is not inline
    with pytest.raises(FileNotFoundError, match=r"missing.txt does not exist \(run the phoneme stage\)"):
        read_token_list(tmp_path / "missing.txt", "phoneme")
    f.write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_token_list(f)
    f.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'a' appears twice \\(lines 1 and 3\\)"):
        read_token_list(f)
    f.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_token_list(f)
    with pytest.raises(TypeError, match="token_list"):
        read_token_list(3)


def _touch(d, *names):
    for n in names:
        (d / n).write_bytes(b"x")


def test_checkpoint_preference_order(tmp_path):
    """Remove the preferred checkpoint one at a time: the next in the documented order wins."""
    names = ["valid.acc.ave.pth", "valid.loss.ave.pth", "valid.cer.ave.pth", "valid.acc.best.pth",
             "valid.loss.best.pth", "valid.mel_loss.best.pth", "train.mel_loss.best.pth", "model.pth",
             "latest.pth", "3epoch.pth", "12epoch.pth", "xepoch.pth"]
    _touch(tmp_path, *names)
    expected = names[:9] + ["12epoch.pth", "3epoch.pth"]
    for name in expected:
        assert find_checkpoint(tmp_path).name == name
        (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        find_checkpoint(tmp_path)  # xepoch.pth is not an epoch checkpoint
    assert CHECKPOINT_PREFERENCE[0] == "valid.acc.ave.pth"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")


def test_epoch_checkpoints_sorted_numerically(tmp_path):
    _touch(tmp_path, "10epoch.pth", "2epoch.pth", "1epoch.pth", "epoch.pth", "a2epoch.pth")
    assert list(epoch_checkpoints(tmp_path)) == [1, 2, 10]


def test_read_config_and_resolve_path(tmp_path):
    exp = tmp_path / "recipe" / "exp" / "tag"
    exp.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        read_config(exp)
    (exp / "config.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        read_config(exp)
    (exp / "config.yaml").write_text("token_list: [a, b]\nencoder: conformer\n")
    assert read_config(exp, ("token_list",))["encoder"] == "conformer"
    with pytest.raises(ValueError, match=r"missing key\(s\) \['frontend'\]"):
        read_config(exp, ("token_list", "frontend"))
    (tmp_path / "recipe" / "dump").mkdir()
    (tmp_path / "recipe" / "dump" / "tokens.txt").write_text("a\n")
    assert resolve_path("dump/tokens.txt", exp) == tmp_path / "recipe" / "dump" / "tokens.txt"
    with pytest.raises(FileNotFoundError, match="names dump/none.txt"):
        resolve_path("dump/none.txt", exp)


class _MyError(ValueError):
    pass


def test_kaldi_map_reader_options(tmp_path):
    f = tmp_path / "wav.scp"
    f.write_text("a x.wav\n\nb  y z.wav \n", encoding="utf-8")
    with pytest.raises(DataDirError, match="wav.scp:2: empty line"):
        read_kaldi_map(f)
    assert read_kaldi_map(f, skip_blank_lines=True) == {"a": "x.wav", "b": "y z.wav"}
    f.write_text("a x\na y\n")
    with pytest.raises(_MyError, match="wav.scp:2: duplicate key 'a'"):
        read_kaldi_map(f, error=_MyError)
    f.write_text("a\n")
    with pytest.raises(DataDirError, match="key 'a' has no value"):
        read_kaldi_map(f)
    assert read_kaldi_map(f, allow_empty_value=True) == {"a": ""}
    f.write_text("")
    assert read_kaldi_map(f) == {}
    with pytest.raises(DataDirError, match="no entries"):
        read_kaldi_map(f, require_entries=True)


def test_checks_name_the_argument():
    assert check_int(3, "n", 1, 5) == 3
    with pytest.raises(TypeError, match="n must be an int"):
        check_int(True, "n")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int(0, "n", 1)
    with pytest.raises(ValueError, match="n must be <= 5, got 6"):
        check_int(6, "n", maximum=5)
    assert check_number(2, "w", 0.0, strict=True) == 2.0
    with pytest.raises(ValueError, match="w must be > 0.0"):
        check_number(0.0, "w", 0.0, strict=True)
    with pytest.raises(TypeError, match="w must be a number"):
        check_number(float("nan"), "w")
    with pytest.raises(ValueError, match="w must be <= 1.0"):
        check_number(1.5, "w", 0.0, 1.0)
    assert check_choice("ctc", "firing", ("predictor", "ctc")) == "ctc"
    with pytest.raises(ValueError, match=r"firing must be one of \('predictor', 'ctc'\), got 'x'"):
        check_choice("x", "firing", ("predictor", "ctc"))


def test_load_weights_is_strict_and_names_the_files(tmp_path):
    from nar.base.experiment import load_weights

    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save(src.state_dict(), tmp_path / "a.pth")
    load_weights(dst, tmp_path / "a.pth", tmp_path / "config.yaml")
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    with pytest.raises(ValueError, match=r"a.pth does not match the model of .*config.yaml: missing \['1.weight'"):
        load_weights(torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(3, 2)), tmp_path / "a.pth",
                     tmp_path / "config.yaml")
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: cannot be read as a torch checkpoint"):
        load_weights(dst, tmp_path / "bad.pth", "config.yaml")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict, got list"):
        load_weights(dst, tmp_path / "list.pth", "config.yaml")
    torch.save({"model": src.state_dict(), "optimizers": [], "reporter": {}}, tmp_path / "checkpoint.pth")
    with pytest.raises(ValueError, match="checkpoint.pth is ESPnet's trainer checkpoint.*epoch.pth or \\*.ave.pth"):
        load_weights(dst, tmp_path / "checkpoint.pth", "config.yaml")
    with pytest.raises(FileNotFoundError, match="none.pth does not exist"):
        load_weights(dst, tmp_path / "none.pth", "config.yaml")
