"""CTC decoding: greedy best path and batched prefix beam search.

Dimension legend: B batch, T frames, V vocabulary (blank included), W beam, C candidate labels
per frame.

Both searches read ``log_probs`` of shape (B, T, V) with per-utterance ``lengths`` (B,); frames at
or beyond an utterance's length are ignored, so a padded batch decodes exactly like its items.

:func:`check_log_probs` is the input check of every function that reads CTC posteriors; the
generic validators are in :mod:`nar.base.checks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from nar.base.checks import check_int, check_lengths, check_tensor
from nar.base.tensors import length_mask

#: Signature of the external language-model hook of :func:`ctc_prefix_beam_search`.
LMScoreFn = Callable[[list, Tensor], Tensor]

# Two 31-bit polynomial hashes identify a label prefix inside the beam (see _extend_hash).
_HASH_MOD = (2_147_483_647, 2_147_483_629)
_HASH_MUL = (1_000_003, 911_382_323)
NO_LABEL = -1  # "no label": the last label of an empty prefix, the emission of a stay step


def check_log_probs(log_probs, lengths, blank: int, name: str = "log_probs") -> Tensor:
    """Validate ``log_probs`` (B, T, V) float, ``lengths`` (B,) and ``blank``; return int64 lengths.

    Raises ``ValueError`` for an empty batch, an empty vocabulary, a blank outside [0, V), lengths
    out of range, or NaN or +inf inside the valid frames; ``TypeError`` for wrong types and dtypes.
    """
    check_tensor(log_probs, name, 3, "float", "(B, T, V)")
    batch, frames, vocab = log_probs.shape
    if batch == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(log_probs.shape)})")
    if vocab == 0:
        raise ValueError(f"{name} has an empty vocabulary (shape {tuple(log_probs.shape)})")
    check_int(blank, "blank")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank must be in [0, {vocab}) for V = {vocab}, got blank = {blank}")
    lengths = check_lengths(lengths, batch, frames, "lengths", device=log_probs.device)
    valid = length_mask(lengths, frames)  # (B, T)
    peak = log_probs.amax(-1)  # (B, T); amax propagates NaN
    if bool(torch.isnan(peak).logical_and(valid).any()):
        raise ValueError(f"{name} contains NaN inside the valid frames")
    if bool(torch.isposinf(peak).logical_and(valid).any()):  # a log-probability is at most 0
        item = int(torch.isposinf(peak).logical_and(valid).any(-1).nonzero()[0])
        raise ValueError(f"{name} contains +inf inside the valid frames (item {item}); log-probabilities "
                         "are <= 0: pass log_softmax outputs")
    return lengths


# --------------------------------------------------------------------------------------------
# Greedy best path
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CTCGreedyResult:
    """Result of :func:`ctc_greedy_search`.

    Attributes:
        tokens: per utterance, the collapsed label sequence (repeats merged, blanks removed).
        scores: (B,) sum over the valid frames of the best-path frame log-probabilities.
        frame_labels: (B, T) int64 argmax label of every frame; padded frames hold ``blank``.
    """

    tokens: list
    scores: Tensor
    frame_labels: Tensor


def collapse_mask(labels: Tensor, lengths: Tensor, blank: int) -> Tensor:
    """(B, T) bool: frames that start a new token of the frame alignment ``labels`` (B, T).

    A frame starts a token when it is valid, not blank, and differs from the previous frame.
    """
    frames = labels.shape[1]
    valid = length_mask(lengths, frames)  # (B, T)
    prev = torch.cat([labels.new_full((labels.shape[0], 1), NO_LABEL), labels[:, :-1]], 1)  # (B, T)
    return valid & (labels != blank) & (labels != prev)


def ctc_greedy_search(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> CTCGreedyResult:
    """Best-path (greedy) CTC decoding of a padded batch.

    Args:
        log_probs (Tensor): (B, T, V) frame log-probabilities (log-softmax output).
        lengths (Tensor): (B,) number of valid frames of each utterance.
        blank (int): index of the blank label.

    Returns:
        CTCGreedyResult: ``frame_labels`` (B, T) the argmax per frame (the first maximum on ties;
        padded frames = ``blank``), ``scores`` (B,) the summed best-path log-probs over valid
        frames, and ``tokens`` the collapsed label lists.
    """
    lengths = check_log_probs(log_probs, lengths, blank)
    best, labels = log_probs.max(dim=-1)  # (B, T), (B, T)
    valid = length_mask(lengths, log_probs.shape[1])
    labels = labels.masked_fill(~valid, blank)
    scores = best.masked_fill(~valid, 0.0).sum(dim=-1)  # (B,)
    keep = collapse_mask(labels, lengths, blank)  # (B, T)
    flat = labels[keep].tolist()
    counts = keep.sum(dim=1).tolist()
    tokens, pos = [], 0
    for count in counts:
        tokens.append(flat[pos:pos + count])
        pos += count
    return CTCGreedyResult(tokens=tokens, scores=scores, frame_labels=labels)


# --------------------------------------------------------------------------------------------
# Prefix beam search
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CTCHypothesis:
    """One prefix-beam-search hypothesis: collapsed labels and its total log score
    ``acoustic + lm_weight * lm`` (acoustic = log of the summed probability of all its paths)."""

    tokens: tuple
    score: float


@dataclass
class _Beam:
    """Working state of the batched beam (internal, mutated per frame). All tensors (B, W)."""

    p_blank: Tensor  # log-prob of the prefix over paths ending in blank
    p_label: Tensor  # log-prob of the prefix over paths ending in its last label
    last: Tensor  # last label of the prefix (NO_LABEL for the empty prefix)
    hash1: Tensor  # prefix hashes (identify equal prefixes for merging)
    hash2: Tensor
    lm: Tensor  # accumulated LM log-prob of the prefix
    prefixes: Optional[list]  # per utterance, per slot: label tuple (only with an LM hook)


def _extend_hash(hash1: Tensor, hash2: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Hash of ``prefix + label`` from the prefix hashes (broadcasting).

    A false merge needs both 31-bit polynomial hashes to collide (about 2**-62 per pair).
    """
    new1 = (hash1 * _HASH_MUL[0] + labels + 1) % _HASH_MOD[0]
    new2 = (hash2 * _HASH_MUL[1] + labels + 1) % _HASH_MOD[1]
    return new1, new2


