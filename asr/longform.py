"""Decoding many inputs of any length: duration batching, and long audio cut into overlapping
windows whose results are stitched back at token level.

Pure functions on lengths and token lists (no model), used by :class:`asr.Speech2Text`:

* :func:`plan_segments` cuts every input longer than ``max_seconds`` into windows of
  ``max_seconds`` that overlap by at least ``overlap_seconds`` (the last window is moved back
  to end at the end of the input, so it is a (nearly) full window too), starting on the
  model's frame grid. Between two neighbouring windows the cut
  point is the middle of their overlap: each window *owns* the time from the cut before it to
  the cut after it, and keeps only its tokens whose centre falls there. Tokens near a window's
  edges (where the model saw no context) are thus never used when the overlap is wider than the
  context a token needs.
* :func:`pack_batches` sorts segments by duration (longest first) and packs them into batches
  whose padded duration (items x longest item) stays under a budget.
* :func:`stitch` puts the kept tokens of an input's windows together in whole-file time, with
  monotonic timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: ``max_seconds`` / ``overlap_seconds`` value asking :func:`resolve_window` to choose
AUTO = "auto"
#: padded seconds of audio per decoding batch (the default of Speech2Text and the decode CLIs)
DEFAULT_BATCH_SECONDS = 120.0
#: window when the training lengths are unknown (a typical ESPnet/OWSM training segment)
FALLBACK_MAX_SECONDS = 30.0
#: widest automatic overlap, and the automatic overlap's share of the window
MAX_AUTO_OVERLAP, AUTO_OVERLAP_SHARE = 4.0, 0.25
#: shortest automatic window
MIN_AUTO_SECONDS = 4.0


def resolve_window(max_seconds: float | str | None, overlap_seconds: float | str,
                   training_seconds: float | None) -> tuple[float | None, float, str]:
    """Window length and overlap for long inputs -> ``(max_seconds, overlap_seconds, why)``.

    ``max_seconds="auto"``: the longest training utterance (``training_seconds``, rounded up to
    0.1 s, at least 4 s): attention decoders degrade on inputs longer than they were trained on,
    while shorter windows cost a CTC model little (the measurement: RESULTS_LOG.md of
    egs/synth_en/asr1, the 10-minute long-audio run). Unknown training lengths: 30 s. ``overlap_seconds="auto"``: a quarter of the window, at most 4 s. None: never cut.
    Explicit numbers are used as given (and checked by :func:`plan_segments`).
    """
    why = "given"
    if isinstance(max_seconds, str):
        if max_seconds != AUTO:
            raise ValueError(f"max_seconds must be a number, None or {AUTO!r}, got {max_seconds!r}")
        if training_seconds is not None and training_seconds > 0:
            max_seconds = max(MIN_AUTO_SECONDS, math.ceil(training_seconds * 10 - 1e-6) / 10)
            why = f"auto: the longest training utterance ({training_seconds:.2f} s)"
        else:
            max_seconds = FALLBACK_MAX_SECONDS
            why = f"auto: training lengths unknown, {FALLBACK_MAX_SECONDS:g} s"
    if isinstance(overlap_seconds, str):
        if overlap_seconds != AUTO:
            raise ValueError(f"overlap_seconds must be a number or {AUTO!r}, got {overlap_seconds!r}")
        window = FALLBACK_MAX_SECONDS if max_seconds is None else max_seconds
        overlap_seconds = min(MAX_AUTO_OVERLAP, AUTO_OVERLAP_SHARE * window)
    overlap_seconds = float(overlap_seconds)
    if max_seconds is not None:
        check_window(max_seconds, overlap_seconds)
    return max_seconds, overlap_seconds, why


def check_window(max_seconds: float, overlap_seconds: float) -> None:
    """Raise ValueError unless ``max_seconds > 0`` and ``0 <= overlap_seconds < max_seconds / 2``
    (every window then owns some time of its own; inf: never cut)."""
    if math.isinf(max_seconds) and max_seconds > 0:
        return
    if not max_seconds > 0 or not 0 <= overlap_seconds < max_seconds / 2:
        raise ValueError(
            f"need max_seconds > 0 and 0 <= overlap_seconds < max_seconds / 2, got "
            f"max_seconds={max_seconds}, overlap_seconds={overlap_seconds}"
        )


@dataclass(frozen=True)
class Segment:
    """One decodable piece of an input: samples ``start:end`` of input ``input_index``.

    Tokens whose centre (seconds, whole-file time) lies in ``[keep_from, keep_to)`` are kept.
    An input that was not cut has a single segment owning all time (``-inf, inf``).
    """

    input_index: int
    start: int
    end: int
    keep_from: float = -math.inf
    keep_to: float = math.inf

    @property
    def num_samples(self) -> int:
        return self.end - self.start

    @property
    def windowed(self) -> bool:
        """True for a window of a cut input (it owns only part of the time)."""
        return not (math.isinf(self.keep_from) and math.isinf(self.keep_to))


def plan_segments(
    num_samples: Sequence[int],
    sample_rate: int,
    max_seconds: float | None,
    overlap_seconds: float,
    align: int = 1,
) -> list[Segment]:
    """Segments of every input, in input order (the windows of an input in time order).

    Args:
        num_samples: length of each input in samples.
        sample_rate: Hz.
        max_seconds: inputs longer than this are cut into windows of this length
            (None or inf: never cut).
        overlap_seconds: overlap of neighbouring windows; ``0 <= overlap < max_seconds / 2``
            so that every window owns some time of its own.
        align: window starts are multiples of this many samples. Give the model's samples per
            output frame (hop x subsampling): the windows then see the frame grid of the whole
            input, so a model with a local receptive field gives in each window exactly the
            frames it gives on the whole input. The last window then ends at the input's end
            and may be up to ``align`` samples shorter than the others.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_seconds is None or math.isinf(max_seconds):
        return [Segment(i, 0, int(n)) for i, n in enumerate(num_samples)]
    if align < 1:
        raise ValueError(f"align must be >= 1 sample, got {align}")
    check_window(max_seconds, overlap_seconds)
    window = int(round(max_seconds * sample_rate))
    hop = (window - int(round(overlap_seconds * sample_rate))) // align * align
    if hop <= 0:
        raise ValueError(
            f"max_seconds={max_seconds} is too short for overlap_seconds={overlap_seconds} at "
            f"align={align} samples"
        )
    segments = []
    for i, n in enumerate(num_samples):
        n = int(n)
        if n <= window:
            segments.append(Segment(i, 0, n))
            continue
        starts = [0]
        while starts[-1] + window < n:
            starts.append(starts[-1] + hop)
        # the last window ends at the end of the input (its start rounded up to the grid)
        starts[-1] = -(-(n - window) // align) * align
        ends = [s + window for s in starts[:-1]] + [n]
        # Cut in the middle of each overlap, snapped to the frame grid plus a quarter frame:
        # token timestamps are multiples of half a frame, so no token centre ties with a cut.
        cuts = [
            (round((starts[k + 1] + ends[k]) / 2 / align) * align + align / 4) / sample_rate
            for k in range(len(starts) - 1)
        ]
        bounds = [-math.inf] + cuts + [math.inf]
        for k, s in enumerate(starts):
            segments.append(Segment(i, s, ends[k], bounds[k], bounds[k + 1]))
    return segments


def pack_batches(
    durations: Sequence[float], budget_seconds: float, max_batch_size: int | None = None
) -> list[list[int]]:
    """Indices of ``durations`` packed into batches, longest first.

    A batch's padded duration (its size times its longest item) stays within
    ``budget_seconds``; an item longer than the budget gets a batch of its own. Every index
    appears exactly once. ``max_batch_size`` optionally caps the items per batch.
    """
    if budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    order = sorted(range(len(durations)), key=lambda i: durations[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = durations[batch[0]]
            full = max_batch_size is not None and len(batch) >= max_batch_size
            if not full and (len(batch) + 1) * longest <= budget_seconds:
                batch.append(i)
                continue
        batches.append([i])
    return batches


@dataclass(frozen=True)
class Piece:
    """A segment's decoding result: token ids, per-token (start, end) seconds relative to the
    segment, and its score."""

    segment: Segment
    token_ids: tuple[int, ...]
    timestamps: tuple[tuple[float, float], ...]
    score: float


def stitch(pieces: Sequence[Piece], sample_rate: int) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...], float]:
    """Join the pieces of one input (in time order) into (token ids, timestamps, score).

    Timestamps are shifted to whole-file time; a piece keeps the tokens whose centre is in its
    segment's ``[keep_from, keep_to)``. Where two windows' kept tokens overlap in time at a
    join, the later token's start is moved to the earlier token's end, so starts and ends are
    non-decreasing. The score is the sum of the pieces' scores (each covers its whole window,
    overlap included: a ranking aid, not a log-probability of the output).
    """
    ids: list[int] = []
    stamps: list[tuple[float, float]] = []
    score = 0.0
    for piece in pieces:
        seg = piece.segment
        if len(piece.timestamps) != len(piece.token_ids):
            raise ValueError(
                f"input {seg.input_index}, samples {seg.start}-{seg.end}: stitching needs one "
                f"timestamp per token, got {len(piece.timestamps)} for {len(piece.token_ids)} tokens"
            )
        offset = seg.start / sample_rate
        score += piece.score
        for tok, (s, e) in zip(piece.token_ids, piece.timestamps):
            s, e = s + offset, e + offset
            if not seg.keep_from <= (s + e) / 2 < seg.keep_to:
                continue
            if stamps:
                s = max(s, stamps[-1][1])
            ids.append(int(tok))
            stamps.append((round(s, 3), round(max(e, s), 3)))
    return tuple(ids), tuple(stamps), score


__all__ = ["AUTO", "Segment", "Piece", "resolve_window", "check_window", "plan_segments", "pack_batches", "stitch"]
