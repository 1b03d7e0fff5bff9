"""One writer per directory: an experiment directory (training) or a decode output directory.

Two trainings started into the same ``exp/<tag>`` both ran before this lock existed (a log with
73 epoch results for 40 epochs, checkpoints of two runs mixed). :class:`DirectoryLock` is taken
by every training and decoding entry point on the directory it writes::

    with DirectoryLock("exp/asr_train_ctc_char", "training"):
        ...

- the lock file is ``<dir>/.nar_lock``; it holds who has it (pid, host, what, since, command);
- a second writer stops at once with :class:`DirectoryLockedError`, whose message names the
  holder's pid, host, task and start time;
- the lock is an ``fcntl.flock`` on that file, which the kernel drops when its holder dies, so a
  killed run never blocks the next one: a lock file left by a dead process is taken over with a
  warning that names the dead pid;
- the file stays (emptied) on release: deleting it would let two processes lock two different
  files of the same name.

Part of the base layer (:mod:`nar.base`): the standard library only.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Union

__all__ = ["DirectoryLock", "DirectoryLockedError", "LOCK_NAME"]

logger = logging.getLogger(__name__)

#: name of the lock file inside the locked directory
LOCK_NAME = ".nar_lock"


class DirectoryLockedError(RuntimeError):
    """Another live process writes the directory; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('what', '?')}, "
            f"since {when})")


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (created if missing) for one writer.

    Args:
        directory: the directory written (e.g. ``exp/asr_train_ctc_char``).
        what: what the holder does, shown to a second writer ("training", "decoding").
    """

    def __init__(self, directory: Union[str, os.PathLike], what: str):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._file = None
        #: the holder found dead when the lock was taken (its record), else None
        self.took_over: Optional[dict] = None

    def acquire(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        locked = True
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = self._parse(f.read())
            f.close()
            raise DirectoryLockedError(
                f"{self.directory}: already in use by {_describe(holder)}; two writers would mix "
                f"their checkpoints and logs. Wait for it to finish, stop it (kill {holder.get('pid', '<pid>')}), "
                f"or write elsewhere") from None
        except OSError as err:  # a file system without flock: fall back on the recorded pid
            locked = False
            logger.warning(f"{self.path}: file locking is not supported here ({err}); relying on the pid it records")
        f.seek(0)
        previous = self._parse(f.read())
        if previous.get("pid") is not None:
            pid = previous["pid"]
            if (not locked and previous.get("host") == socket.gethostname() and isinstance(pid, int)
                    and pid != os.getpid() and _pid_alive(pid)):
                f.close()
                raise DirectoryLockedError(
                    f"{self.directory}: already in use by {_describe(previous)} (recorded in {self.path}); "
                    f"wait for it, stop it, or remove {self.path} if that process is not a nar-speech job")
            # the kernel dropped the holder's flock: it died without releasing (killed or crashed)
            self.took_over = previous
            logger.warning(f"{self.directory}: took over the lock left by {_describe(previous)}, which is no "
                           "longer running (killed or crashed); its outputs are resumed or redone")
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.time(),
                   "command": " ".join(sys.argv)}, f)
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
        finally:
            try:
                fcntl.flock(self._file, fcntl.LOCK_UN)
            except OSError:
                pass
            self._file.close()
            self._file = None

    @staticmethod
    def _parse(text: str) -> dict:
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
