"""nar.base.training: the shared training loop — checkpoints, one resume logic, kill and resume
to the same weights, fingerprint and file errors."""

from __future__ import annotations

import random

import pytest
import torch

from nar.base.training import CheckpointError, StepTrainer


class Killed(Exception):
    pass


def build(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    return net, torch.optim.Adam(net.parameters(), lr=1e-2)


def make_step(net, opt, kill_at=None, seen=None):
    """A step that draws its data and dropout masks from the global torch and Python RNGs, so
    only a resume that restores the random states reproduces an uninterrupted run."""

    def step(i: int) -> dict[str, float]:
        if i == kill_at:
            raise Killed
        x = torch.randn(16, 4) + random.random()
        loss = ((net(x) - x.sum(-1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if seen is not None:
            seen.append(i)
        return {"loss": float(loss.detach())}

    return step


def train(path, total, every=2, kill_at=None, seen=None, log=None):
    net, opt = build()
    t = StepTrainer(path, {"net": net, "opt": opt}, {"lr": 1e-2}, total, every=every)
    resumed = t.resume()
    history = list(t.extra.get("steps", []))
    step_fn = make_step(net, opt, kill_at, seen)

    def counted(i):
        history.append(i)
        return step_fn(i)

    t.run(counted, extra=lambda: {"steps": history},
          after_save=None if log is None else (lambda s, stats: log.append((s, sorted(stats)))), progress=False)
    return net, t, resumed


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    random.seed(5)
    once, _, resumed = train(tmp_path / "once.pt", 7)
    assert not resumed
    random.seed(5)
    with pytest.raises(Killed):
        train(tmp_path / "twice.pt", 7, kill_at=5)
    stored = torch.load(tmp_path / "twice.pt", weights_only=True)
    assert stored["step"] == 4 and stored["extra"]["steps"] == [0, 1, 2, 3]
    random.seed(99)  # whatever happened to the random generators in between
    torch.manual_seed(99)
    seen, log = [], []
    twice, t, resumed = train(tmp_path / "twice.pt", 7, seen=seen, log=log)
    assert resumed and seen == [4, 5, 6] and t.step == 7
    assert log == [(6, ["loss"]), (7, ["loss"])]  # every 2 steps and after the last
    assert t.extra["steps"] == list(range(7))
    for (k, a), (_, b) in zip(once.state_dict().items(), twice.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_finished_run_does_nothing_and_a_larger_total_trains_on(tmp_path):
    train(tmp_path / "c.pt", 3)
    seen = []
    _, t, resumed = train(tmp_path / "c.pt", 3, seen=seen)
    assert resumed and seen == [] and t.step == 3
    _, t, _ = train(tmp_path / "c.pt", 5, seen=seen)
    assert seen == [3, 4] and torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 5


def test_fingerprint_mismatch_is_not_resumed(tmp_path):
    path = tmp_path / "c.pt"
    train(path, 2)
    net, opt = build()
    with pytest.raises(CheckpointError, match=r"c\.pt: was written by a run with \{'lr': 0.01\}"):
        StepTrainer(path, {"net": net, "opt": opt}, {"lr": 0.1}, 4).resume()
    with pytest.raises(SystemExit, match="other options 0.01"):
        StepTrainer(path, {"net": net, "opt": opt}, {"lr": 0.1}, 4,
                    mismatch=lambda old: SystemExit(f"other options {old['lr']}")).resume()


def test_missing_optional_and_foreign_checkpoints(tmp_path):
    path = tmp_path / "c.pt"
    train(path, 2)
    net, opt = build()
    extra = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in extra.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"holds no state of \['disc'\]"):
        StepTrainer(path, {"net": net, "opt": opt, "disc": extra}, {"lr": 1e-2}, 4).resume()
    t = StepTrainer(path, {"net": net, "opt": opt, "disc": extra}, {"lr": 1e-2}, 4, optional=("disc",))
    assert t.resume() and t.step == 2
    assert all(torch.equal(before[k], v) for k, v in extra.state_dict().items())
    torch.save({"net": net.state_dict(), "step": 3}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old\.pt: not a checkpoint of nar.base.training"):
        StepTrainer(tmp_path / "old.pt", {"net": net}, None, 4).resume()
    (tmp_path / "junk.pt").write_bytes(b"half a file")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        StepTrainer(tmp_path / "junk.pt", {"net": net}, None, 4).resume()


def test_argument_checks(tmp_path):
    net, _ = build()
    with pytest.raises(ValueError, match="total must be an int >= 1"):
        StepTrainer(tmp_path / "c.pt", {"net": net}, None, 0)
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        StepTrainer(tmp_path / "c.pt", {"net": net}, None, 3, every=0)
    with pytest.raises(ValueError, match=r"\['step'\] are reserved"):
        StepTrainer(tmp_path / "c.pt", {"step": net}, None, 3)
