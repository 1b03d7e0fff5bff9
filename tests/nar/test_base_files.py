"""nar.base.files: a file under its final name is complete — after success, after an exception in the
writer, and after the writing process is killed; writers that pick formats by extension work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.base.files import atomic_open, atomic_path, save_torch, temporary_name, write_json, write_lines, write_text


UTF8 = st.characters(blacklist_categories=("Cs",))  # lone surrogates cannot be written as UTF-8
LINE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")


def _names(directory):
    return sorted(os.listdir(directory))


@settings(max_examples=30, deadline=None)
@given(text=st.text(alphabet=UTF8), lines=st.lists(st.text(alphabet=LINE)),
       obj=st.dictionaries(st.text(alphabet=UTF8),
                           st.one_of(st.integers(), st.text(alphabet=UTF8), st.lists(st.floats(allow_nan=False)))))
def test_round_trips_leave_only_the_target(tmp_path_factory, text, lines, obj):
    d = tmp_path_factory.mktemp("rt")
    write_text(d / "a.txt", text)
    assert (d / "a.txt").read_bytes() == text.encode("utf-8")
    write_lines(d / "b.txt", lines)
    assert (d / "b.txt").read_text(encoding="utf-8") == "".join(line + "\n" for line in lines)
    write_json(d / "c.json", obj)
    assert json.loads((d / "c.json").read_text(encoding="utf-8")) == obj
    assert _names(d) == ["a.txt", "b.txt", "c.json"]  # no temporary file left beside them


def test_parent_directories_are_created(tmp_path):
    write_text(tmp_path / "x" / "y" / "z.txt", "hi")
    assert (tmp_path / "x" / "y" / "z.txt").read_text() == "hi"


def test_an_exception_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "model.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(target) as f:
            f.write('{"version": 2, "trunc')
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"version": 1}
    assert _names(tmp_path) == ["model.json"]
    # and with no old version, no file at all
    with pytest.raises(KeyError):
        with atomic_open(tmp_path / "new.npy", "wb") as f:
            np.save(f, np.arange(3))
            raise KeyError("x")
    assert _names(tmp_path) == ["model.json"]


def test_numpy_soundfile_and_torch_write_the_final_name(tmp_path):
    codes = np.arange(12, dtype=np.int16).reshape(3, 4)
    with atomic_open(tmp_path / "utt1.npy", "wb") as f:
        np.save(f, codes)
    np.testing.assert_array_equal(np.load(tmp_path / "utt1.npy"), codes)
    audio = (np.sin(np.arange(1600) / 5) * 0.5).astype(np.float32)
    with atomic_path(tmp_path / "utt1.wav") as tmp:
        assert tmp.name == ".utt1.wav.tmp" and tmp == temporary_name(tmp_path / "utt1.wav")
        sf.write(tmp, audio, 16000, subtype="PCM_16", format="WAV")
        assert sf.read(tmp)[1] == 16000  # readable under its temporary name (format from the header)
    back, sr = sf.read(tmp_path / "utt1.wav", dtype="float32")
    assert sr == 16000 and np.abs(back - audio).max() < 1e-4
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    save_torch(state, tmp_path / "model.pth")
    back = torch.load(tmp_path / "model.pth")
    assert back["step"] == 7 and torch.equal(back["w"], state["w"])
    assert _names(tmp_path) == ["model.pth", "utt1.npy", "utt1.wav"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_file_mode_follows_the_umask(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_misuse_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin.*created no file"):
        with atomic_path(tmp_path / "nothing.bin"):
            pass
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_open(tmp_path / "log.txt", "a"):
            pass
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_killed_writer_leaves_no_target(tmp_path):
    target = tmp_path / "out.txt"
    child = (
        "import sys, time\n"
        "from nar.base.files import atomic_open\n"
        f"with atomic_open({str(target)!r}) as f:\n"
        "    f.write('half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()  # the half-written content exists only under the hidden temp name
    assert _names(tmp_path) == [".out.txt.tmp"] and (tmp_path / ".out.txt.tmp").read_text() == "half"
    assert not list(tmp_path.glob("*.txt"))  # a listing of outputs does not see it
    write_text(target, "whole")  # the rerun's write takes the debris's name and renames it away
    assert _names(tmp_path) == ["out.txt"] and target.read_text() == "whole"
