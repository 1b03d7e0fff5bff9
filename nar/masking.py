"""Masking for masked-token training and decoding: schedules, span masking (MAGNeT), glancing
sampling (Paraformer GLM), uniform masking (Mask-CTC), and per-item random draws.

Dimension legend: B batch, T positions (frames or tokens), L tokens, S span length.

Randomness: every random function takes ``generator``, which is ``None`` (global RNG), one
``torch.Generator``, or a sequence of B generators, one per item. With one generator per item,
item b's draws come only from its own generator and its own length, so a batch gives each
item exactly what that item gets alone (padding never changes the result).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from nar.base.checks import check_int, check_lengths, check_number, check_tensor
from nar.base.tensors import length_mask

#: ``None``, one generator, or one generator per batch item.
Generators = Union[None, torch.Generator, Sequence[torch.Generator]]

#: Names accepted by :func:`schedule`.
SCHEDULES = ("cosine", "linear", "sine")

_NOISE_PAD = 0.5  # value of uniform noise at padded positions (callers ignore it)


# --------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------
def _per_item_generators(generator: Generators, batch: int) -> Optional[list]:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if isinstance(generator, (str, bytes)) or not isinstance(generator, Sequence):
        raise TypeError(f"generator must be None, a torch.Generator or a sequence of them, "
                        f"got {type(generator).__name__}")
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"generator must hold one generator per item ({batch}), got {len(gens)}")
    for i, gen in enumerate(gens):
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"generator[{i}] must be a torch.Generator, got {type(gen).__name__}")
    return gens


def uniform_noise(size: tuple, lengths: Optional[Tensor], generator: Generators, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) noise of ``size`` = (B, T, *rest), drawn per item when asked.

    Args:
        size (tuple): (B, T, *rest).
        lengths (Tensor or None): (B,) valid positions along dim 1 (None: all T).
        generator: see the module docstring. With one generator per item, item b draws a
            (lengths[b], *rest) tensor from ``generator[b]``; padded positions hold 0.5.
        device, dtype: of the result.
    """
    size = tuple(int(s) for s in size)
    gens = _per_item_generators(generator, size[0])
    if gens is None:
        gen_device = generator.device if isinstance(generator, torch.Generator) else device
        noise = torch.rand(size, generator=generator, device=gen_device, dtype=dtype)
        return noise.to(device) if device is not None else noise
    sizes = [size[1]] * size[0] if lengths is None else lengths.tolist()
    out = torch.full(size, _NOISE_PAD, device=device, dtype=dtype)
    for b, (gen, n) in enumerate(zip(gens, sizes)):
        if n:
            draw = torch.rand((n,) + size[2:], generator=gen, device=gen.device, dtype=dtype)
            out[b, :n] = draw.to(out.device)
    return out


