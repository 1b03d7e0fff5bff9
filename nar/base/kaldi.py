"""Kaldi/ESPnet maps and data directories (part of the base layer, :mod:`nar.base`).

A data directory holds ``wav.scp`` (``<recording> <path>``), ``text`` (``<utt> <words>``),
``utt2spk``, ``spk2utt`` and optionally ``segments``
(``<utt> <recording> <start> <end>``) — each one line per key, keys sorted in byte
order (``LC_ALL=C sort``), ``spk2utt`` derived from ``utt2spk``. Utterance ids must be
speaker-prefixed (``<spk>-<index>``) so that sorting by utterance also sorts by speaker.

Relative audio paths in ``wav.scp`` are read relative to the current directory (ESPnet
recipes run from the recipe directory). Entries that are commands (``... |``) or Kaldi
archive offsets (``foo.ark:123``) are not checked for existence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from nar.base.files import write_lines

REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


class DataDirError(ValueError):
    """A data directory is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class DataDir:
    """The contents of a data directory (values as written, keys sorted)."""

    wav_scp: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]]
    segments: dict[str, tuple[str, float, float]] | None = None
    extra: dict[str, dict[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- files


def read_kaldi_map(path: str | os.PathLike, allow_empty_value: bool = False, skip_blank_lines: bool = False,
                   require_entries: bool = False, error: type[Exception] = DataDirError) -> dict[str, str]:
    """Read ``<key> <value>`` lines (``wav.scp``, ``text``, ``utt2spk``, ...) into a dict in
    file order; the value is the rest of the line, stripped.

    Args:
        path: the file.
        allow_empty_value: a key alone on its line maps to ``""`` (an empty transcript)
            instead of being an error.
        skip_blank_lines: blank lines are skipped instead of being an error.
        require_entries: a file without any entry is an error.
        error: the exception class raised (a family's own ``ValueError`` subclass).

    Raises:
        ``error``: missing file, blank line, duplicate key, key without a value, no entries;
            the message names the file and the line.
    """
    if not os.path.isfile(path):
        raise error(f"{path}: file missing")
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if skip_blank_lines:
                    continue
                raise error(f"{path}:{lineno}: empty line")
            key, value = (line.split(None, 1) + [""])[:2]
            value = value.strip()
            if key in mapping:
                raise error(f"{path}:{lineno}: duplicate key {key!r}")
            if not value and not allow_empty_value:
                raise error(f"{path}:{lineno}: key {key!r} has no value (expected '<key> <value>')")
            mapping[key] = value
    if require_entries and not mapping:
        raise error(f"{path}: no entries")
    return mapping


def write_kaldi_map(path: str, mapping: Mapping[str, object]) -> None:
    """Write ``<key> <value>`` lines sorted by key (byte order), atomically."""
    for key in mapping:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}: key {key!r} is empty or contains whitespace")
    lines = []
    for key in sorted(mapping, key=_byte_key):
        value = mapping[key]
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        lines.append(f"{key} {value}")
    write_lines(path, lines)


def _byte_key(key: str) -> bytes:
    return key.encode("utf-8")


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert ``utt2spk``: speaker → its utterances, both sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk, key=_byte_key):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt, key=_byte_key)}


def write_data_dir(path: str, wav_scp: Mapping[str, str], text: Mapping[str, str],
                   utt2spk: Mapping[str, str],
                   segments: Mapping[str, tuple[str, float, float]] | None = None,
                   extra: Mapping[str, Mapping[str, object]] | None = None) -> None:
    """Write a data directory (``spk2utt`` derived), sorted; ``extra`` adds files such as
    ``utt2dur``. Does not validate: call :func:`validate_data_dir` afterwards."""
    os.makedirs(path, exist_ok=True)
    write_kaldi_map(os.path.join(path, "wav.scp"), wav_scp)
    write_kaldi_map(os.path.join(path, "text"), text)
    write_kaldi_map(os.path.join(path, "utt2spk"), utt2spk)
    write_kaldi_map(os.path.join(path, "spk2utt"), spk2utt_from_utt2spk(utt2spk))
    seg_path = os.path.join(path, "segments")
    if segments is not None:
        write_kaldi_map(seg_path, {k: (r, f"{s:.3f}", f"{e:.3f}") for k, (r, s, e) in segments.items()})
    elif os.path.exists(seg_path):
        os.remove(seg_path)
    for name, mapping in (extra or {}).items():
        write_kaldi_map(os.path.join(path, name), mapping)


