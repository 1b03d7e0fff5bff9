"""Training that resumes after any kill, through ESPnet's trainer, unforked.

ESPnet's ``Trainer.run`` ends each epoch by writing, in this order, ``checkpoint.pth`` (model,
optimisers, schedulers, reporter: what ``--resume true`` reads), ``<N>epoch.pth`` (the model),
the symbolic links ``latest.pth`` and ``<phase>.<key>.best.pth``, and (at the end) the averaged
models. Each ``torch.save`` truncates its file first, so a SIGKILL during a write (the OOM killer,
a preempted cluster job) left a 0-byte or half-written ``checkpoint.pth`` on which every rerun
failed with ``EOFError: Ran out of input``; a kill between the writes left an epoch whose
checkpoint names a model file that does not exist. Here:

- :func:`atomic_torch_saves` makes every ``torch.save`` to a path atomic while a training runs:
  the bytes go to a temporary file beside the target (:func:`nar.base.files.temporary_name`),
  are flushed to disk and renamed over it. A kill leaves the previous complete file.
- :func:`repair_interrupted_epoch`, before a resumed run, completes what a kill between the
  writes left undone: the last epoch's model file (restored from ``checkpoint.pth``, which holds
  the same weights), ``latest.pth`` and the best-model links. A ``checkpoint.pth`` that cannot be
  loaded (written by an older version, a full disk, a bad copy) stops the run with
  :class:`TrainerCheckpointError`, which names the file, the reason and the newest intact epoch
  model, instead of ESPnet's bare ``EOFError``.
- :class:`ResumableTaskMixin` puts both around an ESPnet task's ``main``, together with the
  one-writer lock (:class:`nar.base.lock.DirectoryLock`) on ``--output_dir``.

Resumed runs are exact: ESPnet seeds each epoch with ``seed + epoch`` and rebuilds its batches
from that seed, so a run killed any number of times ends with the weights of an uninterrupted
one (tested with SIGKILL at random moments and during the writes).

Part of the base layer (:mod:`nar.base`): torch and the standard library; it knows the layout of
ESPnet's outputs but never imports espnet.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from nar.base.files import atomic_path, temporary_name
from nar.base.lock import DirectoryLock

__all__ = ["ResumableTaskMixin", "TrainerCheckpointError", "atomic_torch_saves", "repair_interrupted_epoch"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class TrainerCheckpointError(RuntimeError):
    """``checkpoint.pth`` of an experiment cannot be resumed from; the message says why and what to do."""


@contextlib.contextmanager
def atomic_torch_saves() -> Iterator[None]:
    """While the block runs, ``torch.save(obj, path)`` writes ``path`` atomically (and fsyncs it).

    Saves to file objects are passed through unchanged. Nested use is a no-op.
    """
    original = torch.save
    if getattr(original, "_nar_atomic", False):
        yield
        return

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(f, (str, os.PathLike)):
            return original(obj, f, *args, **kwargs)
        with atomic_path(f) as tmp:
            original(obj, tmp, *args, **kwargs)
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())

    save._nar_atomic = True  # type: ignore[attr-defined]
    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def _load(path: Path) -> Any:
    """torch.load on the CPU, memory-mapped where the format allows (a checkpoint.pth holds the
    optimiser state too: several times the model)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=False)


def _loads(path: Path) -> bool:
    try:
        _load(path)
    except Exception:
        return False
    return True


def _best_epoch(stats: dict, phase: str, key: str, mode: str) -> Optional[int]:
    """ESPnet's ``Reporter.get_best_epoch`` on the reporter's state: the first epoch of the best
    value (a stable sort), or None where some epoch lacks the value."""
    values = []
    for epoch, phases in stats.items():
        try:
            values.append((epoch, float(phases[phase][key])))
        except (KeyError, TypeError, ValueError):
            return None
    if not values:
        return None
    values.sort(key=(lambda v: v[1]) if mode == "min" else (lambda v: -v[1]))
    return values[0][0]


def _link(link: Path, target: str) -> bool:
    """Make ``link`` a symbolic link to ``target`` (a name in the same directory); True if changed."""
    if link.is_symlink() and os.readlink(link) == target:
        return False
    tmp = temporary_name(link)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return True


