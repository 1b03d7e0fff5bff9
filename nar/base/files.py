"""Atomic file writes: a file that exists under its final name is complete.

Every package resumes long jobs by skipping outputs that already exist (corpus audio, token
dumps, synthesised waves, checkpoints), so an output must never appear under its final name
half-written. These helpers write to a temporary name in the same directory and rename it over
the target (``os.replace``, atomic on POSIX within one file system); if the writer raises, the
temporary file is removed and the target is left as it was.

Part of the base layer (:mod:`nar.base`): the standard library and torch only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch

__all__ = ["atomic_open", "atomic_path", "check_utf8", "save_torch", "temporary_name", "write_json", "write_lines",
           "write_text"]


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary name used for ``path``: hidden, beside it, ending in ``.tmp``.

    Fixed per target, so the debris of a killed writer is overwritten and renamed away by the
    next write of the same file instead of piling up; never ending in the target's suffix, so a
    listing of ``*.wav`` or ``*.npy`` never picks up a half-written file. Writers that choose a
    format from the file name need it given: ``soundfile.write(..., format="WAV")``,
    ``sox ... -t wav``; ``numpy.save`` takes the file object of :func:`atomic_open` (given a
    name it would append ``.npy``).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The parent directory is created. For writers that take a file name::

        with atomic_path(out / "x.wav") as tmp:
            soundfile.write(tmp, audio, 16000, format="WAV")  # the name ends in .tmp

    On an exception the temporary file is deleted and the exception propagates; ``path`` is
    untouched (an older complete version stays). A block that writes nothing is an error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: the writer created no file at {tmp}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[TextIO]:
    """``open(path, mode)`` whose content appears under ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    if mode == "wb":
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write one line per item (a newline appended to each) atomically."""
    with atomic_open(path) as f:
        f.writelines(line + "\n" for line in lines)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, sort_keys: bool = False) -> None:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept, trailing newline) atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically (checkpoints, tokenizer weights)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def check_utf8(path: str | os.PathLike, error: type[Exception] = ValueError) -> None:
    """Refuse a text file that is not UTF-8, or that starts with a byte order mark (it would become
    part of the first key of a Kaldi map), before anything reads it.

    Raises:
        ``error``: ``<path>:<line>: not valid UTF-8: byte 0x.. at byte offset N of the file
            (column C of the line, after '...'); re-encode ...``. A missing file is left to the reader.
    """
    if not os.path.isfile(path):
        return
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        raise error(f"{path}:1: starts with a UTF-8 byte order mark, which would become part of the first "
                    f"key; remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' {path}")
    try:
        data.decode("utf-8")
        return
    except UnicodeDecodeError as e:
        bad = e.start
    line_start = data.rfind(b"\n", 0, bad) + 1
    lineno = data.count(b"\n", 0, bad) + 1
    good = data[line_start:bad].decode("utf-8", errors="replace")
    raise error(f"{path}:{lineno}: not valid UTF-8: byte 0x{data[bad]:02x} at byte offset {bad} of the file "
                f"(column {len(good) + 1} of the line, after {good[-20:]!r}); re-encode the file as UTF-8, "
                f"e.g. iconv -f latin1 -t utf-8 {path} > {path}.utf8 && mv {path}.utf8 {path}")
