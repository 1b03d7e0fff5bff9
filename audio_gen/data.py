"""Reading audio lists and writing token archives for the generation recipes.

Audio lists are Kaldi/ESPnet data dirs (``wav.scp`` with ``<utt> <path>``, optional
``segments``); relative paths are read from the current directory, as in ESPnet recipes.
Token archives are what ESPnet's data loader reads with the ``npy`` file type: one
``<out>/data/<utt>.npy`` per utterance and ``<out>/<name>.scp`` mapping ``<utt>`` to it, plus
a shape file ``<out>/<name>_shape`` (``<utt> <T>,<K>``) for ESPnet's length batching.
Writing is resumable, and an entry is reused only while every input it was made from is
unchanged: the archive's stamp ``<out>/.stamp.json`` (:class:`nar.base.stamps.ItemStamp`)
records the tokenizer's identity (its files' signatures: a refitted or replaced tokenizer
re-encodes everything) and, per utterance, the audio file's path, size and ``mtime_ns`` and the
segment times. An utterance whose audio or segment changed is encoded again; one no longer in
the list leaves the archive (its ``.npy`` deleted, the scp and shape files rewritten). Each
file is written to a temporary name and renamed, so a kill never leaves a truncated archive
entry, and a killed run resumes with the entries it wrote.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from nar.base.checks import check_waveform
from nar.base.files import atomic_open
from nar.base.kaldi import read_kaldi_map
from nar.base.stamps import ItemStamp, file_signature

logger = logging.getLogger(__name__)


class AudioListError(ValueError):
    """A data dir / audio list is malformed or names unusable audio (the message says which)."""


@dataclass(frozen=True)
class AudioItem:
    key: str
    path: str
    start: float = 0.0
    end: Optional[float] = None


def as_mono_wave(wav, name: str, allow_silence: bool = True) -> torch.Tensor:
    """A float32 (N,) waveform in [-1, 1] from a tensor or array (N,), (1, N) or (N, 1); ``name`` is in errors.

    Delegates to :func:`nar.base.checks.check_waveform`: int16/int32 samples are rescaled; a float
    waveform peaking beyond 1.5 (integer samples stored as float) is an error that says so.

    Raises TypeError for other types or dtypes, ValueError for more channels, no samples, NaN/Inf
    samples, the integer scale in a float array, or (``allow_silence=False``) all zeros.
    """
    return check_waveform(wav, name, allow_silence=allow_silence)


def read_audio_list(data_dir: str | Path) -> list[AudioItem]:
    """The utterances of a data dir (``wav.scp`` [+ ``segments``]) in file order."""
    data_dir = Path(data_dir)
    scp = data_dir / "wav.scp"
    if not scp.is_file():
        raise AudioListError(f"{data_dir}: no wav.scp; is this a Kaldi/ESPnet data directory?")
    wavs = read_kaldi_map(scp, skip_blank_lines=True, error=AudioListError)
    for key, value in wavs.items():
        if value.endswith("|"):
            raise AudioListError(f"{scp}: {key}: piped commands are not supported here; "
                                 "write the audio to files first")
    seg_file = data_dir / "segments"
    if not seg_file.is_file():
        return [AudioItem(k, v) for k, v in wavs.items()]
    items = []
    for key, value in read_kaldi_map(seg_file, skip_blank_lines=True, error=AudioListError).items():
        rec, *times = value.split()
        if rec not in wavs or len(times) != 2:
            raise AudioListError(f"{seg_file}: {key}: expected '<utt> <recording in wav.scp> <start> <end>'")
        items.append(AudioItem(key, wavs[rec], float(times[0]), float(times[1])))
    return items


def load_item(item: AudioItem, sample_rate: int) -> torch.Tensor:
    """Read one item as mono float32 (N,) at ``sample_rate`` (resampled if needed)."""
    if not os.path.isfile(item.path):
        raise AudioListError(f"{item.key}: audio file {item.path} does not exist")
    try:
        info = sf.info(item.path)
        start = int(round(item.start * info.samplerate))
        stop = int(round(item.end * info.samplerate)) if item.end is not None else None
        wav, sr = sf.read(item.path, start=start, stop=stop, dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise AudioListError(f"{item.key}: cannot read {item.path} ({e})") from None
    if wav.shape[1] > 1:
        logger.warning(f"{item.path}: {wav.shape[1]} channels, averaged to mono")
    x = torch.from_numpy(np.ascontiguousarray(wav.mean(1)))
    if x.numel() == 0:
        raise AudioListError(f"{item.key}: {item.path} is empty")
    if sr != sample_rate:
        x = torchaudio.functional.resample(x, sr, sample_rate)
    return x


class TokenArchive:
    """``<out>/data/<utt>.npy`` + ``<out>/<name>.scp`` + ``<out>/<name>_shape`` (see module docs)."""

    def __init__(self, out_dir: str | Path, name: str = "codes"):
        self.out_dir = Path(out_dir)
        self.name = name
        (self.out_dir / "data").mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise AudioListError(f"utterance id {key!r} cannot be used as a file name")
        return self.out_dir / "data" / f"{key}.npy"

    def done(self, key: str) -> bool:
        return self.path(key).is_file()

    def write(self, key: str, codes: np.ndarray) -> None:
        """Store one utterance's codes: (T,) or (K, T) integers, kept as int16 when they fit."""
        codes = np.asarray(codes)
        dtype = np.int16 if codes.size == 0 or codes.max() < 2 ** 15 else np.int32
        with atomic_open(self.path(key), "wb") as f:
            np.save(f, codes.astype(dtype))

    def finish(self, keys: list[str]) -> Path:
        """Write the scp and shape files for ``keys`` (all must be done)."""
        missing = [k for k in keys if not self.done(k)]
        if missing:
            raise AudioListError(f"{self.out_dir}: {len(missing)} utterances have no codes (e.g. {missing[:3]})")
        scp = self.out_dir / f"{self.name}.scp"
        with atomic_open(scp) as f_scp, atomic_open(self.out_dir / f"{self.name}_shape") as f_shape:
            for k in keys:
                arr = np.load(self.path(k), mmap_mode="r")
                f_scp.write(f"{k} {self.path(k).resolve()}\n")
                shape = (arr.shape[-1],) + tuple(arr.shape[:-1])  # time first, as ESPnet's shape files
                f_shape.write(f"{k} {','.join(str(s) for s in shape)}\n")
        return scp

    def read(self, key: str) -> np.ndarray:
        return np.load(self.path(key))


