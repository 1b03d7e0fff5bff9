"""One iterative masked decoder (mask-predict) for every generator and refiner.

Dimension legend: B batch, K codebooks, T positions, V vocabulary, D model dim, U units
(tokens, or spans of ``span_len`` positions).

Each stage decodes one codebook in ``steps`` steps. A step: call ``forward`` on the current
tokens (masked positions hold ``mask_id``), optionally apply classifier-free guidance on logits
or on hidden states, filter (top-k / top-p), sample at an annealed temperature (argmax on the
last step), write the samples into the masked positions, score each unit's confidence
(optionally plus decaying Gumbel noise), and re-mask the least confident
``floor(schedule((i + 1) / steps) * units)`` units. Positions decided in earlier steps, pinned
positions (prompts, given codebooks) and padding are never re-masked; the last step leaves no
mask. Masks are chosen per item, so a batch decodes exactly as its items would alone when each
item has its own generator (see :mod:`nar.masking`) and ``forward`` treats items independently
(up to one-ulp differences that CPU vector kernels can make in exp/log depending on an element's
position in the tensor, which could only matter on exact near-ties).

The strategy knobs cover MaskGCT (tokens, cosine, noisy confidence, hidden-state CFG, top-k)
and MAGNeT (spans, logits CFG annealed with the mask ratio, top-p, stage-wise codebooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from nar.base.checks import check_int, check_lengths, check_tensor
from nar.base.tensors import length_mask
from nar.masking import SCHEDULES, Generators, schedule, uniform_noise

NEVER_REMASK = math.inf  #: confidence of units that must keep their token
FILTERED_LOGIT = -math.inf  #: logit of a label removed by top-k / top-p or the mask id
UNITS = ("token", "span")
CONFIDENCES = ("prob", "logprob")
GUIDANCES = ("none", "logits", "hidden")
_GUMBEL_EPS = 1e-10


@dataclass(frozen=True)
class DecodeStep:
    """What ``forward`` is asked for: step ``index`` (0-based) of ``steps`` in codebook ``stage``."""

    stage: int
    index: int
    steps: int

    @property
    def progress(self) -> float:
        return self.index / self.steps


@dataclass(frozen=True)
class MaskPredictConfig:
    """Strategies of :func:`mask_predict`.

    Attributes:
        mask_id: token id written at masked positions (never sampled).
        steps: steps per codebook stage: one int for all stages, or a tuple of K ints.
        schedule: number-to-mask schedule name (:data:`nar.masking.SCHEDULES`).
        unit: "token" or "span" (non-overlapping spans of ``span_len`` positions).
        span_len: positions per span unit.
        confidence: "prob" (probability of the sampled token; a span takes its minimum) or
            "logprob" (log-probability; a span sums them, i.e. minus its sum of -log p).
        confidence_noise: scale of Gumbel noise added to unit confidences at step i, decaying
            linearly: ``confidence_noise * (1 - i / steps)`` (MaskGCT's choice temperature).
        confidence_tempered: score confidence under the tempered distribution (MAGNeT) instead
            of the untempered filtered one (MaskGCT).
        temperature: sampling temperature at step 0; 0 means argmax everywhere.
        anneal_temperature: decay the temperature linearly, ``temperature * (1 - i / steps)``.
        min_temperature: floor of the annealed temperature (MAGNeT uses 0.01).
        top_k: keep the k most probable labels (0: off).
        top_p: keep the smallest set with probability >= top_p (1.0: off).
        guidance: "none" (``forward`` returns logits), "logits" (returns (cond, uncond) logits)
            or "hidden" (returns (cond, uncond) hidden states; ``head`` maps them to logits).
        cfg_scale: guidance scale s in ``cond + s * (cond - uncond)`` at the start (0: cond only).
        cfg_scale_end: scale when nothing is masked; the scale follows the mask ratio from
            ``cfg_scale`` to it (MAGNeT). None: constant ``cfg_scale``.
        cfg_rescale: MaskGCT's std rescale weight r in [0, 1] (per item, over valid positions).
        greedy_last: take the argmax on the last step of each stage.
        rescore_weight: weight w of a rescoring model's token probabilities in the confidence,
            ``(1 - w) * conf + w * conf_rescorer`` (MAGNeT's rescoring; needs ``rescore``).
    """

    mask_id: int
    steps: Union[int, tuple] = 10
    schedule: str = "cosine"
    unit: str = "token"
    span_len: int = 3
    confidence: str = "prob"
    confidence_noise: float = 0.0
    confidence_tempered: bool = False
    temperature: float = 1.0
    anneal_temperature: bool = True
    min_temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: str = "none"
    cfg_scale: float = 0.0
    cfg_scale_end: Optional[float] = None
    cfg_rescale: float = 0.0
    greedy_last: bool = True
    rescore_weight: float = 0.0

    def __post_init__(self):
        for name, value, names in (("schedule", self.schedule, SCHEDULES), ("unit", self.unit, UNITS),
                                   ("confidence", self.confidence, CONFIDENCES),
                                   ("guidance", self.guidance, GUIDANCES)):
            if value not in names:
                raise ValueError(f"{name} must be one of {names}, got {value!r}")
        steps = (self.steps,) if isinstance(self.steps, int) else tuple(self.steps)
        if not steps or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
            raise ValueError(f"steps must be a positive int or a tuple of them, got {self.steps!r}")
        check_int(self.mask_id, "mask_id", 0)
        check_int(self.span_len, "span_len", 1)
        check_int(self.top_k, "top_k", 0)
        for name in ("confidence_noise", "temperature", "min_temperature", "cfg_rescale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not 0.0 <= self.rescore_weight <= 1.0:
            raise ValueError(f"rescore_weight must be in [0, 1], got {self.rescore_weight!r}")
        if self.cfg_rescale > 1.0:
            raise ValueError(f"cfg_rescale must be in [0, 1], got {self.cfg_rescale!r}")

    def stage_steps(self, stages: int) -> tuple:
        """Steps of each of ``stages`` codebook stages."""
        if isinstance(self.steps, int):
            return (self.steps,) * stages
        if len(self.steps) != stages:
            raise ValueError(f"steps has {len(self.steps)} entries but the tokens have "
                             f"K = {stages} codebooks")
        return tuple(self.steps)


# --------------------------------------------------------------------------------------------
# Small steps (each testable on its own)
# --------------------------------------------------------------------------------------------
def num_to_mask(schedule_name: str, progress: float, units: Tensor) -> Tensor:
    """(B,) units left masked at ``progress``: ``floor(schedule(progress) * units)``."""
    ratio = schedule(schedule_name, float(progress))
    return torch.floor(units.double() * ratio + 1e-9).long().clamp(min=0, max=None).minimum(units)


def guide(cond: Tensor, uncond: Tensor, scale: float, rescale: float = 0.0,
          valid: Optional[Tensor] = None) -> Tensor:
    """Classifier-free guidance ``g = cond + scale * (cond - uncond)`` on (B, T, X) logits or
    hidden states, with MaskGCT's optional rescale ``g <- r * g * std(cond) / std(g) + (1 - r) * g``
    where the standard deviations are per item over its valid positions ``valid`` (B, T)."""
    if cond.shape != uncond.shape:
        raise ValueError(f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} must have "
                         "the same shape")
    out = cond + scale * (cond - uncond)
    if rescale > 0:
        if valid is None:
            valid = torch.ones(cond.shape[:2], dtype=torch.bool, device=cond.device)
        w = valid[..., None].to(cond.dtype)  # (B, T, 1)
        count = (w.sum((1, 2)) * cond.shape[-1]).clamp(min=1)  # (B,)

        def std(x):
            mean = (x * w).sum((1, 2)) / count
            return ((((x - mean[:, None, None]) ** 2) * w).sum((1, 2)) / count).sqrt()  # (B,)

        ratio = std(cond) / std(out).clamp(min=1e-12)
        out = rescale * out * ratio[:, None, None] + (1.0 - rescale) * out
    return out


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Keep the top-k labels and/or the top-p nucleus of each (..., V) row; others get
    :data:`FILTERED_LOGIT`. The nucleus is the smallest set whose probability reaches
    ``top_p`` (the best label is always kept)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, FILTERED_LOGIT)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the better labels
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, FILTERED_LOGIT)
    return logits


def gumbel(uniform: Tensor) -> Tensor:
    """Gumbel(0, 1) noise from uniform [0, 1) noise."""
    return -torch.log(-torch.log(uniform.clamp(_GUMBEL_EPS, 1.0 - _GUMBEL_EPS)))


def sample_tokens(logits: Tensor, temperature: float, noise: Optional[Tensor]) -> Tensor:
    """Gumbel-max sampling of (..., V) logits at ``temperature``; argmax when ``noise`` is None
    or the temperature is 0. ``noise``: Gumbel noise of the logits' shape."""
    if noise is None or temperature <= 0:
        return logits.argmax(-1)
    return (logits / temperature + noise).argmax(-1)


def token_confidence(logits: Tensor, tokens: Tensor, kind: str, temperature: float = 1.0) -> Tensor:
    """(B, T) probability (``kind="prob"``) or log-probability (``"logprob"``) of ``tokens``
    (B, T) under ``softmax(logits / temperature)`` of (B, T, V) logits."""
    scaled = logits / temperature if temperature > 0 else logits
    logp = scaled.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    return logp.exp() if kind == "prob" else logp


def unit_confidence(conf: Tensor, active: Tensor, span_len: int, kind: str) -> Tensor:
    """(B, U) confidence of spans of ``span_len`` positions from (B, T) token confidences over
    the positions where ``active`` (B, T) is True: minimum probability, or summed log-prob.
    Units with no active position get :data:`NEVER_REMASK`."""
    batch, size = conf.shape
    units = -(-size // span_len)
    pad = units * span_len - size
    fill = NEVER_REMASK if kind == "prob" else 0.0
    conf = torch.nn.functional.pad(conf.masked_fill(~active, fill), (0, pad), value=fill)
    grouped = conf.view(batch, units, span_len)  # (B, U, S)
    out = grouped.amin(-1) if kind == "prob" else grouped.sum(-1)
    any_active = torch.nn.functional.pad(active, (0, pad)).view(batch, units, span_len).any(-1)  # (B, U)
    return out.masked_fill(~any_active, NEVER_REMASK)


def select_lowest(conf: Tensor, counts: Tensor) -> Tensor:
    """(B, U) bool marking the ``counts[b]`` lowest-confidence units of each row (ties: lower
    index first)."""
    order = conf.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(conf.shape[1], device=conf.device)
                                             .expand_as(order))
    return ranks < counts[:, None]


# --------------------------------------------------------------------------------------------
# Decoding loop
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Setup:
    """Fixed inputs of a decoding run (internal)."""

    forward: Callable
    head: Optional[Callable]
    config: MaskPredictConfig
    lengths: Tensor  # (B,)
    valid: Tensor  # (B, T)
    generator: Generators
    progress: Optional[Callable]
    squeeze: bool  # tokens were given as (B, T)
    rescore: Optional[Callable] = None


def _step_logits(setup: _Setup, out, scale: float, shape: tuple) -> Tensor:
    """Turn ``forward``'s output into guided (B, T, V) logits."""
    cfg = setup.config
    if cfg.guidance == "none":
        if not isinstance(out, Tensor):
            raise TypeError("forward must return a logits tensor when guidance='none', "
                            f"got {type(out).__name__}")
        logits = out
    else:
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(x, Tensor) for x in out):
            raise TypeError(f"forward must return (cond, uncond) tensors when guidance={cfg.guidance!r}")
        logits = guide(out[0], out[1], scale, cfg.cfg_rescale, setup.valid)
        if cfg.guidance == "hidden":
            logits = setup.head(logits)
    if not isinstance(logits, Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != shape:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must have shape ({shape[0]}, {shape[1]}, V), got {got}")
    if cfg.mask_id < logits.shape[-1]:
        logits = logits.masked_fill(torch.arange(logits.shape[-1], device=logits.device) == cfg.mask_id,
                                    FILTERED_LOGIT)
    return logits


def _call_forward(setup: _Setup, tokens: Tensor, masked: Tensor, step: DecodeStep):
    if setup.squeeze:
        return setup.forward(tokens[:, 0], masked[:, 0], step)
    return setup.forward(tokens, masked, step)


def _decode_step(setup: _Setup, tokens: Tensor, masked: Tensor, stage_gen: Tensor,
                 units: Tensor, step: DecodeStep) -> None:
    """One step of stage ``step.stage``; updates ``tokens`` and ``masked`` (B, K, T) in place."""
    cfg, k, i, n = setup.config, step.stage, step.index, step.steps
    cur = masked[:, k]  # (B, T) positions predicted now
    active = cur.any(1)  # items with something left to decode (others draw no noise)
    ratio = schedule(cfg.schedule, step.progress)
    end = cfg.cfg_scale if cfg.cfg_scale_end is None else cfg.cfg_scale_end
    scale = end + (cfg.cfg_scale - end) * ratio
    logits = _step_logits(setup, _call_forward(setup, tokens, masked, step), scale, tuple(cur.shape))
    logits = filter_logits(logits, cfg.top_k, cfg.top_p)
    tau = cfg.temperature * (1.0 - step.progress) if cfg.anneal_temperature else cfg.temperature
    tau = max(tau, cfg.min_temperature) if cfg.temperature > 0 else 0.0
    greedy = tau <= 0 or (cfg.greedy_last and i == n - 1)
    draw_len = torch.where(active, setup.lengths, torch.zeros_like(setup.lengths))
    noise = None
    if not greedy:
        noise = gumbel(uniform_noise(tuple(logits.shape), draw_len, setup.generator,
                                     device=logits.device, dtype=logits.dtype))
    sampled = sample_tokens(logits, tau, noise)  # (B, T)
    tokens[:, k] = torch.where(cur, sampled, tokens[:, k])
    conf_tau = tau if cfg.confidence_tempered and not greedy else 1.0
    # Only positions predicted now are scored; others (padding, pins) may hold ids >= V.
    scored = torch.where(cur, tokens[:, k], torch.zeros_like(tokens[:, k]))
    conf = token_confidence(logits, scored, cfg.confidence, conf_tau)  # (B, T)
    if setup.rescore is not None and cfg.rescore_weight > 0:
        r_logits = setup.rescore(tokens[:, 0] if setup.squeeze else tokens, step)
        if not isinstance(r_logits, Tensor) or r_logits.shape[:2] != cur.shape:
            got = tuple(r_logits.shape) if isinstance(r_logits, Tensor) else type(r_logits).__name__
            raise ValueError(f"rescore must return ({cur.shape[0]}, {cur.shape[1]}, V) logits, got {got}")
        r_conf = token_confidence(r_logits.to(logits.dtype), scored, cfg.confidence)
        conf = (1.0 - cfg.rescore_weight) * conf + cfg.rescore_weight * r_conf
    span = cfg.span_len if cfg.unit == "span" else 1
    unit_conf = unit_confidence(conf, cur, span, cfg.confidence)  # (B, U)
    if cfg.confidence_noise > 0 and i < n - 1:
        unit_len = -(-draw_len // span)
        u_noise = uniform_noise(tuple(unit_conf.shape), unit_len, setup.generator,
                                device=unit_conf.device, dtype=unit_conf.dtype)
        # NEVER_REMASK (+inf) stays +inf: the noise is finite.
        unit_conf = unit_conf + cfg.confidence_noise * (1.0 - step.progress) * gumbel(u_noise)
    keep_masked = num_to_mask(cfg.schedule, (i + 1) / n, units)  # (B,)
    remask = select_lowest(unit_conf, keep_masked)  # (B, U)
    remask = remask.repeat_interleave(span, dim=1)[:, :cur.shape[1]]  # (B, T)
    masked[:, k] = remask & cur & stage_gen
    tokens[:, k] = torch.where(masked[:, k], cfg.mask_id, tokens[:, k])


def _units(gen: Tensor, span: int) -> Tensor:
    """(B,) number of units of a stage that contain a position to generate."""
    batch, size = gen.shape
    pad = -(-size // span) * span - size
    return torch.nn.functional.pad(gen, (0, pad)).view(batch, -1, span).any(-1).sum(1)  # (B, U) -> (B,)


def _check_inputs(forward, init_tokens, config, lengths, pinned, head):
    if not callable(forward):
        raise TypeError(f"forward must be callable, got {type(forward).__name__}")
    if not isinstance(config, MaskPredictConfig):
        raise TypeError(f"config must be a MaskPredictConfig, got {type(config).__name__}")
    if not isinstance(init_tokens, Tensor) or init_tokens.dim() not in (2, 3):
        got = tuple(init_tokens.shape) if isinstance(init_tokens, Tensor) else type(init_tokens).__name__
        raise ValueError(f"init_tokens must have shape (B, T) or (B, K, T), got {got}")
    check_tensor(init_tokens, "init_tokens", init_tokens.dim(), "int", "(B, K, T)")
    if init_tokens.shape[0] == 0:
        raise ValueError(f"init_tokens is an empty batch (shape {tuple(init_tokens.shape)})")
    if pinned is not None:
        check_tensor(pinned, "pinned", init_tokens.dim(), "bool", "like init_tokens")
        if pinned.shape != init_tokens.shape:
            raise ValueError(f"pinned must have the shape of init_tokens {tuple(init_tokens.shape)}, "
                             f"got {tuple(pinned.shape)}")
    if config.guidance == "hidden" and not callable(head):
        raise ValueError("guidance='hidden' needs head, a callable mapping (B, T, D) hidden states to logits")
    batch, size = init_tokens.shape[0], init_tokens.shape[-1]
    if lengths is None:
        return torch.full((batch,), size, dtype=torch.long, device=init_tokens.device)
    return check_lengths(lengths, batch, size, device=init_tokens.device)


def mask_predict(forward: Callable, init_tokens: Tensor, config: MaskPredictConfig, *,
                 lengths: Optional[Tensor] = None, pinned: Optional[Tensor] = None,
                 head: Optional[Callable] = None, generator: Generators = None,
                 progress: Optional[Callable] = None, rescore: Optional[Callable] = None) -> Tensor:
    """Iterative masked decoding of K codebooks, stage by stage.

    Args:
        forward: ``forward(tokens, mask, step)`` with ``tokens`` (B, K, T) int64 (masked
            positions hold ``config.mask_id``; codebooks after the current stage are masked too),
            ``mask`` (B, K, T) bool and ``step`` a :class:`DecodeStep`; returns the logits
            (B, T, V) of codebook ``step.stage``, or for guidance a pair (cond, uncond) of logits
            (``guidance="logits"``) or of hidden states (B, T, D) (``guidance="hidden"``).
            Tokens and mask are (B, T) when ``init_tokens`` is.
        init_tokens (Tensor): (B, T) or (B, K, T) integer tokens; values at pinned positions are
            kept, all other valid positions are generated.
        config (MaskPredictConfig): strategies.
        lengths (Tensor, optional): (B,) valid positions (default: all T); padding is never
            masked or changed.
        pinned (Tensor, optional): bool like ``init_tokens``; True = given (prompt, earlier
            stage), never masked.
        head: maps guided hidden states (B, T, D) to logits (B, T, V) (``guidance="hidden"``).
        generator: ``None``, a ``torch.Generator``, or B generators (one per item: the batch then
            decodes exactly as each item alone).
        progress: optional ``progress(step, tokens)`` called after every step with the
            :class:`DecodeStep` and a copy of the tokens (shaped like ``init_tokens``).
        rescore: optional ``rescore(tokens, step) -> (B, T, V)`` logits of codebook ``step.stage``
            under a rescoring model, given the tokens with this step's samples written in (later
            codebooks hold ``mask_id``); mixed into the confidence with ``config.rescore_weight``.

    Returns:
        Tensor: decoded tokens shaped like ``init_tokens``; no position holds ``mask_id`` except
        pinned or padded positions that held it already.
    """
    lengths = _check_inputs(forward, init_tokens, config, lengths, pinned, head)
    squeeze = init_tokens.dim() == 2
    tokens = (init_tokens[:, None] if squeeze else init_tokens).long().clone()  # (B, K, T)
    pin = torch.zeros_like(tokens, dtype=torch.bool) if pinned is None else (
        pinned[:, None] if squeeze else pinned).to(tokens.device)
    batch, stages, size = tokens.shape
    valid = length_mask(lengths, size)  # (B, T)
    gen = valid[:, None, :] & ~pin  # (B, K, T) positions to generate
    tokens = tokens.masked_fill(gen, config.mask_id)
    masked = gen.clone()
    if rescore is not None and not callable(rescore):
        raise TypeError(f"rescore must be callable, got {type(rescore).__name__}")
    setup = _Setup(forward, head, config, lengths, valid, generator, progress, squeeze, rescore)
    span = config.span_len if config.unit == "span" else 1
    for stage, steps in enumerate(config.stage_steps(stages)):
        units = _units(gen[:, stage], span)  # (B,)
        for index in range(steps):
            if not bool(masked[:, stage].any()):
                break  # no item has anything left in this stage
            step = DecodeStep(stage, index, steps)
            _decode_step(setup, tokens, masked, gen[:, stage], units, step)
            if progress is not None:
                progress(step, (tokens[:, 0] if squeeze else tokens).clone())
    return tokens[:, 0] if squeeze else tokens
