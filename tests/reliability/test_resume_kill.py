"""A training killed with SIGKILL at any moment resumes and ends with the model of an uninterrupted
run (issue #34, the first "bad" case: a kill while ESPnet wrote checkpoint.pth left 0 bytes, and
every rerun failed with ``EOFError: Ran out of input``).

The tiny recipe's training (exp/asr_train_tiny_char, 2 epochs, run uninterrupted by the fixture) is
the reference; the same command is rerun into other directories and killed: during the write of
checkpoint.pth, between checkpoint.pth and the epoch's model file, and at random moments; each
run is then started again, as a user (or Slurm's requeue) would, until it finishes. The weights
must be bit-identical to the reference's (ESPnet seeds every epoch from seed + epoch, CPU, one
thread).
"""

from __future__ import annotations

import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import recipe_env

DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.fixture(scope="module")
def reference(tiny_recipe) -> Path:
    return tiny_recipe / "exp/asr_train_tiny_char"


@pytest.fixture(scope="module")
def train_args(reference) -> list[str]:
    """The options of the reference training, from the command line ESPnet logged first."""
    first = next(line for line in (reference / "train.log").read_text().splitlines() if "asr/bin/train.py" in line)
    argv = shlex.split(first)
    assert argv[1].endswith("asr/bin/train.py"), first
    args = argv[2:]
    i = args.index("--output_dir")
    return args[:i] + args[i + 2:]


def _run(recipe: Path, out: Path, train_args: list[str], mode: str = "none", file: str = "-", nth: int = 1,
         kill_in: float | None = None) -> int:
    """Run the training into ``out``; ``kill_in``: SIGKILL it that many seconds after it has taken
    the directory's lock (the training proper has begun: arguments parsed, ESPnet imported)."""
    cmd = [sys.executable, str(DRIVER), mode, file, str(nth), "--", *train_args, "--output_dir", str(out)]
    with open(out.parent / f"{out.name}.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=recipe, env=recipe_env(), stdout=log, stderr=subprocess.STDOUT)
        if kill_in is None:
            return proc.wait(timeout=600)
        lock = out / ".nar_lock"
        while proc.poll() is None and not (lock.exists() and f'"pid": {proc.pid}' in lock.read_text()):
            time.sleep(0.05)
        try:
            return proc.wait(timeout=kill_in)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            return proc.wait(timeout=60)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


def _assert_same_model(out: Path, reference: Path) -> None:
    for name in ("1epoch.pth", "2epoch.pth", "valid.loss.ave.pth"):
        got, want = _weights(out / name), _weights(reference / name)
        assert got.keys() == want.keys(), name
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{out / name}: {len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"


def test_kill_during_and_between_the_trainers_writes(tiny_recipe, reference, train_args, tmp_path):
    out = tmp_path / "exp_killed"
    # killed half-way through writing checkpoint.pth of epoch 2 (the 2nd save of that file)
    rc = _run(tiny_recipe, out, train_args, "during", "checkpoint.pth", 2)
    assert rc == -signal.SIGKILL
    # the complete checkpoint of epoch 1 is still there; the half-written bytes are in the temporary
    state = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert state["reporter"]["epoch"] == 1
    assert (out / ".checkpoint.pth.tmp").exists()
    # the rerun is killed between checkpoint.pth of epoch 2 and 2epoch.pth
    rc = _run(tiny_recipe, out, train_args, "before", "2epoch.pth", 1)
    assert rc == -signal.SIGKILL
    assert not (out / "2epoch.pth").exists()
    assert torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["epoch"] == 2
    # the next rerun repairs (2epoch.pth from checkpoint.pth, links) and finishes
    assert _run(tiny_recipe, out, train_args) == 0
    log = (tmp_path / "exp_killed.log").read_text()
    assert "restored 2epoch.pth from checkpoint.pth" in log
    assert "took over the lock left by pid" in log  # the killed runs never released it
    _assert_same_model(out, reference)


def test_random_kills_then_resume_equals_an_uninterrupted_run(tiny_recipe, reference, train_args, tmp_path):
    out = tmp_path / "exp_random"
    rng = random.Random(34)
    kills = 0
    for _ in range(2):  # the training proper takes ~1 s here (model building, 2 epochs, averaging)
        rc = _run(tiny_recipe, out, train_args, kill_in=rng.uniform(0.0, 1.0))
        kills += rc == -signal.SIGKILL
        if rc == 0:
            break
    else:
        assert _run(tiny_recipe, out, train_args) == 0
    assert kills >= 1
    log = (tmp_path / "exp_random.log").read_text()
    # a kill between the lock's release and the process's exit leaves nothing to take over
    assert log.count("took over the lock left by pid") <= kills
    _assert_same_model(out, reference)