def _init_beam(batch: int, beam: int, device, dtype, with_prefixes: bool) -> _Beam:
    neg = torch.full((batch, beam), -math.inf, device=device, dtype=dtype)
    p_blank = neg.clone()
    p_blank[:, 0] = 0.0  # slot 0: the empty prefix; other slots empty (-inf)
    long = dict(device=device, dtype=torch.long)
    # Empty slots get distinct negative hashes so they can never equal a real prefix.
    sentinel = -torch.arange(beam, **long).expand(batch, beam).clone()
    prefixes = [[()] * beam for _ in range(batch)] if with_prefixes else None
    return _Beam(p_blank, neg.clone(), torch.full((batch, beam), NO_LABEL, **long),
                 sentinel, sentinel.clone(), torch.zeros((batch, beam), device=device, dtype=dtype),
                 prefixes)


def _lm_scores(beam: _Beam, cand: Tensor, alive: Tensor, lm_score_fn: LMScoreFn, blank: int) -> Tensor:
    """Ask the LM hook for log P(cand | prefix) of live slots; (B, W, C), -inf for dead slots."""
    batch, width = alive.shape
    rows = alive.nonzero().tolist()  # batch-major order
    out = torch.full((batch, width, cand.shape[-1]), -math.inf, device=cand.device, dtype=beam.lm.dtype)
    if not rows:
        return out
    prefixes = [beam.prefixes[b][w] for b, w in rows]
    idx = torch.tensor(rows, device=cand.device, dtype=torch.long)  # (N, 2)
    next_tokens = cand[idx[:, 0]]  # (N, C)
    scores = lm_score_fn(prefixes, next_tokens)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != tuple(next_tokens.shape):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"lm_score_fn must return a tensor of shape {tuple(next_tokens.shape)}, got {got}")
    scores = scores.to(device=out.device, dtype=out.dtype).masked_fill(next_tokens == blank, 0.0)
    out[idx[:, 0], idx[:, 1]] = scores
    return out


