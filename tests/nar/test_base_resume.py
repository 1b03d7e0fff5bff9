"""nar.base.lock and nar.base.resume: one writer per directory, atomic trainer saves, repair of an
epoch interrupted between ESPnet's writes (the end-to-end kill test is tests/reliability/test_resume_kill.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nar.base.files import temporary_name
from nar.base.lock import LOCK_NAME, DirectoryLock, DirectoryLockedError
from nar.base.resume import TrainerCheckpointError, atomic_torch_saves, repair_interrupted_epoch


# ---------------------------------------------------------------- lock
def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    """The holder is another process (flock is per open file, so a second process is the real case)."""
    code = textwrap.dedent(f"""
        import sys, time
        from nar.base.lock import DirectoryLock
        with DirectoryLock({str(tmp_path)!r}, "training"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLockedError) as err:
            DirectoryLock(tmp_path, "decoding").acquire()
        msg = str(err.value)
        assert str(tmp_path) in msg and f"pid {holder.pid}" in msg and "training" in msg
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    # released: taken again without a warning, the file kept but emptied
    with DirectoryLock(tmp_path, "decoding") as lock:
        assert lock.took_over is None
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    code = f"from nar.base.lock import DirectoryLock; import os; DirectoryLock({str(tmp_path)!r}, 'training').acquire(); os._exit(0)"
    dead = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert dead.returncode == 0
    # the process exited without releasing: its record is still in the file
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["what"] == "training" and record["pid"] != os.getpid()
    with caplog.at_level(logging.WARNING, logger="nar.base.lock"):
        with DirectoryLock(tmp_path, "training") as lock:
            assert lock.took_over is not None and lock.took_over["what"] == "training"
    assert lock.took_over["pid"] == record["pid"]
    assert "no longer running" in caplog.text and f"pid {record['pid']}" in caplog.text


def test_lock_is_reentrant_across_sequential_uses_in_one_process(tmp_path):
    for _ in range(3):
        with DirectoryLock(tmp_path / "new" / "dir", "training"):
            assert (tmp_path / "new" / "dir" / LOCK_NAME).exists()


# ---------------------------------------------------------------- atomic saves
def test_atomic_torch_saves_keeps_the_previous_file_when_the_writer_dies(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 1}, target)

    def half_then_die(obj, f, *a, **k):  # a writer killed after writing part of the bytes
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(torch, "save", half_then_die)
    with atomic_torch_saves():
        with pytest.raises(KeyboardInterrupt):
            torch.save({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"epoch": 1}
    assert not temporary_name(target).exists()


def test_atomic_torch_saves_writes_and_restores_torch_save(tmp_path):
    original = torch.save
    with atomic_torch_saves():
        assert torch.save is not original
        with atomic_torch_saves():  # nested: no double wrapping
            torch.save({"a": torch.ones(2)}, tmp_path / "x.pth")
    assert torch.save is original
    assert torch.equal(torch.load(tmp_path / "x.pth")["a"], torch.ones(2))


# ---------------------------------------------------------------- repair
def _trainer_state(epoch: int, losses: dict) -> dict:
    model = {"w": torch.full((2,), float(epoch))}
    stats = {e: {"valid": {"loss": v}, "train": {"loss": v + 1}} for e, v in losses.items()}
    return {"model": model, "reporter": {"epoch": epoch, "stats": stats}, "optimizers": [{}],
            "schedulers": [None], "scaler": None}


def test_repair_restores_the_epoch_model_and_links_a_kill_left_out(tmp_path):
    # killed after checkpoint.pth of epoch 3 was written, before 3epoch.pth and the links
    torch.save(_trainer_state(3, {1: 2.0, 2: 1.5, 3: 1.2}), tmp_path / "checkpoint.pth")
    torch.save({"w": torch.full((2,), 2.0)}, tmp_path / "2epoch.pth")
    (tmp_path / "latest.pth").symlink_to("2epoch.pth")
    (tmp_path / "valid.loss.best.pth").symlink_to("2epoch.pth")
    done = repair_interrupted_epoch(tmp_path, [("valid", "loss", "min")])
    assert torch.equal(torch.load(tmp_path / "3epoch.pth")["w"], torch.full((2,), 3.0))
    assert os.readlink(tmp_path / "latest.pth") == "3epoch.pth"
    assert os.readlink(tmp_path / "valid.loss.best.pth") == "3epoch.pth"
    assert len(done) == 3 and "restored 3epoch.pth" in done[0]
    # a second call finds nothing to do
    assert repair_interrupted_epoch(tmp_path, [("valid", "loss", "min")]) == []


def test_repair_keeps_an_older_best_epoch_and_replaces_a_half_written_model(tmp_path):
    torch.save(_trainer_state(2, {1: 1.0, 2: 1.5}), tmp_path / "checkpoint.pth")
    torch.save({"w": torch.full((2,), 1.0)}, tmp_path / "1epoch.pth")
    (tmp_path / "2epoch.pth").write_bytes(b"PK\x03\x04 half")  # by an older, non-atomic writer
    (tmp_path / "valid.loss.best.pth").symlink_to("1epoch.pth")
    repair_interrupted_epoch(tmp_path, [("valid", "loss", "min"), ("valid", "acc", "max")])
    assert torch.equal(torch.load(tmp_path / "2epoch.pth")["w"], torch.full((2,), 2.0))
    assert os.readlink(tmp_path / "valid.loss.best.pth") == "1epoch.pth"
    assert not (tmp_path / "valid.acc.best.pth").exists()  # the reporter has no valid.acc


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "weights_only"])
def test_a_damaged_checkpoint_is_named_with_the_way_out(tmp_path, content):
    torch.save({"w": torch.zeros(2)}, tmp_path / "4epoch.pth")
    ckpt = tmp_path / "checkpoint.pth"
    if content == "weights_only":
        torch.save({"w": torch.zeros(2)}, ckpt)  # a model state dict, not the trainer's
    else:
        ckpt.write_bytes(content)
    with pytest.raises(TrainerCheckpointError) as err:
        repair_interrupted_epoch(tmp_path, [("valid", "loss", "min")])
    msg = str(err.value)
    assert str(ckpt) in msg and "cannot resume" in msg and "Move it away" in msg
    assert "4epoch.pth" in msg and "--init_param" in msg


def test_no_checkpoint_means_nothing_to_repair(tmp_path):
    assert repair_interrupted_epoch(tmp_path / "fresh") == []


def test_leftover_temporaries_of_a_killed_write_are_removed(tmp_path):
    torch.save(_trainer_state(1, {1: 1.0}), tmp_path / "checkpoint.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "1epoch.pth")
    temporary_name(tmp_path / "checkpoint.pth").write_bytes(b"partial")
    temporary_name(tmp_path / "2epoch.pth").write_bytes(b"partial")
    done = repair_interrupted_epoch(tmp_path, [])
    assert not list(tmp_path.glob(".*.tmp"))
    assert sum("removed" in d for d in done) == 2