def iter_batches(items: list[AudioItem], sample_rate: int, batch_seconds: float,
                 max_items: int = 64) -> Iterator[list[tuple[AudioItem, torch.Tensor]]]:
    """Load items in list order, yielding batches whose padded duration stays within
    ``batch_seconds`` (a single longer item forms its own batch)."""
    batch: list[tuple[AudioItem, torch.Tensor]] = []
    longest = 0
    for item in items:
        wav = load_item(item, sample_rate)
        n = wav.numel()
        if batch and (max(longest, n) * (len(batch) + 1) > batch_seconds * sample_rate or len(batch) >= max_items):
            yield batch
            batch, longest = [], 0
        batch.append((item, wav))
        longest = max(longest, n)
    if batch:
        yield batch


#: the stamp of a token archive (see the module docs)
ARCHIVE_STAMP = ".stamp.json"


def audio_signature(item: AudioItem) -> dict:
    """What an utterance's audio input is: the file (absolute path, size, ``mtime_ns``; not
    hashed: audio is large) and the segment read from it."""
    return {"audio": file_signature(item.path, content=False), "segment": [item.start, item.end]}


def _archive_entries(archive: TokenArchive) -> list[str]:
    """Keys of the entries in the archive (``data/<key>.npy``; temporary files excluded)."""
    return sorted(p.name[:-4] for p in (archive.out_dir / "data").glob("*.npy")
                  if not p.name.startswith(".") and p.is_file())