def _beam_step(beam: _Beam, values: Tensor, cand: Tensor, blank: int,
               lm_scores: Optional[Tensor], lm_weight: float):
    """Expand every slot with the frame's C candidate labels, merge equal prefixes, keep W best.

    Args:
        values (Tensor): (B, C) log-probs of the candidates; cand (Tensor): (B, C) their labels.
        lm_scores (Tensor or None): (B, W, C) LM log-probs of each extension.

    Returns:
        (new beam, source slot (B, W), emitted label (B, W) or NO_LABEL).
    """
    batch, width = beam.p_blank.shape
    neg_inf = -math.inf
    total = torch.logaddexp(beam.p_blank, beam.p_label)  # (B, W)
    is_blank = cand == blank  # (B, C)
    blank_lp = values.masked_fill(~is_blank, neg_inf).amax(dim=-1, keepdim=True)  # (B, 1)
    same = cand[:, None, :] == beam.last[:, :, None]  # (B, W, C)
    same_lp = values[:, None, :].masked_fill(~same, neg_inf).amax(dim=-1)  # (B, W)
    stay_blank = total + blank_lp  # prefix unchanged, path ends in blank
    stay_label = beam.p_label + same_lp  # prefix unchanged, last label repeated
    # Extensions: a repeated label needs a blank in between, so it extends from p_blank only.
    ext = torch.where(same, beam.p_blank[:, :, None], total[:, :, None]) + values[:, None, :]
    ext = ext.masked_fill(is_blank[:, None, :], neg_inf)  # (B, W, C)
    ext1, ext2 = _extend_hash(beam.hash1[:, :, None], beam.hash2[:, :, None], cand[:, None, :])
    # An extension equal to a live prefix of the beam merges into that prefix's stay candidate.
    # At most one (slot, label) pair can equal a given prefix, so a max picks it exactly (no
    # reduction whose rounding could depend on the batch size).
    alive = (total > neg_inf)[:, None, None, :]
    match = (ext1[..., None] == beam.hash1[:, None, None, :]) & (
        ext2[..., None] == beam.hash2[:, None, None, :]) & alive  # (B, W, C, W)
    merged = ext[..., None].masked_fill(~match, neg_inf).flatten(1, 2).amax(dim=1)  # (B, W)
    stay_label = torch.logaddexp(stay_label, merged)
    ext = ext.masked_fill(match.any(dim=-1), neg_inf)

    num_c = cand.shape[1]
    cand_blank = torch.cat([stay_blank, stay_blank.new_full((batch, width * num_c), neg_inf)], 1)
    cand_label = torch.cat([stay_label, ext.flatten(1)], 1)  # (B, W + W*C)
    ext_lm = beam.lm[:, :, None].expand(-1, -1, num_c)
    if lm_scores is not None:
        ext_lm = ext_lm + lm_scores
    cand_lm = torch.cat([beam.lm, ext_lm.flatten(1)], 1)  # (B, W + W*C)
    score = torch.logaddexp(cand_blank, cand_label)
    if lm_scores is not None:
        score = score + lm_weight * cand_lm.masked_fill(score == neg_inf, 0.0)
    # Stable sort, not topk: equal scores keep candidate order, whatever the batch size.
    sel = score.argsort(dim=1, descending=True, stable=True)[:, :width]  # (B, W), best first
    is_stay = sel < width
    src = torch.where(is_stay, sel, (sel - width).div(num_c, rounding_mode="floor"))
    col = (sel - width).clamp(min=0) % num_c
    emitted = torch.where(is_stay, torch.full_like(sel, NO_LABEL), cand.gather(1, col))
    new1 = torch.where(is_stay, beam.hash1.gather(1, src), _gather_ext(ext1, src, col))
    new2 = torch.where(is_stay, beam.hash2.gather(1, src), _gather_ext(ext2, src, col))
    new = _Beam(cand_blank.gather(1, sel), cand_label.gather(1, sel),
                torch.where(is_stay, beam.last.gather(1, src), emitted), new1, new2,
                cand_lm.gather(1, sel), None)
    if beam.prefixes is not None:
        new.prefixes = _next_prefixes(beam.prefixes, src, emitted)
    return new, src, emitted


