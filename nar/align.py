"""CTC alignment: batched Viterbi forced alignment, token spans, CASS-NAT trigger masks and
error-based alignment sampling (ESA).

Dimension legend: B batch, T frames, L tokens, V vocabulary (blank included), S = 2L + 1 CTC
states (blank, y1, blank, y2, ..., yL, blank), N samples per utterance.

Frame alignments are (B, T) integer label tensors with ``lengths`` (B,); padded frames hold
``blank``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

try:  # optional: the CPU frame loops of the batched path run faster through NumPy's ufuncs
    import numpy as np
except ImportError:  # pragma: no cover - numpy ships beside torch in practice
    np = None
import torch
import torch.nn.functional as F
from torch import Tensor

from nar.base.checks import check_int, check_lengths, check_number, check_tensor
from nar.base.tensors import length_mask
from nar.ctc import check_log_probs, collapse_mask
from nar.masking import Generators, uniform_noise


#: Tie rules of :func:`forced_align`.
TIE_RULES = ("torchaudio-2.9", "best")
#: Implementations :func:`forced_align` can run (``backend``).
BACKENDS = ("auto", "batched", "torchaudio")


@dataclass(frozen=True)
class TokenSpan:
    """A token of a frame alignment: frames ``[start, end)`` and ``score``, the mean of the given
    frame scores over the span (mean log-prob for the scores of :func:`forced_align`; NaN when no
    frame scores were given)."""

    token: int
    start: int
    end: int
    score: float

    def __len__(self) -> int:
        return self.end - self.start


# --------------------------------------------------------------------------------------------
# Forced alignment
# --------------------------------------------------------------------------------------------
def _check_targets(log_probs: Tensor, lengths: Tensor, targets, target_lengths, blank: int):
    """Validate targets (B, L) / target_lengths (B,); return int64 copies on the device."""
    check_tensor(targets, "targets", 2, "int", "(B, L)")
    batch, frames, vocab = log_probs.shape
    if targets.shape[0] != batch:
        raise ValueError(f"targets must have batch size {batch}, got shape {tuple(targets.shape)}")
    target_lengths = check_lengths(target_lengths, batch, targets.shape[1], "target_lengths",
                                   device=log_probs.device)
    targets = targets.to(device=log_probs.device, dtype=torch.long)
    valid = length_mask(target_lengths, targets.shape[1])
    if bool((valid & ((targets < 0) | (targets >= vocab) | (targets == blank))).any()):  # one sync
        bad = valid & ((targets < 0) | (targets >= vocab))
        if bool(bad.any()):
            b, i = bad.nonzero()[0].tolist()
            raise ValueError(f"targets must be in [0, {vocab}), got targets[{b}, {i}] = {int(targets[b, i])}")
        b, i = (valid & (targets == blank)).nonzero()[0].tolist()
        raise ValueError(f"targets must not contain the blank index {blank}, found at targets[{b}, {i}]")
    repeats = (valid[:, 1:] & (targets[:, 1:] == targets[:, :-1])).sum(1)  # (B,)
    need = target_lengths + repeats
    short = need > lengths
    if bool(short.any()):
        b = int(short.nonzero()[0])
        raise ValueError(
            f"targets[{b}] cannot be aligned: it needs at least {int(need[b])} frames "
            f"({int(target_lengths[b])} tokens + {int(repeats[b])} repeats) but lengths[{b}] = "
            f"{int(lengths[b])}")
    return targets, target_lengths


def _ctc_states(targets: Tensor, target_lengths: Tensor, blank: int, dtype):
    """(B, S) label of each CTC state, and the (L, B) penalty on s - 2 jumps into each token
    (-inf between equal neighbours; None when the batch has no such repeat)."""
    batch, max_l = targets.shape
    states = targets.new_full((batch, 2 * max_l + 1), blank)
    states[:, 1::2] = targets.masked_fill(targets < 0, blank)
    in_target = torch.arange(1, max_l, device=targets.device) < target_lengths[:, None]
    repeat = (targets[:, 1:] == targets[:, :-1]) & in_target  # (B, L - 1)
    if not bool(repeat.any()):
        return states, None
    penalty = torch.zeros((max_l, batch), dtype=dtype, device=targets.device)
    penalty[1:] = torch.where(repeat.T, -math.inf, 0.0)  # repeat.T: (L - 1, B)
    return states, penalty


def _emissions(log_probs: Tensor, states: Tensor) -> Tensor:
    """(T, S, B) log-prob of each CTC state's label per frame.

    States past an item's own S_b = 2 L_b + 1 hold the blank's score. They are harmless: a
    state's score depends only on lower states, and the backtrace starts at S_b - 1 or S_b - 2
    and only moves down."""
    batch, frames, vocab = log_probs.shape
    flat = log_probs.transpose(0, 1).reshape(frames, batch * vocab)  # (T, B * V)
    index = (states + torch.arange(batch, device=states.device)[:, None] * vocab).T.reshape(-1)  # (S * B,)
    return flat.index_select(1, index).view(frames, states.shape[1], batch)  # (T, S, B)


def _viterbi_buffers(emit: Tensor):
    """Score history (T, S + 2, B) with two leading -inf pad rows, and pointer bits."""
    frames, num_states, batch = emit.shape
    scores = emit.new_full((frames, num_states + 2, batch), -math.inf)
    scores[0, 2:4] = emit[0, :2]  # a path starts in the first blank or the first token
    from_prev = torch.zeros((frames, num_states, batch), dtype=torch.bool, device=emit.device)
    from_skip = torch.zeros((frames, num_states // 2, batch), dtype=torch.bool, device=emit.device)
    return scores, from_prev, from_skip


def _viterbi_forward(emit: Tensor, skip_penalty: Optional[Tensor], tie_rule: str):
    """Max-product recursion over (T, S, B) emissions (torch ops: any device and float dtype).

    Returns ``scores`` (T, S + 2, B), ``from_prev`` (T, S, B) bool (state s came from s - 1)
    and ``from_skip`` (T, L, B) bool (odd state s came from s - 2; overrides from_prev).
    ``tie_rule`` is one of :data:`TIE_RULES` (see :func:`forced_align`). The two rules differ
    only when s - 1 and s - 2 tie exactly above s, which does happen on long float32 inputs.
    """
    frames, num_states, batch = emit.shape
    scores, from_prev, from_skip = _viterbi_buffers(emit)
    # Per-frame views (made once, so the loop only runs arithmetic kernels).
    stay = scores[:, 2:].unbind(0)  # state s        (S, B)
    prev = scores[:, 1:-1].unbind(0)  # state s - 1  (S, B)
    skip = scores[:, 1:num_states:2].unbind(0)  # state s - 2 for odd s  (L, B)
    stay_odd, prev_odd = scores[:, 3::2].unbind(0), scores[:, 2:-1:2].unbind(0)  # (L, B)
    emits, fp, fs = emit.unbind(0), from_prev.unbind(0), from_skip.unbind(0)
    fp_odd = from_prev[:, 1::2].unbind(0)  # (L, B)
    best = emit.new_empty((num_states, batch))
    best_odd = best[1::2]  # (L, B) view
    skip_buf, tmp = emit.new_empty((num_states // 2, batch)), emit.new_empty((num_states // 2, batch))
    exact_torchaudio = tie_rule == "torchaudio-2.9"
    for t in range(1, frames):
        torch.maximum(stay[t - 1], prev[t - 1], out=best)  # final for blank states
        torch.gt(prev[t - 1], stay[t - 1], out=fp[t])
        cand = skip[t - 1]
        if skip_penalty is not None:
            cand = torch.add(cand, skip_penalty, out=skip_buf)
        torch.gt(cand, best_odd, out=fs[t])
        if exact_torchaudio:
            torch.maximum(stay_odd[t - 1], cand, out=tmp)
            torch.gt(prev_odd[t - 1], tmp, out=fp_odd[t])
            torch.where(fp_odd[t], prev_odd[t - 1], stay_odd[t - 1], out=best_odd)
            torch.where(fs[t], cand, best_odd, out=best_odd)
        else:
            torch.maximum(best_odd, cand, out=best_odd)
        torch.add(best, emits[t], out=stay[t])
    return scores, from_prev, from_skip


#: dtypes the NumPy versions of the recursion and backtrace run (NumPy has no bfloat16)
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _viterbi_forward_numpy(emit: Tensor, skip_penalty: Optional[Tensor], tie_rule: str):
    """:func:`_viterbi_forward` for a CPU tensor in :data:`_NUMPY_DTYPES`, line by line the
    same elementwise operations (so bit-identical results) as NumPy ufuncs writing into the
    same buffers: a NumPy call costs about a third of a torch op's dispatch, and the loop is
    nothing but such calls (a 500-frame item runs about 4000 of them)."""
    frames, num_states, batch = emit.shape
    scores_t, from_prev_t, from_skip_t = _viterbi_buffers(emit)
    scores, from_prev, from_skip = scores_t.numpy(), from_prev_t.numpy(), from_skip_t.numpy()
    emits = emit.numpy()
    penalty = None if skip_penalty is None else skip_penalty.numpy()
    best = np.empty((num_states, batch), dtype=scores.dtype)
    best_odd = best[1::2]  # (L, B) view
    skip_buf, tmp = np.empty((2, num_states // 2, batch), dtype=scores.dtype)
    exact_torchaudio = tie_rule == "torchaudio-2.9"
    # Per-frame views, made once (iterating an array's first axis makes them in C).
    stay, prev, cand = list(scores[:, 2:]), list(scores[:, 1:-1]), list(scores[:, 1:num_states:2])
    stay_odd, prev_odd = list(scores[:, 3::2]), list(scores[:, 2:-1:2])  # (L, B)
    fp, fp_odd, fs = list(from_prev), list(from_prev[:, 1::2]), list(from_skip)
    maximum, greater, add, copyto = np.maximum, np.greater, np.add, np.copyto
    with np.errstate(all="ignore"):  # inf + -inf, overflow: IEEE results, silent as in torch
        for t in range(1, frames):
            skip = cand[t - 1]
            maximum(stay[t - 1], prev[t - 1], out=best)  # final for blank states
            greater(prev[t - 1], stay[t - 1], out=fp[t])
            if penalty is not None:
                skip = add(skip, penalty, out=skip_buf)
            greater(skip, best_odd, out=fs[t])
            if exact_torchaudio:
                maximum(stay_odd[t - 1], skip, out=tmp)
                greater(prev_odd[t - 1], tmp, out=fp_odd[t])
                copyto(best_odd, stay_odd[t - 1])  # = where(fp_odd, prev_odd, stay_odd)
                copyto(best_odd, prev_odd[t - 1], where=fp_odd[t])
                copyto(best_odd, skip, where=fs[t])  # = where(fs, skip, best_odd)
            else:
                maximum(best_odd, skip, out=best_odd)
            add(best, emits[t], out=stay[t])
    return scores_t, from_prev_t, from_skip_t


def _viterbi_backtrace(scores, from_prev, from_skip, lengths, num_states, use_numpy: bool = False) -> Tensor:
    """(T, B) best state per frame, traced back from each item's last frame (the loop over
    frames in NumPy with ``use_numpy``, for CPU tensors)."""
    frames, _, batch = from_prev.shape
    device = from_prev.device
    step = from_prev.view(torch.int8)  # (T, S, B) how far back the best predecessor is
    step[:, 1::2].masked_fill_(from_skip, 2)
    if bool((lengths < frames).any()):
        beyond = torch.arange(frames, device=device)[:, None, None] >= lengths[None, None, :]
        step.masked_fill_(beyond, 0)  # frames past an item's end keep its final state
    items = torch.arange(batch, device=device)
    last_t = (lengths - 1).clamp(min=0)
    end_blank = scores[last_t, num_states + 1, items]  # state S_b - 1 (+2 pad rows)
    end_label = scores[last_t, num_states.clamp(min=2), items]  # state S_b - 2
    # torchaudio takes the final blank only when it is strictly better.
    final = torch.where((end_blank > end_label) | (num_states == 1), num_states - 1, num_states - 2)
    if use_numpy:
        path = torch.empty((frames, batch), dtype=torch.long)
        rows, steps, columns = path.numpy(), step.numpy(), items.numpy()
        if frames:
            rows[frames - 1] = final.numpy()
        for t in range(frames - 1, 0, -1):
            np.subtract(rows[t], steps[t, rows[t], columns], out=rows[t - 1])
        return path
    path = torch.empty((frames, 1, batch), dtype=torch.long, device=device)
    rows, steps = path.unbind(0), step.unbind(0)
    if frames:
        rows[frames - 1].copy_(final[None, :])
    for t in range(frames - 1, 0, -1):
        torch.sub(rows[t], steps[t].gather(0, rows[t]), out=rows[t - 1])
    return path[:, 0]  # (T, B)


def _batched_labels(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                    blank: int, tie_rule: str, use_numpy: Optional[bool] = None) -> Tensor:
    """(B, T) int64 labels of the batched Viterbi path (padded frames not yet set to blank).

    ``log_probs`` must not require grad. ``use_numpy`` (default: on CPU for the dtypes NumPy
    has) runs the frame loops in NumPy; both versions give the same bits. Raises the
    "probability 0" ``ValueError`` of :func:`forced_align`."""
    batch = log_probs.shape[0]
    if use_numpy is None:
        use_numpy = np is not None and log_probs.device.type == "cpu" and log_probs.dtype in _NUMPY_DTYPES
    num_states = 2 * target_lengths + 1  # (B,)
    states, skip_penalty = _ctc_states(targets, target_lengths, blank, log_probs.dtype)
    emit = _emissions(log_probs, states)  # (T, S, B)
    forward = _viterbi_forward_numpy if use_numpy else _viterbi_forward
    scores, from_prev, from_skip = forward(emit, skip_penalty, tie_rule)
    last_t = (lengths - 1).clamp(min=0)
    items = torch.arange(batch, device=log_probs.device)
    end = torch.maximum(scores[last_t, num_states + 1, items], scores[last_t, num_states, items])
    dead = (end == -math.inf) & (lengths > 0)
    if bool(dead.any()):
        b = int(dead.nonzero()[0])
        raise ValueError(f"log_probs[{b}] gives every alignment of targets[{b}] probability 0")
    path = _viterbi_backtrace(scores, from_prev, from_skip, lengths, num_states, use_numpy)  # (T, B)
    return states.T.gather(0, path).T  # (B, T)


# --------------------------------------------------------------------------------------------
# torchaudio's CPU kernel, one item at a time
# --------------------------------------------------------------------------------------------
#: log-prob dtypes torchaudio's CPU kernel takes (it refuses bfloat16)
_TORCHAUDIO_DTYPES = (torch.float32, torch.float64, torch.float16)


def _torchaudio_paths(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                      blank: int) -> Optional[Tensor]:
    """(B, T) int64 labels from torchaudio's CPU kernel on each item alone (items with no
    targets: all blank; padded frames: blank), or ``None`` when an item's result could differ
    from the batched path's, which must then align the batch.

    The kernel and the batched recursion make the same comparisons on the same sums as long
    as no sum is NaN or infinite, so an item goes to the kernel only when its log-probs are
    finite and no Viterbi score can overflow (T_b times the largest magnitude, with room for
    the rounding of T_b additions, stays below the dtype's maximum). Such an item always has
    an alignment (its length was checked), so the kernel's path is ours. Otherwise they can
    differ: on an item whose every alignment has probability 0 torchaudio returns some path,
    without an error and sometimes with labels read out of bounds, where we raise; with +inf
    the recursions meet NaN, which they order differently.

    The kernel is called as ``torch.ops.torchaudio.forced_align``, the operator that
    ``torchaudio.functional.forced_align`` wraps: the wrapper repeats checks already made here,
    gathers scores we do not use and warns that it is deprecated, which together cost a third
    of the kernel's time on a 500-frame item. :func:`_torchaudio_tie_rule` checks the operator
    against the batched path before it is ever used, and the tests check it against the wrapper.

    ``log_probs``: a contiguous CPU tensor in :data:`_TORCHAUDIO_DTYPES` not requiring grad;
    inputs validated by :func:`forced_align`."""
    kernel = torch.ops.torchaudio.forced_align  # looked up on every call (tests count the calls)
    batch, frames, _ = log_probs.shape
    info = torch.finfo(log_probs.dtype)
    rows = []  # (1, T) int64 each
    for b, (n, m) in enumerate(zip(lengths.tolist(), target_lengths.tolist())):
        item = log_probs[b:b + 1] if batch > 1 else log_probs  # (1, T, V), contiguous; views cost
        if n < frames:
            item = item[:, :n]
        if n:
            low, high = (float(x) for x in torch.aminmax(item))
            if not max(-low, high) * n * math.exp(n * info.eps) < info.max:  # also False for +-inf
                return None
        if m == 0:  # torchaudio refuses an empty target; the only path is all blank
            rows.append(targets.new_full((1, frames), blank))
            continue
        item_targets = targets[b:b + 1] if batch > 1 else targets  # int64: the kernel takes it
        if m < targets.shape[1]:
            item_targets = item_targets[:, :m]
        item_lengths = (lengths[b:b + 1], target_lengths[b:b + 1]) if batch > 1 else (lengths, target_lengths)
        path, _ = kernel(item, item_targets, *item_lengths, blank)
        rows.append(path if n == frames else F.pad(path, (0, frames - n), value=blank))
    return rows[0] if batch == 1 else torch.cat(rows)  # (B, T) int64


def _torchaudio_probes():
    """Small inputs on which the tie rules of :data:`TIE_RULES` give different paths (found by a
    search over log-probs in {0, -1}), plus ties everywhere and a random case: each
    ``(log_probs (1, T, V), targets (1, L), blank)``."""
    quirk = torch.tensor([[[-1.0, -1.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, -1.0]]])  # 2.9: [1, 2, 0]
    uniform = torch.full((1, 7, 3), -math.log(3.0))
    gen = torch.Generator().manual_seed(0)
    noisy = torch.randn((1, 30, 6), generator=gen, dtype=torch.float64).log_softmax(-1).float()
    return [(quirk, torch.tensor([[1, 2]]), 0), (uniform, torch.tensor([[1, 1, 2]]), 0),
            (uniform, torch.tensor([[1, 0, 0]]), 2), (noisy, torch.tensor([[3, 3, 1, 4, 4, 2, 5]]), 0)]


@functools.lru_cache(maxsize=None)
def _torchaudio_tie_rule() -> tuple[Optional[str], str]:
    """``(rule, why)``: the entry of :data:`TIE_RULES` that the installed torchaudio's CPU kernel
    follows on :func:`_torchaudio_probes`, or ``(None, reason)`` when torchaudio is missing, its
    alignment kernel is unavailable, or it follows neither rule. Run once per process."""
    try:
        import torchaudio
        import torchaudio.functional  # noqa: F401
    except Exception as exc:  # not installed, or a build that does not load with this torch
        return None, f"torchaudio cannot be imported ({type(exc).__name__}: {exc})"
    version = getattr(torchaudio, "__version__", "?")
    matches = set(TIE_RULES)
    try:
        for lp, targets, blank in _torchaudio_probes():
            lengths, target_lengths = torch.tensor([lp.shape[1]]), torch.tensor([targets.shape[1]])
            theirs = _torchaudio_paths(lp, lengths, targets, target_lengths, blank)
            for rule in tuple(matches):
                ours = _batched_labels(lp, lengths, targets, target_lengths, blank, rule)
                if not torch.equal(theirs, ours):
                    matches.discard(rule)
    except Exception as exc:  # e.g. a build without the alignment extension raises here
        return None, f"torchaudio {version}'s forced_align failed ({type(exc).__name__}: {exc})"
    if len(matches) != 1:
        return None, f"torchaudio {version}'s forced_align follows none of the tie rules {TIE_RULES}"
    return matches.pop(), f"torchaudio {version}"


def _torchaudio_refusal(log_probs: Tensor, tie_rule: str) -> Optional[str]:
    """Why torchaudio's kernel cannot give :func:`forced_align`'s result for such inputs (None:
    it can, up to the per-item checks of :func:`_torchaudio_paths`)."""
    if log_probs.device.type != "cpu":
        return (f"log_probs is on {log_probs.device}; torchaudio's kernel is only used on CPU (on CUDA "
                f"the batched path is faster than a loop over items)")
    if log_probs.dtype not in _TORCHAUDIO_DTYPES:
        return f"torchaudio's kernel does not take {log_probs.dtype} log_probs"
    rule, why = _torchaudio_tie_rule()
    if rule is None:
        return why
    if rule != tie_rule:
        return f"tie_rule={tie_rule!r}, but the kernel of {why} follows {rule!r}"
    return None


# CPU costs in microseconds, fitted to timings of both paths on 48 batches (B 1..1024, T 30..1000,
# L = T / 10 or 3 T / 10; 2-core x86, 1 thread, torch 2.9, torchaudio 2.9.1), used by
# backend="auto" to pick the faster path; only their ratios matter. Loop: per call, per item
# and per Viterbi cell (frame x state of each item). Batched: per call, per padded frame and
# per cell of the padded batch (its strided elementwise operations cost 2 to 3 times more per
# cell than the kernel, which wins unless hundreds of items are short).
_LOOP_US = (10.0, 16.6, 0.0037)
_BATCHED_US = {"torchaudio-2.9": (260.0, 8.0, 0.0119), "best": (225.0, 5.6, 0.0070)}


def _loop_is_faster(lengths: Tensor, target_lengths: Tensor, tie_rule: str) -> bool:
    """Whether the loop of torchaudio over the items beats the batched path (CPU cost model)."""
    n, m = lengths.tolist(), target_lengths.tolist()
    items, cells = 0, 0
    for t, l in zip(n, m):
        if l:
            items, cells = items + 1, cells + t * (2 * l + 1)
    loop = _LOOP_US[0] + _LOOP_US[1] * items + _LOOP_US[2] * cells
    frames, states = max(n), 2 * max(m) + 1
    fixed, per_frame, per_cell = _BATCHED_US[tie_rule]
    return loop <= fixed + frames * (per_frame + per_cell * states * len(n))


def forced_align(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                 blank: int = 0, tie_rule: str = "torchaudio-2.9",
                 backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Viterbi (max-product) CTC forced alignment of a padded batch.

    Two implementations give the same bits; ``backend`` picks one:

    * ``"batched"``: vectorised over the batch and the 2L + 1 CTC states (one loop over frames
      for the forward pass and one for the backtrace, each a few elementwise operations; on
      CPU the loops run in NumPy). Arithmetic is done in the input dtype in the same order as
      torchaudio's kernel, so scores and ties are bit-identical.
    * ``"torchaudio"``: torchaudio's compiled CPU kernel (the operator behind
      ``torchaudio.functional.forced_align``) on each item alone. CPU only; float32, float64 or
      float16 log-probs; only for the tie rule that the installed torchaudio follows (checked
      once per process on crafted ties: ``"torchaudio-2.9"`` for torchaudio 2.9); otherwise a
      ``ValueError`` saying why. A batch with an item whose log-probs are not all finite, or
      large enough for a Viterbi score to overflow, is aligned by the batched path: there the
      kernel can differ (for an item whose every alignment has probability 0 it returns some
      path, without an error, where we raise). So results and errors are those of ``"batched"``.
    * ``"auto"`` (default): ``"torchaudio"`` where it can be used and a cost model says the
      loop over items is faster, which is every usual CPU batch (at T = 500, L = 60 it is 10x
      faster than the batched path at B = 1 and 3x at B = 32; the batched path wins only for
      hundreds of short items); else ``"batched"``: on CUDA (where it is about 2x faster than
      looping torchaudio's CUDA kernel), for bfloat16, for ``tie_rule="best"`` and without a
      usable torchaudio.

    Tie rules (entering state s from s, s - 1 or s - 2; at the last frame the final blank is
    taken only if strictly better than the last token, under both rules):

    * ``"torchaudio-2.9"`` (default): exactly ``torchaudio.functional.forced_align`` 2.9 (CPU)
      on each item alone. s - 2 if strictly better than both others, s - 1 if strictly better
      than both others, otherwise stay. Quirk reproduced: when s - 1 and s - 2 tie exactly and
      both beat s, the path stays in s with the lower score, so it can score below the best.
    * ``"best"``: always the best predecessor, ties preferring s, then s - 1, then s - 2 (the
      rule of a rewrite of the kernel in torchaudio's repository; the released torchaudio 2.9.1
      and 2.11.0 were checked to follow ``"torchaudio-2.9"``). Always a highest-scoring path.

    The rules differ only on exact float ties, which do occur on long float32 inputs.

    Args:
        log_probs (Tensor): (B, T, V) frame log-probabilities. May require grad: the path does
            not depend on it, ``frame_scores`` are differentiable.
        lengths (Tensor): (B,) valid frames per utterance.
        targets (Tensor): (B, L) integer label sequences, padded (padding is ignored).
        target_lengths (Tensor): (B,) valid labels per utterance.
        blank (int): index of the blank label; targets must not contain it.
        tie_rule (str): one of :data:`TIE_RULES`.
        backend (str): one of :data:`BACKENDS`.

    Returns:
        (labels, frame_scores): ``labels`` (B, T) int64, the label of every frame (``blank`` on
        padded frames); ``frame_scores`` (B, T), the log-prob of that label (0 on padded frames).

    Raises:
        ValueError: bad shapes/values, targets containing ``blank``, an item whose frames cannot
            hold its targets (T_b < L_b + number of repeated neighbours), an item whose every
            alignment has probability zero (under the tie rule's recursion), or
            ``backend="torchaudio"`` for inputs it cannot align.
    """
    lengths = check_log_probs(log_probs, lengths, blank)
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    targets, target_lengths = _check_targets(log_probs, lengths, targets, target_lengths, blank)
    batch, frames, _ = log_probs.shape
    if frames == 0:  # every item has 0 frames and (checked above) 0 targets
        return targets.new_empty((batch, 0)), log_probs.new_empty((batch, 0))
    plain = log_probs.detach()
    if backend != "batched":
        refusal = _torchaudio_refusal(plain, tie_rule)
        if refusal is not None and backend == "torchaudio":
            raise ValueError(f"backend='torchaudio' cannot align these inputs: {refusal}")
        if refusal is None and (backend == "torchaudio" or _loop_is_faster(lengths, target_lengths, tie_rule)):
            labels = _torchaudio_paths(plain.contiguous(), lengths, targets, target_lengths, blank)
            if labels is not None:
                return _with_frame_scores(log_probs, labels, lengths, blank)
    labels = _batched_labels(plain, lengths, targets, target_lengths, blank, tie_rule)
    return _with_frame_scores(log_probs, labels, lengths, blank)


def _with_frame_scores(log_probs: Tensor, labels: Tensor, lengths: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """(labels, frame_scores) of :func:`forced_align` from a path's (B, T) labels."""
    frames = labels.shape[1]
    frame_scores = log_probs.gather(2, labels[:, :, None])[:, :, 0]
    if int(lengths.min()) < frames:
        padded = ~length_mask(lengths, frames)
        labels, frame_scores = labels.masked_fill(padded, blank), frame_scores.masked_fill(padded, 0.0)
    return labels, frame_scores


# --------------------------------------------------------------------------------------------
# Spans and timestamps
# --------------------------------------------------------------------------------------------
def _check_alignment(labels, lengths, blank: int) -> Tensor:
    check_tensor(labels, "labels", 2, "int", "(B, T)")
    if labels.shape[0] == 0:
        raise ValueError(f"labels is an empty batch (shape {tuple(labels.shape)})")
    check_int(blank, "blank")
    return check_lengths(lengths, labels.shape[0], labels.shape[1], device=labels.device)


def token_spans(labels: Tensor, lengths: Tensor, frame_scores: Optional[Tensor] = None,
                blank: int = 0) -> list:
    """Merge a frame alignment into token spans (runs of one non-blank label).

    Args:
        labels (Tensor): (B, T) frame alignment (e.g. from :func:`forced_align`).
        lengths (Tensor): (B,) valid frames.
        frame_scores (Tensor, optional): (B, T) per-frame scores; a span's score is their mean.
        blank (int): blank label.

    Returns:
        list[list[TokenSpan]]: per utterance, the spans in time order (as torchaudio's
        ``merge_tokens``), with frames ``[start, end)``.
    """
    lengths = _check_alignment(labels, lengths, blank)
    batch, frames = labels.shape
    labels = labels.long()
    starts = collapse_mask(labels, lengths, blank)  # (B, T)
    nxt = torch.cat([labels[:, 1:], labels.new_full((batch, 1), blank)], 1)
    valid = length_mask(lengths, frames)
    last_frame = torch.arange(frames, device=labels.device) == (lengths - 1)[:, None]
    ends = valid & (labels != blank) & ((labels != nxt) | last_frame)  # (B, T) last frame of span
    means = None
    if frame_scores is not None:
        check_tensor(frame_scores, "frame_scores", 2, "float", "(B, T)")
        if frame_scores.shape != labels.shape:
            raise ValueError(f"frame_scores must have shape {tuple(labels.shape)}, "
                             f"got {tuple(frame_scores.shape)}")
        csum = torch.cat([frame_scores.new_zeros((batch, 1), dtype=torch.float64),
                          frame_scores.double().masked_fill(~valid, 0.0).cumsum(1)], 1)
        means = csum  # (B, T + 1) prefix sums of the frame scores
    out = []
    for b in range(batch):
        s_idx = starts[b].nonzero()[:, 0].tolist()
        e_idx = (ends[b].nonzero()[:, 0] + 1).tolist()
        toks = labels[b, s_idx].tolist() if s_idx else []
        if means is None:
            scores = [math.nan] * len(s_idx)
        else:
            scores = [(means[b, e] - means[b, s]).item() / (e - s) for s, e in zip(s_idx, e_idx)]
        out.append([TokenSpan(tok, s, e, sc) for tok, s, e, sc in zip(toks, s_idx, e_idx, scores)])
    return out


def spans_to_timestamps(spans: list, frame_shift: float) -> list:
    """Convert token spans to ``(start_seconds, end_seconds)`` given the frame shift in seconds."""
    check_number(frame_shift, "frame_shift", 0.0, strict=True)
    for span in spans:
        if not isinstance(span, TokenSpan):
            raise TypeError(f"spans must hold TokenSpan items, got {type(span).__name__}")
    return [(span.start * frame_shift, span.end * frame_shift) for span in spans]


def token_ends(labels: Tensor, lengths: Tensor, blank: int = 0) -> Tensor:
    """(B, T) bool: True at the last frame of every token of a frame alignment (a run of one
    non-blank label, as :func:`token_spans` merges them) and False on padding.

    Args:
        labels (Tensor): shape (B, T), a CTC frame path (greedy or forced), integer.
        lengths (Tensor): shape (B,), valid frames of each path.
        blank (int): the blank label.
    """
    lengths = _check_alignment(labels, lengths, blank)
    frames = labels.shape[1]
    nxt = F.pad(labels[:, 1:], (0, 1), value=blank)
    last = torch.arange(frames, device=labels.device)[None, :] == (lengths - 1)[:, None]
    return length_mask(lengths, frames) & (labels != blank) & ((labels != nxt) | last)


def fits_ctc(lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """(B,) bool: each non-empty target fits a CTC path over its frames (L tokens plus one blank
    between each pair of repeated neighbours must not exceed T); what :func:`forced_align`
    requires. targets (B, L) (padding ignored), target_lengths (B,), lengths (B,) frames."""
    valid = length_mask(target_lengths, targets.shape[1])
    prev = F.pad(targets, (1, 0), value=-2)[:, :-1]
    repeats = (valid & (targets == prev)).sum(1)
    return (target_lengths + repeats <= lengths) & (target_lengths > 0)


# --------------------------------------------------------------------------------------------
# CASS-NAT trigger masks
# --------------------------------------------------------------------------------------------
def trigger_mask(labels: Tensor, lengths: Tensor, left: int = 0, right: int = 0,
                 blank: int = 0) -> tuple[Tensor, Tensor]:
    """CASS-NAT trigger mask: which frames each token (and the end-of-sentence slot) may attend.

    Tokens are the runs of one non-blank label in ``labels``; let ``s_u`` be the first frame of
    token u. Slot u < L_b covers frames ``s_{u-1} < t <= s_u`` (slot 0 starts at frame 0), so the
    slots partition the utterance; slot L_b, the end-of-sentence slot, covers the frames after
    ``s_{L_b - 1}`` and always includes the last valid frame. Each slot is then widened by
    ``left`` frames before and ``right`` frames after (within the valid frames).

    Args:
        labels (Tensor): (B, T) frame alignment (forced alignment, greedy path or ESA sample).
        lengths (Tensor): (B,) valid frames; items must have at least one frame.
        left (int), right (int): widening in frames.
        blank (int): blank label.

    Returns:
        (mask, token_lengths): ``mask`` (B, L + 1, T) bool with L = max tokens in the batch
        (rows beyond ``token_lengths[b]`` are all False); ``token_lengths`` (B,) int64, the
        number of tokens L_b (each item uses L_b + 1 rows, the last for end of sentence).
    """
    lengths = _check_alignment(labels, lengths, blank)
    check_int(left, "left", 0)
    check_int(right, "right", 0)
    if bool((lengths == 0).any()):
        item = int((lengths == 0).nonzero()[0])
        raise ValueError(f"lengths must be >= 1 for trigger_mask, got lengths[{item}] = 0")
    batch, frames = labels.shape
    device = labels.device
    starts = collapse_mask(labels.long(), lengths, blank)  # (B, T)
    counts = starts.sum(1)  # (B,)
    max_l = int(counts.max())
    rank = starts.long().cumsum(1) - 1  # (B, T) token index of each start frame
    first = torch.full((batch, max_l + 1), frames, dtype=torch.long, device=device)
    frame_idx = torch.arange(frames, device=device).expand(batch, -1)
    first.scatter_(1, rank.clamp(min=0).masked_fill(~starts, max_l), frame_idx.masked_fill(~starts, frames))
    # slot u covers [first[u-1] + 1, first[u]]; the eos slot ends at the last valid frame.
    lo = torch.cat([first.new_zeros((batch, 1)), first[:, :-1] + 1], 1)  # (B, L + 1)
    hi = first.clone()
    slot = torch.arange(max_l + 1, device=device)[None, :]
    is_eos = slot == counts[:, None]
    hi = torch.where(is_eos, lengths[:, None] - 1, hi)
    lo = torch.where(is_eos, torch.minimum(lo, lengths[:, None] - 1), lo)
    lo, hi = lo - left, hi + right
    t = torch.arange(frames, device=device)[None, None, :]
    mask = (t >= lo[..., None]) & (t <= hi[..., None]) & (t < lengths[:, None, None])
    mask &= (slot <= counts[:, None])[..., None]
    return mask, counts


# --------------------------------------------------------------------------------------------
# Error-based alignment sampling (ESA)
# --------------------------------------------------------------------------------------------
def error_based_sampling(log_probs: Tensor, lengths: Tensor, num: int = 16, threshold: float = 0.9,
                         blank: int = 0, generator: Generators = None) -> tuple[Tensor, Tensor]:
    """Sample ``num`` frame alignments per utterance from CTC's top-2 at uncertain frames.

    Copy 0 of every utterance is exactly the greedy path. In copies 1..num-1 each valid frame
    whose greedy probability ``exp(max log_probs)`` is below ``threshold`` takes the best or the
    second-best label with probability 1/2 each; confident frames never change.

    Args:
        log_probs (Tensor): (B, T, V) CTC log-probabilities (V >= 2).
        lengths (Tensor): (B,) valid frames.
        num (int): alignments per utterance (N).
        threshold (float): probability below which a frame is resampled.
        blank (int): blank label.
        generator: ``None``, a ``torch.Generator``, or a sequence of B generators (one per
            utterance: then each utterance's samples do not depend on the rest of the batch).

    Returns:
        (labels, token_counts): ``labels`` (B * N, T) int64 in item-major order (row
        ``b * N + n`` is copy n of utterance b, so ``labels.view(B, N, T)``; padded frames
        ``blank``); ``token_counts`` (B * N,) number of tokens of each copy.
    """
    lengths = check_log_probs(log_probs, lengths, blank)
    check_int(num, "num", 1)
    check_number(threshold, "threshold", 0.0, 1.0)
    batch, frames, vocab = log_probs.shape
    if vocab < 2:
        raise ValueError(f"log_probs needs V >= 2 to sample from the top 2, got V = {vocab}")
    top_v, top_i = log_probs.topk(2, dim=-1)  # (B, T, 2)
    greedy = log_probs.argmax(-1)  # first maximum on ties, as ctc_greedy_search
    second = torch.where(top_i[..., 0] == greedy, top_i[..., 1], top_i[..., 0])
    valid = length_mask(lengths, frames)  # (B, T)
    uncertain = (top_v[..., 0].exp() < threshold) & valid  # (B, T)
    noise = uniform_noise((batch, frames, num - 1), lengths, generator, device=log_probs.device)
    flip = (noise < 0.5) & uncertain[..., None]  # (B, T, N - 1)
    copies = torch.where(flip, second[..., None], greedy[..., None])  # (B, T, N - 1)
    labels = torch.cat([greedy[..., None], copies], 2).permute(0, 2, 1)  # (B, N, T)
    labels = labels.masked_fill(~valid[:, None, :], blank).reshape(batch * num, frames)  # (B * N, T)
    rep_lengths = lengths.repeat_interleave(num)  # (B * N,)
    counts = collapse_mask(labels, rep_lengths, blank).sum(1)
    return labels, counts
