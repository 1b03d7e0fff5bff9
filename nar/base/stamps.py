"""Stage stamps: a finished stage is skipped only if every input it read is unchanged.

A recipe stage that skips work because its output exists (or is newer than one of its inputs)
serves stale results when another input changes: a ``wav.scp`` pointed at other audio, an audio
file re-recorded, a ``--min_duration`` changed. A stamp records, when the stage finishes, the
signature of everything the stage read; the next run compares the current signature with it and
reruns, saying why, unless they are equal.

The signature:

- each named input file (``wav.scp``, ``text``, ``utt2spk``, a config, ...): its size, its
  ``mtime_ns`` and the SHA-256 of its content; it changed when the content differs (a ``touch``
  alone is not a change). A missing file is recorded as missing, so its appearance is a change;
- the audio files a data dir references (many, large): size and ``mtime_ns`` only (a ``stat``);
  any difference is a change (a file rewritten with the same size has a new mtime);
- the stage's options (a dict of JSON values): any difference is a change;
- optionally the stage's outputs (small text files, signed like the inputs, when the stamp is
  written): an output edited or deleted since is a change too.

The stamp is a JSON file written atomically (:mod:`nar.base.files`) when the stage succeeds; an
unreadable or foreign stamp means "rerun", with the reason. ``python -m nar.base.stamps
check|write`` does the same for stages whose skip decision is made in bash.

Part of the base layer (:mod:`nar.base`): the standard library and :mod:`nar.base.files` only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nar.base.files import write_json

__all__ = ["STAMP_FORMAT", "StageStamp", "StampError", "audio_files_of_scp", "file_signature", "signature"]

#: version of the stamp's JSON layout; a stamp of another version is not trusted (rerun)
STAMP_FORMAT = 1

#: at most this many examples are named in one reason
_EXAMPLES = 1


class StampError(ValueError):
    """A stamp file that cannot be trusted (unreadable, not JSON, another layout)."""


# --------------------------------------------------------------------------- signatures


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_signature(path: str | os.PathLike, content: bool = True) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"[, "sha256"]}`` of a file, or ``{"path", "missing": True}``.

    ``content``: also hash the content (for small text files; audio files are only stat'ed).
    """
    path = Path(os.path.abspath(path))
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {"path": _printable(str(path)), "missing": True}
    sig: dict[str, Any] = {"path": _printable(str(path)), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if content:
        sig["sha256"] = _sha256(path)
    return sig


def _printable(path: str) -> str:
    """``path`` as JSON can store it: bytes that are not UTF-8 (kept by ``surrogateescape``) as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _normalise(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as they read back from JSON (tuples become lists, keys strings), so a fresh dict
    and a stamped one compare equal."""
    return json.loads(json.dumps(dict(options), sort_keys=True))


def signature(inputs: Mapping[str, str | os.PathLike] | None = None, options: Mapping[str, Any] | None = None,
              audio_files: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """The signature of a stage's inputs now (see the module's documentation).

    Args:
        inputs: name → path of the small files the stage reads (hashed); the names appear in the
            reasons of :meth:`StageStamp.changes`.
        options: the stage's options (JSON values).
        audio_files: the (many, large) files referenced by the inputs: stat'ed only; relative
            paths are made absolute against the current directory.
    """
    audio = {}
    for p in audio_files:
        p = os.path.abspath(p)
        key = _printable(p)
        if key not in audio:
            audio[key] = _stat(p)
    return {
        "inputs": {name: file_signature(path) for name, path in (inputs or {}).items()},
        "options": _normalise(options or {}),
        "audio": audio,
    }


def audio_files_of_scp(path: str | os.PathLike) -> list[str]:
    """The files a ``wav.scp`` (or any ``<key> <path>`` list) references, absolute, in order.

    ``<key> <path>`` gives the path; ``<key> <ark>:<offset>`` the archive; a command
    (``... |``) references no file (its text is in the ``wav.scp`` signature). Lenient (the
    stage's own reading reports what is wrong): lines it cannot parse are skipped, bytes that
    are not UTF-8 kept (``surrogateescape``: the path still names the file); a missing file
    gives no paths.
    """
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    files = []
    for raw in data.splitlines():
        fields = raw.decode("utf-8", errors="surrogateescape").split()
        if len(fields) != 2:
            continue  # blank, a command, or a key without a value
        value = fields[1]
        if value.endswith("|"):
            continue
        head, _, tail = value.rpartition(":")
        if head and tail.isdigit():
            value = head
        files.append(os.path.abspath(value))
    return files


# --------------------------------------------------------------------------- comparison


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _example(items: list[str]) -> str:
    return (": " if len(items) == 1 else ", e.g. ") + ", ".join(items[:_EXAMPLES])


def _file_changes(kind: str, old: Mapping[str, dict], new: Mapping[str, dict]) -> list[str]:
    """Reasons for the named files of ``new`` that differ from ``old`` (``kind``: "" for inputs,
    "output " for outputs)."""
    reasons = []
    for name, now in new.items():
        was = old.get(name)
        if was is None:
            reasons.append(f"{kind}{name} was not recorded by the stamped run" if kind
                           else f"{name} was not an input of the stamped run")
            continue
        if was.get("path") != now.get("path"):
            reasons.append(f"{kind}{name} is now {now.get('path')} (was {was.get('path')})")
        elif was.get("missing") and now.get("missing"):
            continue
        elif now.get("missing"):
            reasons.append(f"{kind}{name} removed" if not kind else f"{kind}{name} missing: {now.get('path')}")
        elif was.get("missing"):
            reasons.append(f"{kind}{name} added")
        elif was.get("sha256") != now.get("sha256"):
            what = ("changed since the stage wrote it" if kind else "changed")
            reasons.append(f"{kind}{name} {what} (sha256 differs)")
    for name in old:
        if name not in new:
            reasons.append(f"{kind}{name} is no longer recorded" if kind else f"{name} is no longer an input")
    return reasons


def _show(value: Any) -> str:
    """An option's value in a reason: strings quoted (an empty one must show), the rest as Python prints it."""
    return repr(value) if isinstance(value, str) else str(value)


def _option_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    reasons = []
    for key, value in new.items():
        if key not in old:
            reasons.append(f"option {key} added (= {_show(value)})")
        elif old[key] != value:
            reasons.append(f"option {key} {_show(old[key])} -> {_show(value)}")
    reasons += [f"option {key} removed (was {_show(old[key])})" for key in old if key not in new]
    return reasons


def _audio_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changed, added, dropped = [], [], []
    for path, now in new.items():
        if path not in old:
            added.append(path)
            continue
        was = old[path]
        if was == now:
            continue
        if now is None:
            why = "missing"
        elif was is None:
            why = "appeared"
        else:
            why = ", ".join(w for w, a, b in (("size", was[0], now[0]), ("mtime", was[1], now[1])) if a != b)
        changed.append(f"{path} ({why})")
    dropped = [p for p in old if p not in new]
    reasons = []
    if changed:
        reasons.append(f"{_count(len(changed), 'audio file')} changed{_example(changed)}")
    if added:
        reasons.append(f"{_count(len(added), 'audio file')} newly referenced{_example(added)}")
    if dropped:
        reasons.append(f"{_count(len(dropped), 'audio file')} no longer referenced{_example(dropped)}")
    return reasons


# --------------------------------------------------------------------------- the stamp


class StageStamp:
    """The stamp of one stage's run, a JSON file at ``path`` (e.g. ``dump/raw/train/.done``).

    Usage::

        stamp = StageStamp(dst / ".done")
        sig = signature(inputs, options, audio_files)   # before the work: what it reads
        reasons = stamp.changes(sig, outputs=outputs)
        if not reasons:
            ...  # skip: f"inputs unchanged since {stamp.written()}"
        stamp.remove()                                   # the outputs are being rewritten
        ...  # the work
        stamp.write(sig, outputs=outputs)                # after it succeeded
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        """The stamp's content; None when there is no stamp.

        Raises:
            StampError: the file exists but is not a stamp of this format (the message says why).
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StampError(f"stamp {self.path} unreadable ({e})") from e
        if not raw.strip():
            raise StampError(f"stamp {self.path} is empty (a bare completion marker of an older version)")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise StampError(f"stamp {self.path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or data.get("format") != STAMP_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise StampError(f"stamp {self.path} has format {found!r}, expected {STAMP_FORMAT}")
        for key, kind in (("inputs", dict), ("options", dict), ("audio", dict), ("outputs", dict)):
            if not isinstance(data.get(key), kind):
                raise StampError(f"stamp {self.path} lacks its {key!r} section")
        return data

    def written(self) -> str:
        """When the stamp was written (local time, as stored), or "" without a readable stamp."""
        try:
            data = self.read()
        except StampError:
            return ""
        return str(data.get("written", "")) if data else ""

    def changes(self, sig: Mapping[str, Any] | None = None, *, inputs: Mapping[str, str | os.PathLike] | None = None,
                options: Mapping[str, Any] | None = None, audio_files: Iterable[str | os.PathLike] = (),
                outputs: Mapping[str, str | os.PathLike] | None = None) -> list[str]:
        """Why the stage must rerun: ``[]`` when the stamp matches the current inputs.

        Give a :func:`signature` computed before the work, or ``inputs``/``options``/
        ``audio_files`` to compute it here. ``outputs`` (name → path): the stage's outputs are
        compared with their stamped signature as well (an output deleted or edited since is a
        reason). Each reason is one human-readable line ("wav.scp changed (sha256 differs)",
        "option min_duration 0.1 -> 0.5", "no stamp: first run", ...).
        """
        if sig is None:
            sig = signature(inputs, options, audio_files)
        try:
            old = self.read()
        except StampError as e:
            return [f"{e}: rerun"]
        if old is None:
            return ["no stamp: first run"]
        reasons = _file_changes("", old["inputs"], sig["inputs"])
        reasons += _option_changes(old["options"], sig["options"])
        reasons += _audio_changes(old["audio"], sig["audio"])
        if outputs is not None:
            now = {name: file_signature(path) for name, path in outputs.items()}
            reasons += _file_changes("output ", old["outputs"], now)
        return reasons

    def write(self, sig: Mapping[str, Any] | None = None, *, inputs: Mapping[str, str | os.PathLike] | None = None,
              options: Mapping[str, Any] | None = None, audio_files: Iterable[str | os.PathLike] = (),
              outputs: Mapping[str, str | os.PathLike] | None = None, tool: str = "") -> None:
        """Record the stage's inputs (``sig``, best computed before the work, so that an input
        changed while the stage ran is seen next time) and its ``outputs`` as they are now;
        atomically: the stamp exists complete or not at all."""
        if sig is None:
            sig = signature(inputs, options, audio_files)
        data = {
            "format": STAMP_FORMAT,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "tool": tool,
            "inputs": sig["inputs"],
            "options": sig["options"],
            "outputs": {name: file_signature(path) for name, path in (outputs or {}).items()},
            "audio": sig["audio"],
        }
        write_json(self.path, data)

    def remove(self) -> None:
        """Delete the stamp (before a stage rewrites its outputs: a kill must not leave a stamp
        beside half-rewritten outputs)."""
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- command line


def _pairs(items: list[str], flag: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"{flag} {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nar.base.stamps",
        description="Stamps of recipe stages whose skip decision is made in bash: 'check' exits 0 when "
                    "the stamp matches the current inputs (skip the stage), 1 when the stage must run "
                    "(the reasons on stderr); 'write' records the inputs after the stage succeeded "
                    "(give it the same arguments).",
        epilog="Example: python -m nar.base.stamps check --stamp exp/x/.stamp.json --input config=conf/a.yaml "
               "--audio_scp dump/raw/train/wav.scp --option args='--foo 1' --output shape=exp/x/shape")
    p.add_argument("action", choices=["check", "write"])
    p.add_argument("--stamp", required=True, help="the stamp file (JSON)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                   help="a small input file (hashed); repeatable")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option; repeatable")
    p.add_argument("--audio_scp", action="append", default=[], metavar="PATH",
                   help="a wav.scp whose audio files are inputs too (stat'ed; the scp itself is hashed); repeatable")
    p.add_argument("--output", action="append", default=[], metavar="NAME=PATH",
                   help="an output file that must still be as written; repeatable")
    p.add_argument("--what", default="", help="the stage's name in the messages (default: the stamp's directory)")
    args = p.parse_args(argv)
    inputs = _pairs(args.input, "--input", p)
    for scp in args.audio_scp:
        inputs.setdefault(scp, scp)
    options = _pairs(args.option, "--option", p)
    audio = [f for scp in args.audio_scp for f in audio_files_of_scp(scp)]
    outputs = _pairs(args.output, "--output", p)
    stamp = StageStamp(args.stamp)
    what = args.what or str(stamp.path.parent)
    sig = signature(inputs, options, audio)
    if args.action == "write":
        stamp.write(sig, outputs=outputs, tool="nar.base.stamps")
        return 0
    reasons = stamp.changes(sig, outputs=outputs)
    if not reasons:
        print(f"{what}: inputs unchanged since {stamp.written()}, skipped", file=sys.stderr)
        return 0
    print(f"{what}: rerun: " + "; ".join(reasons), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