def _gather_ext(ext_hash: Tensor, src: Tensor, col: Tensor) -> Tensor:
    """Pick ext_hash[b, src, col] from (B, W, C) hashes for (B, W) slots."""
    num_c = ext_hash.shape[-1]
    return ext_hash.flatten(1).gather(1, src * num_c + col)  # (B, W*C) -> (B, W)


def _next_prefixes(prefixes: list, src: Tensor, emitted: Tensor) -> list:
    out = []
    for row, srcs, ems in zip(prefixes, src.tolist(), emitted.tolist()):
        out.append([row[s] + (e,) if e != NO_LABEL else row[s] for s, e in zip(srcs, ems)])
    return out


def _backtrack(src: Tensor, emitted: Tensor, slots: Tensor) -> list:
    """Labels of the prefixes in ``slots`` (B, N) from per-frame back-pointers (T, B, W)."""
    frames = src.shape[0]
    out = torch.full((frames,) + tuple(slots.shape), NO_LABEL, dtype=torch.long, device=slots.device)
    for t in range(frames - 1, -1, -1):
        out[t] = emitted[t].gather(1, slots)
        slots = src[t].gather(1, slots)
    rows = out.permute(1, 2, 0).tolist()  # (B, N, T)
    return [[tuple(x for x in seq if x != NO_LABEL) for seq in item] for item in rows]


