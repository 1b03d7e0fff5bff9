"""Continuous integrate-and-fire (CIF), vectorised: the Paraformer predictor's aggregation of
frame features into token embeddings.

Dimension legend: B batch, T frames, L tokens, D model dim.

Integration runs on the float64 cumulative sum ``c`` of the weights ``alphas``: token u
receives, from frame t, the part of ``[c_{t-1}, c_t)`` that overlaps ``[u * threshold,
(u + 1) * threshold)``, and fires at the first frame with ``c_t >= (u + 1) * threshold``. A frame
may therefore close one token and start the next, or (alphas above the threshold) close several.
The sum is kept in float64: stored in float32, a long cumulative sum is rounded to a grid
coarser than the weights' own precision and fires at wrong frames (or one token too many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from nar.base.checks import check_lengths, check_number, check_tensor
from nar.base.tensors import length_mask

#: Reductions accepted by :func:`quantity_loss`.
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class CIFOutput:
    """Result of :func:`cif`.

    Attributes:
        embeddings: (B, L, D) integrated token embeddings, L = max(token_lengths); zero beyond
            each item's count; None when ``hidden`` was None.
        token_lengths: (B,) int64 number of tokens fired.
        fire_frames: (B, T) bool, frames at which at least one token fired (a token fired by the
            tail is attributed to the last valid frame).
        token_starts: (B, L) int64 first frame contributing to each token (-1 beyond the count).
        token_ends: (B, L) int64 frame at which each token fired (-1 beyond the count).
        alphas: (B, T) the weights integrated: padding zeroed and, in training, scaled so that
            they sum to ``target_lengths * threshold`` (tail excluded).
    """

    embeddings: Optional[Tensor]
    token_lengths: Tensor
    fire_frames: Tensor
    token_starts: Tensor
    token_ends: Tensor
    alphas: Tensor


def _check_alphas(alphas, lengths, batch: Optional[int] = None) -> Tensor:
    check_tensor(alphas, "alphas", 2, "float", "(B, T)")
    if alphas.shape[0] == 0:
        raise ValueError(f"alphas is an empty batch (shape {tuple(alphas.shape)})")
    if batch is not None and alphas.shape[0] != batch:
        raise ValueError(f"alphas must have batch size {batch}, got shape {tuple(alphas.shape)}")
    lengths = check_lengths(lengths, alphas.shape[0], alphas.shape[1], device=alphas.device)
    valid = length_mask(lengths, alphas.shape[1])
    bad = valid & ~(alphas >= 0)  # negative or NaN
    if bool(bad.any()):
        b, t = bad.nonzero()[0].tolist()
        raise ValueError(f"alphas must be >= 0 on valid frames, got alphas[{b}, {t}] = {float(alphas[b, t])}")
    return lengths


def _count_fires(c: Tensor, threshold: float) -> Tensor:
    """Number of boundaries k * threshold (k >= 1) that are <= c, computed exactly as the
    boundaries themselves are (float64 ``k * threshold``)."""
    n = torch.floor(c / threshold)
    n = n + ((n + 1) * threshold <= c).double()
    n = n - (n * threshold > c).double()
    return n.long()


def _integrate(alphas: Tensor, lengths: Tensor, threshold: float,
               target_lengths: Optional[Tensor], tail_threshold: float):
    """Weights (B, T) and the float64 cumulative sum (B, T + 1) over frames plus a tail frame."""
    batch, frames = alphas.shape
    t = torch.arange(frames + 1, device=alphas.device)
    valid = t[:frames] < lengths[:, None]
    weights = alphas.masked_fill(~valid, 0.0)  # (B, T)
    w64 = weights.double()
    if target_lengths is not None:
        goal = target_lengths.double() * threshold  # (B,)
        total = w64.sum(1)
        empty = (total <= 0) & (goal > 0)
        if bool(empty.any()):
            b = int(empty.nonzero()[0])
            raise ValueError(f"alphas[{b}] sums to 0 on its valid frames and cannot be scaled to "
                             f"target_lengths[{b}] = {int(target_lengths[b])}")
        w64 = w64 * (goal / total.clamp(min=1e-300))[:, None]
        weights = w64.to(alphas.dtype)
    ext = F.pad(w64, (0, 1))  # (B, T + 1): frame T_b is the tail slot
    if tail_threshold > 0:
        ext = ext + (t[None, :] == lengths[:, None]).double() * tail_threshold
    csum = ext.cumsum(1)  # (B, T + 1) float64
    if target_lengths is not None:
        # Exact arithmetic gives goal at the last valid frame; pin it so exactly L tokens fire.
        csum = torch.minimum(csum, goal[:, None])
        csum = torch.where(t[None, :] >= (lengths - 1)[:, None], goal[:, None], csum)
    return weights, csum


def token_count(alphas: Tensor, lengths: Tensor, threshold: float = 1.0,
                tail_threshold: float = 0.0) -> Tensor:
    """Predicted token count at inference: ``floor((sum(alphas) + tail_threshold) / threshold)``.

    This is FunASR's ``token_num`` (``floor(sum alphas)`` after tail handling, threshold 1), and
    always equals ``cif(..., tail_threshold=tail_threshold).token_lengths``.

    Args:
        alphas (Tensor): (B, T) predictor weights. lengths (Tensor): (B,) valid frames.
        threshold (float): firing threshold. tail_threshold (float): tail added after the last
            valid frame.

    Returns:
        Tensor: (B,) int64.
    """
    lengths = _check_alphas(alphas, lengths)
    threshold = check_number(threshold, "threshold", 0.0, strict=True)
    tail_threshold = check_number(tail_threshold, "tail_threshold", 0.0, strict=False)
    _, csum = _integrate(alphas, lengths, threshold, None, tail_threshold)
    return _count_fires(csum[:, -1], threshold)


def _token_frames(csum: Tensor, counts: Tensor, lengths: Tensor, threshold: float, max_l: int):
    """(B, L) first contributing frame and firing frame of each token (-1 beyond counts)."""
    k = torch.arange(max_l, device=csum.device, dtype=torch.float64)
    starts = torch.searchsorted(csum, (k * threshold).expand(csum.shape[0], -1).contiguous(), right=True)
    ends = torch.searchsorted(csum, ((k + 1) * threshold).expand(csum.shape[0], -1).contiguous())
    last = (lengths - 1).clamp(min=0)[:, None]
    real = length_mask(counts, max_l)
    starts = torch.minimum(starts, last).masked_fill(~real, -1)
    ends = torch.minimum(ends, last).masked_fill(~real, -1)
    return starts, ends


def _embeddings(hidden: Tensor, csum: Tensor, lengths: Tensor, counts: Tensor, threshold: float,
                max_l: int) -> Tensor:
    """(B, L, D) token embeddings as one weighted bag-sum (``embedding_bag``) over frames.

    Frame t gives token k the overlap of ``[c_{t-1}, c_t)`` with ``[k, k + 1) * threshold``:
    usually one token, two at a firing frame, more when a weight exceeds the threshold. Each
    (frame, token) pair with a positive weight is one bag entry, in frame order within a token.
    Tokens that never fire go to one spare bag per item, dropped at the end.
    """
    batch, frames, dim = hidden.shape
    valid = length_mask(lengths, frames).double()  # (B, T)
    c_now = csum[:, :frames, None]  # (B, T, 1) c_t
    c_prev = F.pad(csum[:, :-1], (1, 0))[:, :frames, None]  # (B, T, 1) c_{t-1}
    token = _count_fires(c_prev, threshold)  # (B, T, 1) token in progress when frame t starts
    spans = int(math.ceil(float((c_now - c_prev).detach().max()) / threshold)) + 1 if frames else 1
    tok = token + torch.arange(spans, device=hidden.device)  # (B, T, J) tokens frame t may feed
    lo = tok.double() * threshold
    weight = (torch.minimum(c_now, lo + threshold) - torch.maximum(c_prev, lo)).clamp(min=0.0)
    weight = weight * valid[..., None]  # (B, T, J)
    keep = weight > 0
    items = torch.arange(batch, device=hidden.device)[:, None, None]
    fired = tok < counts[:, None, None]
    bag = torch.where(fired, items * max_l + tok, batch * max_l + items).expand_as(tok)[keep]
    frame = (items * frames + torch.arange(frames, device=hidden.device)[:, None]).expand_as(tok)[keep]
    order = bag.argsort(stable=True)  # spare bags last; stable keeps frame order in a bag
    bag, frame, per_entry = bag[order], frame[order], weight[keep][order].to(hidden.dtype)
    offsets = torch.searchsorted(bag, torch.arange(batch * (max_l + 1), device=hidden.device))
    table = hidden.reshape(batch * frames, dim)  # (B * T, D) one row per frame
    out = F.embedding_bag(frame, table, offsets, mode="sum",
                          per_sample_weights=per_entry)  # (B * (L + 1), D)
    return out[:batch * max_l].view(batch, max_l, dim)  # (B, L, D)


def cif(hidden: Optional[Tensor], alphas: Tensor, lengths: Tensor, threshold: float = 1.0,
        target_lengths: Optional[Tensor] = None, tail_threshold: float = 0.0) -> CIFOutput:
    """Continuous integrate-and-fire over a padded batch.

    Training: pass ``target_lengths``; the alphas of each item are scaled to sum to
    ``target_lengths * threshold`` so that exactly ``target_lengths`` tokens fire.
    Inference: pass ``tail_threshold`` (e.g. 0.45) to add that weight right after each item's
    last valid frame (its own last frame, not the batch's), so a nearly complete last token still
    fires; the tail frame carries a zero feature (padding features are never read).

    Args:
        hidden (Tensor or None): (B, T, D) encoder features (None: boundaries only).
        alphas (Tensor): (B, T) non-negative weights from the predictor.
        lengths (Tensor): (B,) valid frames.
        threshold (float): firing threshold (beta).
        target_lengths (Tensor, optional): (B,) token counts (training).
        tail_threshold (float): inference-only tail weight (0 disables).

    Returns:
        CIFOutput: embeddings (B, L, D), token_lengths (B,), fire_frames (B, T),
        token_starts / token_ends (B, L), alphas (B, T).
    """
    lengths = _check_alphas(alphas, lengths)
    batch, frames = alphas.shape
    if hidden is not None:
        check_tensor(hidden, "hidden", 3, "float", "(B, T, D)")
        if hidden.shape[:2] != alphas.shape:
            raise ValueError(f"hidden must have shape ({batch}, {frames}, D) to match alphas, "
                             f"got {tuple(hidden.shape)}")
    threshold = check_number(threshold, "threshold", 0.0, strict=True)
    tail_threshold = check_number(tail_threshold, "tail_threshold", 0.0, strict=False)
    if target_lengths is not None:
        target_lengths = check_lengths(target_lengths, batch, 2 ** 62, "target_lengths", alphas.device)
        if tail_threshold > 0:
            raise ValueError(f"tail_threshold is for inference only; got tail_threshold = "
                             f"{tail_threshold} together with target_lengths")
    weights, csum = _integrate(alphas, lengths, threshold, target_lengths, tail_threshold)
    fired = _count_fires(csum, threshold)  # (B, T + 1) tokens fired up to each frame
    counts = fired[:, -1]
    max_l = int(counts.max())
    per_frame = fired - F.pad(fired[:, :-1], (1, 0))  # (B, T + 1)
    t = torch.arange(frames, device=alphas.device)
    tail_fired = per_frame.gather(1, lengths[:, None])[:, 0] > 0  # the tail slot fired
    fire_frames = (per_frame[:, :frames] > 0) | (tail_fired[:, None] & (t == (lengths - 1)[:, None]))
    fire_frames &= t < lengths[:, None]
    starts, ends = _token_frames(csum, counts, lengths, threshold, max_l)
    embeddings = None
    if hidden is not None:
        embeddings = _embeddings(hidden, csum, lengths, counts, threshold, max_l)
    return CIFOutput(embeddings, counts, fire_frames, starts, ends, weights)


def quantity_loss(alphas: Tensor, lengths: Tensor, target_lengths: Tensor,
                  reduction: str = "mean") -> Tensor:
    """Paraformer quantity (MAE) loss ``|sum(alphas over valid frames) - target_length|``.

    Args:
        alphas (Tensor): (B, T) unscaled predictor weights. lengths (Tensor): (B,) valid frames.
        target_lengths (Tensor): (B,) token counts.
        reduction (str): "mean" over the batch (FunASR's default), "sum", or "none" ((B,)).
            For FunASR's ``length_normalized_loss`` use "sum" divided by the token count.
    """
    lengths = _check_alphas(alphas, lengths)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    target_lengths = check_lengths(target_lengths, alphas.shape[0], 2 ** 62, "target_lengths",
                                   alphas.device)
    valid = length_mask(lengths, alphas.shape[1])
    loss = (alphas.masked_fill(~valid, 0.0).sum(1) - target_lengths.to(alphas.dtype)).abs()
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def fire_timestamps(token_starts: Tensor, token_ends: Tensor, token_lengths: Tensor,
                    frame_shift: float, offset: float = 0.0) -> list:
    """Token times in seconds from CIF firing: token u spans frames
    ``[token_starts[u], token_ends[u]]`` (its first contributing frame to its firing frame).

    Args:
        token_starts (Tensor): (B, L), token_ends (Tensor): (B, L), token_lengths (Tensor): (B,)
            as in :class:`CIFOutput`.
        frame_shift (float): seconds per frame. offset (float): seconds added to every time.

    Returns:
        list[list[tuple[float, float]]]: per item, ``(start, end)`` with
        ``end = (token_ends + 1) * frame_shift + offset``.
    """
    check_tensor(token_starts, "token_starts", 2, "int", "(B, L)")
    check_tensor(token_ends, "token_ends", 2, "int", "(B, L)")
    if token_starts.shape != token_ends.shape:
        raise ValueError(f"token_starts {tuple(token_starts.shape)} and token_ends "
                         f"{tuple(token_ends.shape)} must have the same shape")
    counts = check_lengths(token_lengths, token_starts.shape[0], token_starts.shape[1], "token_lengths")
    shift = check_number(frame_shift, "frame_shift", 0.0, strict=True)
    check_number(offset, "offset")
    out = []
    for s_row, e_row, n in zip(token_starts.tolist(), token_ends.tolist(), counts.tolist()):
        out.append([(s * shift + offset, (e + 1) * shift + offset) for s, e in zip(s_row[:n], e_row[:n])])
    return out


def segment_alphas(ends: Tensor, lengths: Tensor, end_token: bool = False) -> tuple[Tensor, Tensor]:
    """CIF weights (B, T) that fire one token per segment of a frame alignment, and the token
    counts (B,): Paraformer-v2-style firing from CTC instead of the predictor.

    A token's segment is the frames after the previous token's last frame up to its own last
    frame; each frame of it gets ``1 / (frames of the segment)`` so the segment integrates to
    exactly one token (threshold 1). The frames after the last token form one more segment (an
    end token) with ``end_token`` and get weight 0 otherwise.

    Args:
        ends (Tensor): shape (B, T), bool, True at the last frame of each token
            (:func:`nar.align.token_ends`).
        lengths (Tensor): shape (B,), valid frames.
        end_token (bool): the trailing frames form an end token.
    """
    check_tensor(ends, "ends", 2, "bool", "(B, T)")
    lengths = check_lengths(lengths, ends.shape[0], ends.shape[1], device=ends.device)
    frames = ends.shape[1]
    valid = length_mask(lengths, frames)
    ends = ends & valid
    tokens = ends.sum(1)
    segment = (ends.cumsum(1) - ends.long()).masked_fill(~valid, 0)  # (B, T): token ends before t
    use = valid & (segment < tokens[:, None])
    counts = tokens
    if end_token:
        tail = valid & (segment == tokens[:, None])
        use = use | tail
        counts = tokens + tail.any(1).long()
    size = torch.zeros(ends.shape[0], frames + 1, device=ends.device)
    size.scatter_add_(1, segment, use.float())
    alphas = torch.where(use, 1.0 / size.gather(1, segment).clamp(min=1), torch.zeros_like(size[:, :frames]))
    return alphas, counts