def choose_positions(lengths: Tensor, counts: Tensor, noise: Tensor) -> Tensor:
    """(B, T) bool with ``counts[b]`` positions chosen uniformly among the first ``lengths[b]``.

    Args:
        lengths (Tensor): (B,) int64; counts (Tensor): (B,) int64 in [0, lengths];
        noise (Tensor): (B, T) uniform keys; the ``counts[b]`` smallest valid keys are chosen
            (ties by position).
    """
    batch, size = noise.shape
    valid = length_mask(lengths, size)
    keys = noise.masked_fill(~valid, 2.0)  # padding sorts last
    order = keys.argsort(dim=1, stable=True)
    positions = torch.arange(size, device=noise.device).expand(batch, -1)
    ranks = torch.empty_like(order).scatter_(1, order, positions)  # rank of each position
    return (ranks < counts[:, None]) & valid


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
def schedule(name: str, progress):
    """Mask ratio at ``progress`` in [0, 1]: 1 at the start, 0 at the end, decreasing.

    ``cosine``: cos(pi/2 * p) (unmasks slowly first; MaskGIT/MAGNeT; MaskGCT's sin(pi/2 * t) with
    t = 1 - p is the same curve); ``linear``: 1 - p; ``sine``: 1 - sin(pi/2 * p) (unmasks fast
    first).

    Args:
        name (str): one of :data:`SCHEDULES`.
        progress (float or Tensor): any shape, values in [0, 1].

    Returns:
        float for a float input, else a Tensor of the same shape.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule name must be one of {SCHEDULES}, got {name!r}")
    if isinstance(progress, Tensor):
        if not progress.is_floating_point():
            progress = progress.double()
        if progress.numel() and (bool((progress < 0).any()) or bool((progress > 1).any())):
            raise ValueError(f"progress must be in [0, 1], got values in "
                             f"[{float(progress.min())}, {float(progress.max())}]")
        lib = torch
    else:
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):
            raise TypeError(f"progress must be a float or a Tensor, got {type(progress).__name__}")
        progress = float(progress)
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        lib = math
    if name == "cosine":
        return lib.cos(math.pi / 2 * progress)
    if name == "linear":
        return 1.0 - progress
    return 1.0 - lib.sin(math.pi / 2 * progress)


# --------------------------------------------------------------------------------------------
# Span masking (MAGNeT)
# --------------------------------------------------------------------------------------------
def span_rate_table(lengths: Tensor, span_len: int) -> Tensor:
    """Expected masked fraction for every number of span starts u, per item.

    Span starts are u distinct positions drawn uniformly from ``N = T + S - 1`` candidates
    (a span may begin up to S - 1 positions before the sequence and is clipped), so every
    position is covered by exactly S candidates and
    ``E[masked fraction] = 1 - C(N - S, u) / C(N, u) = 1 - prod_{i<S} (N - u - i) / (N - i)``,
    computed as that product (no factorials, no overflow).

    Args:
        lengths (Tensor): (B,) int64 sequence lengths T_b >= 1.
        span_len (int): S.

    Returns:
        Tensor: (B, U + 1) float64, entry u is E for u starts (u in [0, N_b]); entries beyond
        N_b are 1. U = max N_b. Each row is non-decreasing.
    """
    cands = lengths.double() + span_len - 1  # (B,) N
    u = torch.arange(int(cands.max()) + 1, device=lengths.device, dtype=torch.float64)  # (U + 1,)
    i = torch.arange(span_len, device=lengths.device, dtype=torch.float64)  # (S,)
    num = (cands[:, None, None] - u[None, :, None] - i).clamp(min=0.0)  # (B, U + 1, S)
    keep = (num / (cands[:, None, None] - i)).prod(-1)  # (B, U + 1) P(position unmasked)
    return 1.0 - keep


def span_starts_for_rate(lengths: Tensor, rate, span_len: int) -> Tensor:
    """MAGNeT's lookup: the number of span starts u whose expected masked fraction
    (:func:`span_rate_table`) is nearest to ``rate`` (ties: fewer starts).

    Args:
        lengths (Tensor): (B,) sequence lengths. rate (float or Tensor): scalar or (B,) in [0, 1].
        span_len (int): S.

    Returns:
        Tensor: (B,) int64. (:func:`span_mask` instead mixes the two bracketing counts so that
        the expected rate is exactly ``rate``.)
    """
    lengths = _check_batch_lengths(lengths)
    check_int(span_len, "span_len", 1)
    rate = _check_rate(rate, lengths.numel(), lengths.device)
    cands = lengths + span_len - 1
    table = span_rate_table(lengths.clamp(min=1), span_len)  # (B, U + 1)
    beyond = torch.arange(table.shape[1], device=lengths.device) > cands[:, None]
    gap = (table - rate[:, None]).abs().masked_fill(beyond, math.inf)
    return gap.argmin(dim=1).masked_fill(lengths == 0, 0)  # argmin: first (fewest) on ties


def _check_rate(rate, batch: int, device) -> Tensor:
    if isinstance(rate, Tensor):
        check_tensor(rate, "rate", 1, "float", "(B,)")
        if rate.numel() != batch:
            raise ValueError(f"rate must have shape ({batch},), got {tuple(rate.shape)}")
        rate = rate.to(device=device, dtype=torch.float64)
    else:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"rate must be a float or a (B,) tensor, got {type(rate).__name__}")
        rate = torch.full((batch,), float(rate), device=device, dtype=torch.float64)
    if bool(((rate < 0) | (rate > 1) | rate.isnan()).any()):
        raise ValueError(f"rate must be in [0, 1], got {rate.tolist()}")
    return rate


def _check_max_len(lengths: Tensor, max_len) -> int:
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        return longest
    check_int(max_len, "max_len")
    if max_len < longest:
        raise ValueError(f"max_len = {max_len} is shorter than the longest length {longest}")
    return max_len


def _check_batch_lengths(lengths) -> Tensor:
    check_tensor(lengths, "lengths", 1, "int", "(B,)")
    if lengths.numel() == 0:
        raise ValueError("lengths is an empty batch (shape (0,))")
    return check_lengths(lengths, lengths.numel(), 2 ** 62)


def span_mask(lengths: Tensor, rate, span_len: int, generator: Generators = None,
              max_len: Optional[int] = None) -> Tensor:
    """MAGNeT span masking with expected masked fraction exactly ``rate``.

    The number of span starts u comes from :func:`span_rate_table`: the two counts whose
    expected rates bracket ``rate`` are mixed at random so that the expected masked fraction is
    exactly ``rate``; the u starts are then drawn uniformly and each covers S positions.

    Args:
        lengths (Tensor): (B,) sequence lengths.
        rate (float or Tensor): target expected masked fraction, scalar or (B,), in [0, 1].
        span_len (int): span length S >= 1.
        generator: see the module docstring.
        max_len (int, optional): T of the result (default: max length).

    Returns:
        Tensor: (B, T) bool, True = masked; False beyond each length.
    """
    lengths = _check_batch_lengths(lengths)
    check_int(span_len, "span_len", 1)
    size = _check_max_len(lengths, max_len)
    batch, device = lengths.numel(), lengths.device
    rate = _check_rate(rate, batch, device)
    cands = lengths + span_len - 1  # (B,) N
    table = span_rate_table(lengths.clamp(min=1), span_len)  # (B, U + 1)
    table = table.masked_fill(torch.arange(table.shape[1], device=device) > cands[:, None], 1.0)
    low = torch.searchsorted(table, rate[:, None], right=True)[:, 0] - 1  # last u with E(u) <= rate
    low = torch.minimum(low.clamp(min=0), cands)
    high = torch.minimum(low + 1, cands)
    e_low, e_high = table.gather(1, low[:, None])[:, 0], table.gather(1, high[:, None])[:, 0]
    frac = ((rate - e_low) / (e_high - e_low).clamp(min=1e-300)).clamp(0.0, 1.0)
    noise = uniform_noise((batch, int(cands.max()) + 1), cands + 1, generator, device=device,
                          dtype=torch.float64)  # column 0: count rounding, rest: start keys
    count = low + (noise[:, 0] < frac).long() * (high > low).long()
    count = torch.where(lengths == 0, torch.zeros_like(count), count)
    starts = choose_positions(cands, count, noise[:, 1:])  # (B, N_max)
    csum = torch.nn.functional.pad(starts.long().cumsum(1), (1, 0))  # (B, N_max + 1)
    t = torch.arange(size, device=device)
    hi = (t + span_len).clamp(max=csum.shape[1] - 1)  # frame t covered by starts j in [t, t+S-1]
    lo = t.clamp(max=csum.shape[1] - 1)
    covered = (csum[:, hi] - csum[:, lo]) > 0  # (B, T)
    return covered & (t < lengths[:, None])


# --------------------------------------------------------------------------------------------
# Glancing and uniform masking
# --------------------------------------------------------------------------------------------
def glancing_mask(predictions: Tensor, targets: Tensor, target_lengths: Tensor, ratio: float,
                  generator: Generators = None) -> Tensor:
    """Paraformer GLM sampling: which positions get the ground-truth embedding.

    Per item, ``round((L_b - n_correct) * ratio)`` positions (``torch.round``, halves to even;
    FunASR truncates instead) are chosen uniformly at random among the L_b non-pad positions,
    correct or not, where ``n_correct`` counts the non-pad positions with
    ``predictions == targets``.

    Args:
        predictions (Tensor): (B, L) first-pass decoder argmax.
        targets (Tensor): (B, L) reference tokens (padding ignored).
        target_lengths (Tensor): (B,) L_b.
        ratio (float): sampling ratio in [0, 1].
        generator: see the module docstring.

    Returns:
        Tensor: (B, L) bool, True = replace by the ground-truth embedding.
    """
    check_tensor(predictions, "predictions", 2, "int", "(B, L)")
    check_tensor(targets, "targets", 2, "int", "(B, L)")
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions must have the shape of targets {tuple(targets.shape)}, "
                         f"got {tuple(predictions.shape)}")
    if targets.shape[0] == 0:
        raise ValueError(f"targets is an empty batch (shape {tuple(targets.shape)})")
    batch, size = targets.shape
    lengths = check_lengths(target_lengths, batch, size, "target_lengths", device=targets.device)
    check_number(ratio, "ratio", 0.0, 1.0)
    valid = length_mask(lengths, size)
    correct = ((predictions.to(targets.device) == targets) & valid).sum(1)  # (B,)
    counts = torch.round((lengths - correct).double() * ratio).long()
    noise = uniform_noise((batch, size), lengths, generator, device=targets.device)
    return choose_positions(lengths, counts, noise)


def uniform_mask(lengths: Tensor, rate=None, generator: Generators = None,
                 max_len: Optional[int] = None) -> Tensor:
    """Mask positions uniformly at random (Mask-CTC style).

    Per item, ``round(rate * T_b)`` positions, or, with ``rate=None``, a count drawn uniformly
    from {1, ..., T_b} (Mask-CTC's training rule), chosen uniformly among the T_b valid ones.

    Args:
        lengths (Tensor): (B,) sequence lengths.
        rate (float, Tensor or None): scalar or (B,) fraction in [0, 1], or None.
        generator: see the module docstring.
        max_len (int, optional): T of the result (default: max length).

    Returns:
        Tensor: (B, T) bool, True = masked.
    """
    lengths = _check_batch_lengths(lengths)
    size = _check_max_len(lengths, max_len)
    batch, device = lengths.numel(), lengths.device
    noise = uniform_noise((batch, size + 1), lengths + 1, generator, device=device,
                          dtype=torch.float64)  # column 0: the count, rest: position keys
    if rate is None:
        counts = (noise[:, 0] * lengths).floor().long() + 1
        counts = torch.minimum(counts, lengths)
    else:
        counts = torch.round(_check_rate(rate, batch, device) * lengths).long()
    return choose_positions(lengths, counts, noise[:, 1:])
