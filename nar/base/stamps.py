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

Jobs that make one output per item and resume after a kill (token archives, generated waves)
use :class:`ItemStamp`: the job's setup (a model's or tokenizer's files, see
:func:`directory_signature` and :func:`model_file_signature`; options) and each item's own
inputs, so that a rerun redoes everything when the setup changed and only the changed items
otherwise.

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

__all__ = ["HASH_LIMIT", "ItemPlan", "ItemStamp", "STAMP_FORMAT", "StageStamp", "StampError", "audio_files_of_scp",
           "directory_signature", "file_signature", "model_file_signature", "normalise", "option_changes",
           "signature", "signature_changes"]

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


# --------------------------------------------------------------------------- models, directories, items

#: files larger than this (model weights) are signed by size and ``mtime_ns`` only: hashing
#: hundreds of megabytes on every run would cost seconds, and a rewritten file has a new mtime
HASH_LIMIT = 64 << 20


def model_file_signature(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`file_signature` of a file loaded as weights or configuration: content hashed up to
    :data:`HASH_LIMIT` bytes (bigger: size and mtime), plus ``"target"``, the file a symlink
    resolves to (a ``valid.acc.ave.pth`` link pointed at another average is a change)."""
    path = Path(os.path.abspath(path))
    try:
        small = path.stat().st_size <= HASH_LIMIT
    except OSError:
        small = False
    sig = file_signature(path, content=small)
    real = os.path.realpath(path)
    if real != str(path) and not sig.get("missing"):
        sig["target"] = _printable(real)
    return sig


def directory_signature(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: model_file_signature}`` of the files directly in ``directory`` (a saved tokenizer:
    its config and weights). Hidden files (stamps, locks, temporary files of atomic writes) are
    left out and subdirectories not entered (a training state under ``train/``); a missing
    directory gives ``{}``."""
    directory = Path(directory)
    try:
        names = sorted(p.name for p in directory.iterdir() if not p.name.startswith(".") and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {_printable(name): model_file_signature(directory / name) for name in names}


def normalise(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings), so that a fresh
    signature and a stamped one compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def option_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["option seconds 0.4 -> 0.2", "option foo added (= 1)", ...]`` (both normalised)."""
    return _option_changes(old, new)


def _is_file_signature(value: Any) -> bool:
    return isinstance(value, Mapping) and "path" in value and ("missing" in value or "size" in value)


def _file_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if old.get("missing") and new.get("missing"):
        return ""
    if old.get("path") != new.get("path"):
        return f"is now {new.get('path')} (was {old.get('path')})"
    if new.get("missing"):
        return f"missing ({new.get('path')})"
    if old.get("missing"):
        return "appeared"
    if old.get("target") != new.get("target"):
        return f"now resolves to {new.get('target') or new.get('path')} (was {old.get('target') or old.get('path')})"
    if "sha256" in old and "sha256" in new:
        return "changed (sha256 differs)" if old["sha256"] != new["sha256"] else ""
    what = [w for w, key in (("size", "size"), ("mtime", "mtime_ns")) if old.get(key) != new.get(key)]
    return f"changed ({', '.join(what)})" if what else ""


def signature_changes(old: Any, new: Any, name: str = "") -> list[str]:
    """Why the nested signature ``new`` differs from ``old``: one line per differing leaf.

    Both are JSON values (see :func:`normalise`): dicts are compared key by key (names joined
    with ``/``), file signatures (:func:`file_signature`, :func:`model_file_signature`) by
    content when both are hashed, else by size and mtime; a dict under the key ``options`` as
    :func:`option_changes` does; anything else by equality (``"seed 0 -> 3"``).
    """
    label = name or "value"
    if _is_file_signature(old) and _is_file_signature(new):
        why = _file_difference(old, new)
        return [f"{label} {why}"] if why else []
    if isinstance(old, Mapping) and isinstance(new, Mapping) and not (_is_file_signature(old) or _is_file_signature(new)):
        if name.rpartition("/")[2] == "options":
            return [name.rpartition("/")[0] + (": " if "/" in name else "") + r for r in option_changes(old, new)]
        reasons = []
        for key, value in new.items():
            sub = f"{name}/{key}" if name else str(key)
            if key not in old:
                reasons.append(f"{sub} added" if isinstance(value, Mapping) else f"{sub} added (= {_show(value)})")
            else:
                reasons += signature_changes(old[key], value, sub)
        reasons += [f"{name}/{key} removed" if name else f"{key} removed" for key in old if key not in new]
        return reasons
    return [] if old == new else [f"{label} {_show(old)} -> {_show(new)}"]


class ItemPlan:
    """What a rerun of a per-item job must redo (:meth:`ItemStamp.plan`).

    Attributes:
        reset: why every existing output is redone (``[]``: they are checked one by one).
        changed: key -> why, for the existing outputs whose item's inputs changed.
        removed: keys of existing outputs whose item is no longer listed.
        outputs: why the job's listing files must be written again (``[]``: as stamped).
        complete: the stamp says the job finished with these inputs (the listings included).
        written: when the stamp was written ("" without one).
    """

    def __init__(self, reset, changed, removed, outputs, complete, written, setup_changed=False):
        self.reset: list[str] = reset
        #: whether ``reset`` lists changes of the setup (else: there is no usable stamp)
        self.setup_changed: bool = setup_changed
        self.changed: dict[str, str] = changed
        self.removed: list[str] = removed
        self.outputs: list[str] = outputs
        self.complete: bool = complete
        self.written: str = written

    def stale(self, present: Iterable[str]) -> list[str]:
        """The existing outputs (keys among ``present``) to delete before the job resumes."""
        if self.reset:
            return list(present)
        return [k for k in present if k in self.changed or k in set(self.removed)]

    def log(self, logger, where: str, setup: str, unit: str = "utterances", total: int = 0) -> None:
        """The plan in the log: why everything, or which items, are redone."""
        if self.reset and self.setup_changed:
            logger.info(f"{where}: {setup} changed: {'; '.join(self.reset)}; redoing all {total} {unit}")
        elif self.reset:
            logger.info(f"{where}: {'; '.join(self.reset)}; redoing all {total} {unit}")
        if self.changed:
            shown = ", ".join(f"{k} ({why})" for k, why in list(self.changed.items())[:3])
            more = ", ..." if len(self.changed) > 3 else ""
            logger.info(f"{where}: {len(self.changed)} {unit} changed since they were done, e.g. {shown}{more}; "
                        "redoing them")
        if self.removed:
            shown = ", ".join(self.removed[:3]) + (", ..." if len(self.removed) > 3 else "")
            logger.info(f"{where}: {len(self.removed)} {unit} no longer listed, their outputs removed: {shown}")


class ItemStamp:
    """The stamp of a resumable per-item job (a token archive, a directory of generated waves).

    It records the job's ``setup`` (what every item depends on: a model's or tokenizer's files,
    options) and each item's own inputs (a caption, an audio file's stat, a seed), as JSON at
    ``path``. It is written twice: before the work starts, with ``complete: false`` (a killed run
    resumes: an output present is kept when its item is recorded with the current inputs), and
    when the job has finished (``complete: true``, with the signatures of its listing files).
    The caller deletes the outputs :meth:`ItemPlan.stale` names *before* it writes the first
    stamp, so an output present is always one made from what the stamp records.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> tuple[dict[str, Any] | None, str]:
        """(the stamp, "") or (None, why there is none)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, f"no stamp {self.path.name}"
        except OSError as e:
            return None, f"stamp {self.path} unreadable ({e})"
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, f"stamp {self.path} is not valid JSON ({e})"
        if (not isinstance(data, dict) or data.get("format") != STAMP_FORMAT or not isinstance(data.get("items"), dict)
                or "setup" not in data):
            return None, f"stamp {self.path} has another layout"
        return data, ""

    def plan(self, setup: Mapping[str, Any], items: Mapping[str, Any], present: Iterable[str],
             outputs: Mapping[str, str | os.PathLike] | None = None) -> ItemPlan:
        """Compare the current ``setup`` and ``items`` (key -> the item's inputs, JSON values)
        with the stamp; ``present``: the keys whose output exists; ``outputs``: the listing
        files (name -> path) a complete job wrote."""
        setup, items = normalise(setup), normalise(items)
        present = list(present)
        data, why = self.read()
        removed = [k for k in present if k not in items]
        if data is None:
            # outputs without a stamp: an older version wrote them, from inputs nobody recorded
            reset = [f"{why}: the {len(present)} existing outputs cannot be checked against their inputs"] if present else []
            return ItemPlan(reset, {}, removed, [], False, "")
        written = str(data.get("written", ""))
        if data["setup"] != setup:
            reasons = signature_changes(data["setup"], setup) or ["the setup differs"]
            return ItemPlan(reasons, {}, removed, [], False, written, setup_changed=True)
        changed = {}
        for key in present:
            if key not in items:
                continue
            old = data["items"].get(key)
            if old is None:
                changed[key] = "not recorded by the stamped run"
            elif old != items[key]:
                changed[key] = "; ".join(signature_changes(old, items[key])) or "inputs differ"
        complete = bool(data.get("complete"))
        out_reasons = []
        if complete and outputs is not None:
            now = {name: file_signature(path) for name, path in outputs.items()}
            out_reasons = _file_changes("output ", data.get("outputs") or {}, now)
        return ItemPlan([], changed, removed, out_reasons, complete and not out_reasons and not changed
                        and not removed and set(items) == set(data["items"]), written)

    def write(self, setup: Mapping[str, Any], items: Mapping[str, Any], complete: bool,
              outputs: Mapping[str, str | os.PathLike] | None = None, tool: str = "") -> None:
        """Record ``setup`` and ``items`` (and, when ``complete``, the ``outputs`` as they are now), atomically."""
        write_json(self.path, {
            "format": STAMP_FORMAT,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "tool": tool,
            "complete": bool(complete),
            "setup": normalise(setup),
            "outputs": {name: file_signature(path) for name, path in (outputs or {}).items()},
            "items": normalise(items),
        }, indent=None)

    def remove(self) -> None:
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