def read_data_dir(path: str, validate: bool = True) -> DataDir:
    """Read a data directory (validated first unless ``validate=False``)."""
    if validate:
        validate_data_dir(path, check_audio=False)
    seg_path = os.path.join(path, "segments")
    segments = None
    if os.path.exists(seg_path):
        segments = {}
        for utt, value in read_kaldi_map(seg_path).items():
            rec, start, end = value.split()
            segments[utt] = (rec, float(start), float(end))
    extra = {name: read_kaldi_map(os.path.join(path, name))
             for name in ("utt2dur", "reco2dur") if os.path.exists(os.path.join(path, name))}
    return DataDir(
        wav_scp=read_kaldi_map(os.path.join(path, "wav.scp")),
        text=read_kaldi_map(os.path.join(path, "text"), allow_empty_value=True),
        utt2spk=read_kaldi_map(os.path.join(path, "utt2spk")),
        spk2utt={k: v.split() for k, v in read_kaldi_map(os.path.join(path, "spk2utt")).items()},
        segments=segments, extra=extra)


# --------------------------------------------------------------------------- validation


def _check_sorted(path: str, keys: list[str]) -> None:
    for a, b in zip(keys, keys[1:]):
        if _byte_key(a) > _byte_key(b):
            raise DataDirError(f"{path}: not sorted: {a!r} comes before {b!r} "
                               "(sort with LC_ALL=C sort)")


def _check_same_keys(path_a: str, a: Mapping, path_b: str, b: Mapping, what: str) -> None:
    only_a = sorted(set(a) - set(b))
    if only_a:
        raise DataDirError(f"{path_a}: {len(only_a)} {what} not in {path_b}, e.g. {only_a[0]!r}")
    only_b = sorted(set(b) - set(a))
    if only_b:
        raise DataDirError(f"{path_b}: {len(only_b)} {what} not in {path_a}, e.g. {only_b[0]!r}")


def _audio_path(value: str) -> str | None:
    """The file a ``wav.scp`` value names, or None for a command / archive offset."""
    value = value.strip()
    if value.endswith("|") or len(value.split()) != 1:
        return None
    if ":" in value and value.rsplit(":", 1)[1].isdigit():
        return None
    return value


def validate_data_dir(path: str, check_audio: bool = True) -> None:
    """Check a data directory; raise :class:`DataDirError` naming the file and problem.

    Checks: required files exist; no duplicate keys; keys sorted; no empty transcript;
    the same utterances in ``text``, ``utt2spk`` and ``wav.scp`` (or ``segments``, whose
    recordings must be in ``wav.scp``); ``spk2utt`` is ``utt2spk`` inverted; utterance
    order is consistent with speaker order; with ``check_audio`` every audio file exists.
    """
    if not os.path.isdir(path):
        raise DataDirError(f"{path}: data directory missing")
    files = {name: os.path.join(path, name) for name in REQUIRED_FILES + ("segments",)}
    for name in REQUIRED_FILES:
        if not os.path.isfile(files[name]):
            raise DataDirError(f"{files[name]}: file missing")
    maps = {name: read_kaldi_map(files[name], allow_empty_value=(name == "text"))
            for name in REQUIRED_FILES}
    has_segments = os.path.isfile(files["segments"])
    if has_segments:
        maps["segments"] = read_kaldi_map(files["segments"])
    for name, mapping in maps.items():
        _check_sorted(files[name], list(mapping))
    for utt, words in maps["text"].items():
        if not words.strip():
            raise DataDirError(f"{files['text']}: empty transcript for {utt!r}")
    utts = maps["segments"] if has_segments else maps["wav.scp"]
    utt_file = files["segments"] if has_segments else files["wav.scp"]
    _check_same_keys(files["text"], maps["text"], utt_file, utts, "utterance(s)")
    _check_same_keys(files["utt2spk"], maps["utt2spk"], files["text"], maps["text"], "utterance(s)")
    if has_segments:
        for utt, value in maps["segments"].items():
            fields = value.split()
            if len(fields) != 3:
                raise DataDirError(f"{files['segments']}: {utt!r} needs '<recording> <start> <end>'")
            if fields[0] not in maps["wav.scp"]:
                raise DataDirError(f"{files['segments']}: recording {fields[0]!r} of {utt!r} "
                                   f"not in {files['wav.scp']}")
    expected = {spk: " ".join(us) for spk, us in spk2utt_from_utt2spk(maps["utt2spk"]).items()}
    found = {spk: " ".join(v.split()) for spk, v in maps["spk2utt"].items()}
    if expected != found:
        bad = sorted(set(expected.items()) ^ set(found.items()))[0][0]
        raise DataDirError(f"{files['spk2utt']}: does not match {files['utt2spk']} "
                           f"(speaker {bad!r}); regenerate it from utt2spk")
    pairs = list(maps["utt2spk"].items())
    for (u1, s1), (u2, s2) in zip(pairs, pairs[1:]):
        if _byte_key(s1) > _byte_key(s2):
            raise DataDirError(f"{files['utt2spk']}: sorted by utterance but not by speaker "
                               f"({u1!r}→{s1!r} before {u2!r}→{s2!r}); use speaker-prefixed "
                               "utterance ids")
    if check_audio:
        for rec, value in maps["wav.scp"].items():
            audio = _audio_path(value)
            if audio is not None and not os.path.isfile(audio):
                raise DataDirError(f"{files['wav.scp']}: audio file of {rec!r} missing: {audio}")