def ctc_prefix_beam_search(log_probs: Tensor, lengths: Tensor, beam_size: int = 10, blank: int = 0,
                           nbest: int = 1, lm_score_fn: Optional[LMScoreFn] = None,
                           lm_weight: float = 0.0) -> list:
    """CTC prefix beam search, batched over utterances and vectorised over the beam.

    At every frame each of the ``beam_size`` prefixes is extended with the frame's
    ``C = min(beam_size, V)`` most probable labels (blank included); prefixes that become equal
    are merged (their probabilities summed) and the ``beam_size`` best are kept, ranked by
    ``acoustic + lm_weight * lm``. With ``beam_size=1`` this is exactly greedy best-path decoding
    (up to ties in the per-frame argmax); with a beam at least as large as the number of distinct
    prefixes it is exact (finds the most probable label sequence).

    Args:
        log_probs (Tensor): (B, T, V) frame log-probabilities.
        lengths (Tensor): (B,) valid frames per utterance; padded frames are ignored.
        beam_size (int): prefixes kept per utterance (W), and labels tried per frame.
        blank (int): index of the blank label.
        nbest (int): hypotheses returned per utterance (at most ``beam_size``).
        lm_score_fn: optional external LM hook, ``lm_score_fn(prefixes, next_tokens) -> scores``.
            It is called once per frame with ``prefixes``, a list of N label tuples (the live
            hypotheses of the whole batch, batch-major, blanks and repeats removed) and
            ``next_tokens``, an int64 tensor (N, C) of candidate labels for each prefix. It must
            return a float tensor (N, C) with log P_LM(next_tokens[n, c] | prefixes[n]); values at
            blank candidates are ignored. Rows must be scored independently of each other (then a
            batch decodes like its items). No end-of-sentence term is added. It is not called when
            ``lm_weight == 0``.
        lm_weight (float): weight of the accumulated LM log-prob in the ranking score.

    Returns:
        list[list[CTCHypothesis]]: per utterance, up to ``nbest`` hypotheses, best first, each with
        ``score = acoustic + lm_weight * lm`` (acoustic: log of the summed path probability).
        An utterance decoded alone gives the same hypotheses; scores agree up to float rounding
        (CPU vector kernels may round ``logaddexp`` by one ulp differently depending on an
        element's position in the tensor), so only exact near-ties could order differently.
    """
    lengths = check_log_probs(log_probs, lengths, blank)
    check_int(beam_size, "beam_size", 1)
    check_int(nbest, "nbest", 1)
    if nbest > beam_size:
        raise ValueError(f"nbest must be <= beam_size = {beam_size}, got nbest = {nbest}")
    if lm_score_fn is not None and not callable(lm_score_fn):
        raise TypeError(f"lm_score_fn must be callable, got {type(lm_score_fn).__name__}")
    use_lm = lm_score_fn is not None and lm_weight != 0.0
    top_v, top_i = _frame_candidates(log_probs, lengths, blank, beam_size)  # (B, T, C)
    batch, frames = top_v.shape[:2]
    beam = _init_beam(batch, beam_size, top_v.device, top_v.dtype, use_lm)
    srcs, emits = [], []
    for t in range(frames):
        values, cand = top_v[:, t], top_i[:, t]
        lm_scores = None
        if use_lm:
            alive = torch.logaddexp(beam.p_blank, beam.p_label) > -math.inf
            lm_scores = _lm_scores(beam, cand, alive, lm_score_fn, blank)
        beam, src, emitted = _beam_step(beam, values, cand, blank, lm_scores, lm_weight)
        srcs.append(src)
        emits.append(emitted)
    return _final_hypotheses(beam, srcs, emits, nbest, lm_weight if use_lm else 0.0)


def _frame_candidates(log_probs: Tensor, lengths: Tensor, blank: int, beam_size: int):
    """(B, T, C) log-probs and labels of each frame's C = min(beam_size, V) best labels.

    Padded frames become "blank with probability 1", which leaves scores and prefixes unchanged.
    A stable sort (not topk) breaks ties by label id, whatever the batch size.
    """
    frames, vocab = log_probs.shape[1:]
    dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    pad = ~length_mask(lengths, frames)  # (B, T)
    lp = log_probs.to(dtype).masked_fill(pad[:, :, None], -math.inf)
    lp[..., blank] = lp[..., blank].masked_fill(pad, 0.0)
    top_v, top_i = lp.sort(dim=-1, descending=True, stable=True)
    keep = min(beam_size, vocab)
    return top_v[..., :keep], top_i[..., :keep]


def _final_hypotheses(beam: _Beam, srcs: list, emits: list, nbest: int, lm_weight: float) -> list:
    """Rank the final beam and trace back the labels of the ``nbest`` best live prefixes."""
    total = torch.logaddexp(beam.p_blank, beam.p_label)  # (B, W)
    score = total
    if lm_weight != 0.0:
        score = total + lm_weight * beam.lm.masked_fill(total == -math.inf, 0.0)
    order = score.argsort(dim=1, descending=True, stable=True)[:, :nbest]  # (B, N)
    batch = score.shape[0]
    if srcs:
        labels = _backtrack(torch.stack(srcs), torch.stack(emits), order)
    else:
        labels = [[()] * nbest for _ in range(batch)]
    best = score.gather(1, order).tolist()
    return [[CTCHypothesis(tokens=labels[b][n], score=best[b][n])
             for n in range(nbest) if best[b][n] > -math.inf] for b in range(batch)]