def encode_to_archive(items: list[AudioItem], archive: TokenArchive, sample_rate: int, batch_seconds: float,
                      encode, desc: str, identity: Optional[dict] = None) -> Path:
    """Encode the items not yet in ``archive`` (or encoded from other inputs) in batches and
    write them; then the scp/shape files.

    ``encode(batch)`` takes ``[(item, wav (N,)), ...]`` and returns one integer array per item.
    ``identity``: what identifies the tokenizer (JSON values, e.g. the signatures of its files);
    with ``sample_rate`` it is the archive's setup: any change re-encodes every utterance. See
    the module docs for the stamp and what each rerun redoes.
    """
    out = archive.out_dir
    stamp = ItemStamp(out / ARCHIVE_STAMP)
    setup = {"tokenizer": identity or {}, "options": {"sample_rate": sample_rate}}
    inputs = {it.key: audio_signature(it) for it in items}
    listings = {"scp": out / f"{archive.name}.scp", "shape": out / f"{archive.name}_shape"}
    present = _archive_entries(archive)
    plan = stamp.plan(setup, inputs, present, outputs=listings)
    done = set(present)
    if plan.complete and all(it.key in done for it in items):
        logger.info(f"{out}: inputs unchanged since {plan.written}, skipped ({len(items)} utterances)")
        return listings["scp"]
    plan.log(logger, str(out), "the tokenizer", total=len(items))
    stale = plan.stale(present)
    if stale or not plan.complete:
        # from here until finish() the scp/shape files would not describe the archive
        for path in listings.values():
            path.unlink(missing_ok=True)
    for key in stale:
        archive.path(key).unlink(missing_ok=True)
    # recorded before any entry is written: every entry present from now on was made from these inputs
    stamp.write(setup, inputs, complete=False, tool="audio_gen.data.encode_to_archive")
    todo = [it for it in items if not archive.done(it.key)]
    if len(todo) < len(items):
        logger.info(f"{out}: {len(items) - len(todo)} of {len(items)} utterances already done")
    bar = tqdm(total=len(todo), desc=desc, unit="utt", file=sys.stderr)
    for batch in iter_batches(todo, sample_rate, batch_seconds):
        for (it, _), codes in zip(batch, encode(batch)):
            archive.write(it.key, codes)
        bar.update(len(batch))
    bar.close()
    scp = archive.finish([it.key for it in items])
    stamp.write(setup, inputs, complete=True, outputs=listings, tool="audio_gen.data.encode_to_archive")
    return scp


def pad_collate(batch, pad: Optional[dict] = None) -> tuple[list[str], dict[str, torch.Tensor]]:
    """ESPnet collate function for token data: pads each data name of ``batch`` (a list of
    ``(utt, {name: array})``) along its last (time) axis with ``pad.get(name, 0)`` and adds
    ``<name>_lengths``. Arrays may be (T,) or (K, T) (all items of a name alike)."""
    pad = pad or {}
    uttids = [u for u, _ in batch]
    out: dict[str, torch.Tensor] = {}
    for name in batch[0][1]:
        arrays = [torch.as_tensor(np.asarray(d[name]).astype(np.int64)) for _, d in batch]
        lens = torch.tensor([a.shape[-1] for a in arrays], dtype=torch.long)
        shape = arrays[0].shape[:-1]
        for u, a in zip(uttids, arrays):
            if a.shape[:-1] != shape:
                raise ValueError(f"utterance {u}: {name} has shape {tuple(a.shape)}, others {tuple(shape)} + (T,)")
        padded = torch.full((len(arrays),) + tuple(shape) + (int(lens.max()),), pad.get(name, 0), dtype=torch.long)
        for i, a in enumerate(arrays):
            padded[i, ..., : a.shape[-1]] = a
        out[name], out[f"{name}_lengths"] = padded, lens
    return uttids, out
