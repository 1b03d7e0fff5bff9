"""The one small training loop for the models ESPnet's trainer does not train (the mel vocoder of
the mel-RVQ tokenizer, the caption classifier of the generation evaluation): a step function
called ``total`` times, a checkpoint written atomically every ``every`` steps, and one resume
logic.

A checkpoint (one file, :func:`nar.base.files.save_torch`) holds::

    {"format": 1, "step": <steps done>, "fingerprint": <what must match to resume>,
     "rng": <torch (and CUDA) and Python random states>, "extra": <the caller's state>,
     <part name>: <its state_dict()>, ...}

``parts`` are the stateful objects of a run (networks, optimisers: anything with
``state_dict``/``load_state_dict``). A rerun of the same command after a kill finds the
checkpoint, checks its fingerprint (a run with other options is not silently continued), loads
every part and the random states and continues at the step after it; with a larger ``total`` a
finished run trains on. Because the random states are restored too, a resumed run computes what
an uninterrupted one computes, provided the step function depends only on the step number, the
parts and the global random generators.

A "step" is what the caller makes it: one optimiser update (the vocoder) or one epoch (the
classifier). Part of the base layer (:mod:`nar.base`): torch, tqdm and the standard library only.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from nar.base.files import save_torch

__all__ = ["CheckpointError", "StepTrainer"]

FORMAT = 1
_RESERVED = ("format", "step", "fingerprint", "rng", "extra")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed (the message names the file and the problem)."""


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StepTrainer:
    """Run ``step_fn`` for steps ``step .. total - 1`` with checkpoints and resume.

    Args:
        path: the checkpoint file (its directory is created).
        parts: name -> object with ``state_dict``/``load_state_dict`` (saved and restored).
        fingerprint: plain data (dicts, lists, str, numbers, bool, None) that a checkpoint must
            hold to be resumed, e.g. the network's configuration.
        total: the number of steps of the run (>= 1).
        every: write the checkpoint after every ``every`` steps and after the last.
        mismatch: builds the exception raised when the stored fingerprint differs (given the
            stored one); default: a :class:`CheckpointError` naming the file.
        optional: parts that a checkpoint may lack (they then keep their fresh state).
        desc, unit: the progress bar's label and unit.
    """

    def __init__(self, path: str | os.PathLike, parts: Mapping[str, Stateful], fingerprint: Any, total: int,
                 every: int = 1, mismatch: Callable[[Any], Exception] | None = None,
                 optional: tuple[str, ...] = (), desc: str = "train", unit: str = "step"):
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"total must be an int >= 1, got {total!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        clash = [name for name in parts if name in _RESERVED]
        if clash:
            raise ValueError(f"parts: the names {clash} are reserved for the checkpoint's own keys")
        self.path = Path(path)
        self.parts = dict(parts)
        self.fingerprint = fingerprint
        self.total, self.every = total, every
        self.mismatch = mismatch
        self.optional = tuple(optional)
        self.desc, self.unit = desc, unit
        #: steps done (after :meth:`resume`: those of the checkpoint)
        self.step = 0
        #: the caller's state stored with the last checkpoint (after :meth:`resume`: the loaded one)
        self.extra: dict[str, Any] = {}

    def resume(self) -> bool:
        """Load the checkpoint if there is one; True if it was loaded (``step``, ``extra``,
        parts and random states now are those of the checkpoint), False for a fresh run.

        Raises:
            CheckpointError: not a checkpoint of this loop, or a part is missing from it;
            the ``mismatch`` exception: its fingerprint differs from this run's.
        """
        if not self.path.is_file():
            return False
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: torch raises several kinds
            raise CheckpointError(f"{self.path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                                  "delete it to start afresh") from e
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: not a checkpoint of nar.base.training (format {FORMAT}); "
                                  "was it written by an older version? delete it to start afresh")
        if state["fingerprint"] != self.fingerprint:
            if self.mismatch is not None:
                raise self.mismatch(state["fingerprint"])
            raise CheckpointError(f"{self.path}: was written by a run with {state['fingerprint']}, this run "
                                  f"has {self.fingerprint}; use another output directory or delete it")
        absent = [name for name in self.parts if state.get(name) is None and name not in self.optional]
        if absent:
            raise CheckpointError(f"{self.path}: holds no state of {absent}; delete it to start afresh")
        for name, part in self.parts.items():
            if state.get(name) is not None:
                part.load_state_dict(state[name])
        _set_rng_state(state["rng"])
        self.step, self.extra = int(state["step"]), dict(state["extra"])
        return True

    def save(self, extra: Mapping[str, Any] | None = None) -> None:
        """Write the checkpoint of the current step (atomically)."""
        if extra is not None:
            self.extra = dict(extra)
        save_torch({"format": FORMAT, "step": self.step, "fingerprint": self.fingerprint, "rng": _rng_state(),
                    "extra": self.extra, **{name: part.state_dict() for name, part in self.parts.items()}},
                   self.path)

    def run(self, step_fn: Callable[[int], Mapping[str, float] | None],
            extra: Callable[[], Mapping[str, Any]] | None = None,
            after_save: Callable[[int, Mapping[str, float]], None] | None = None,
            progress: bool | None = True) -> int:
        """Call ``step_fn(step)`` for the remaining steps; returns the steps done (``total``).

        ``step_fn`` returns numbers to show on the progress bar (or None). After every
        ``every``-th step and the last one the checkpoint is written, with ``extra()`` as the
        caller's state, then ``after_save(step, stats)`` runs (logging, evaluation): a kill
        during it loses nothing. ``progress``: the tqdm bar on stderr (None: only on a terminal).
        """
        bar = tqdm(total=self.total, initial=min(self.step, self.total), desc=self.desc, unit=self.unit,
                   file=sys.stderr, dynamic_ncols=True, disable=None if progress is None else not progress)
        try:
            while self.step < self.total:
                stats = dict(step_fn(self.step) or {})
                self.step += 1
                bar.update(1)
                if stats:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
                if self.step % self.every == 0 or self.step == self.total:
                    self.save(extra() if extra is not None else None)
                    if after_save is not None:
                        after_save(self.step, stats)
        finally:
            bar.close()
        return self.step