def repair_interrupted_epoch(output_dir: PathLike,
                             best_model_criterion: Sequence[Sequence[str]] = ()) -> list[str]:
    """Complete the end-of-epoch outputs of an ESPnet training killed between its writes.

    Args:
        output_dir: the experiment directory (``--output_dir``).
        best_model_criterion: ESPnet's ``--best_model_criterion`` triples (phase, key, min|max).

    Returns:
        what was repaired (also logged as warnings); empty when nothing was needed or there is no
        ``checkpoint.pth``.

    Raises:
        TrainerCheckpointError: ``checkpoint.pth`` exists but cannot be loaded or is not ESPnet's.
    """
    out = Path(output_dir)
    ckpt = out / "checkpoint.pth"
    repaired: list[str] = []
    tmp = temporary_name(ckpt)
    if tmp.exists():
        tmp.unlink()
        repaired.append(f"removed {tmp}, the part of checkpoint.pth a killed run was writing")
    if not ckpt.exists():
        return repaired
    try:
        states = _load(ckpt)
        if not (isinstance(states, dict) and {"model", "reporter"} <= set(states)):
            raise ValueError(f"holds {type(states).__name__} "
                             f"{sorted(states)[:6] if isinstance(states, dict) else ''}, "
                             "not ESPnet's trainer state (model, reporter, optimizers, ...)")
        epoch = int(states["reporter"]["epoch"])
        stats = states["reporter"].get("stats", {})
    except Exception as err:
        intact = sorted((int(p.name[: -len("epoch.pth")]), p) for p in out.glob("*epoch.pth")
                        if p.name[: -len("epoch.pth")].isdigit() and _loads(p))
        newest = (f"the newest intact epoch model is {intact[-1][1]}: to go on from its weights (without the "
                  f"optimiser state), train into a new --output_dir with --init_param {intact[-1][1]}"
                  if intact else "no intact <N>epoch.pth is left")
        size = ckpt.stat().st_size
        raise TrainerCheckpointError(
            f"{ckpt}: cannot resume from it ({type(err).__name__}: {err}; {size} bytes). It was damaged "
            f"outside the trainer's atomic writes (a version before them, a full disk, an interrupted "
            f"copy). Move it away to start this training over; {newest}.") from err
    for name in sorted(p.name for p in out.glob(".*.tmp")):
        (out / name).unlink()
        repaired.append(f"removed {name}, a file a killed run was writing")
    if epoch <= 0:
        return repaired
    model_file = out / f"{epoch}epoch.pth"
    if not model_file.exists() or not _loads(model_file):
        with atomic_torch_saves():
            torch.save(states["model"], model_file)
        repaired.append(f"restored {model_file.name} from checkpoint.pth (the run was killed between the two)")
    if _link(out / "latest.pth", model_file.name):
        repaired.append(f"latest.pth -> {model_file.name}")
    for phase, key, mode in best_model_criterion:
        best = _best_epoch(stats, phase, key, mode)
        if best is not None and (out / f"{best}epoch.pth").exists():
            if _link(out / f"{phase}.{key}.best.pth", f"{best}epoch.pth"):
                repaired.append(f"{phase}.{key}.best.pth -> {best}epoch.pth")
    for item in repaired:
        logger.warning(f"{out}: resuming an interrupted run: {item}")
    return repaired


def _process_rank(args: Any) -> Optional[int]:
    """This process's global rank where a launcher says it (ESPnet args, torchrun, Slurm, MPI)."""
    rank = getattr(args, "dist_rank", None)
    if isinstance(rank, int):
        return rank
    for var in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


class ResumableTaskMixin:
    """Put before an ESPnet ``AbsTask`` subclass: ``class MyTask(ResumableTaskMixin, ASRTask)``.

    ``main`` takes the one-writer lock on ``--output_dir`` and, with ``--resume true``, repairs an
    interrupted epoch before ESPnet resumes; ``main_worker`` (which also runs in each spawned
    multi-GPU worker) makes the trainer's saves atomic. Only the process of rank 0 (or of an unknown
    rank: a plain run) locks and repairs; the other ranks of a multi-node run write nothing there.
    """

    @classmethod
    def main(cls, args=None, cmd=None):  # noqa: D102 - ESPnet's signature
        if args is None:
            args = cls.get_parser().parse_args(cmd)  # type: ignore[attr-defined]
        output_dir = getattr(args, "output_dir", None)
        if getattr(args, "print_config", False) or output_dir is None or _process_rank(args) not in (None, 0):
            return super().main(args=args)  # type: ignore[misc]
        what = "statistics collection" if getattr(args, "collect_stats", False) else "training"
        with DirectoryLock(output_dir, what):
            if what == "training" and getattr(args, "resume", False):
                repair_interrupted_epoch(output_dir, getattr(args, "best_model_criterion", None) or ())
            return super().main(args=args)  # type: ignore[misc]

    @classmethod
    def main_worker(cls, args):  # noqa: D102 - ESPnet's signature
        with atomic_torch_saves():
            return super().main_worker(args)  # type: ignore[misc]
