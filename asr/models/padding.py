"""Padding-invariant encoding with ESPnet encoders.

ESPnet's Conformer and E-Branchformer layers run depthwise convolutions over time without
masking the padded frames, so in a padded batch the last frames of a short utterance see
values computed from padding: a batch would not decode exactly as its items alone.
:func:`pad_safe_convolutions` zeroes the padded frames at the input of every temporal
``Conv1d`` (kernel > 1) inside the encoder layers for the duration of one forward pass.
Attention is already masked and every other layer works per frame, so with this the encoder
output of each item no longer depends on the padding around it.

Shapes: B batch, T frames (after subsampling), C channels.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _temporal_convs(module: torch.nn.Module) -> list[torch.nn.Conv1d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv1d) and m.kernel_size[0] > 1]


@contextlib.contextmanager
def pad_safe_convolutions(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block, the encoder's layer convolutions ignore padded frames.

    The frame mask is taken from the output of ``encoder.embed`` (the subsampling block, which
    returns ``(x, mask)`` with mask (B, 1, T) true on valid frames), so the encoder's own length
    arithmetic decides which frames are padding. Encoders without ``embed`` and ``encoders``
    attributes are left untouched.
    """
    embed = getattr(encoder, "embed", None)
    layers = getattr(encoder, "encoders", None)
    if embed is None or layers is None:
        yield
        return
    state: dict[str, torch.Tensor] = {}

    def keep_mask(_module, _inputs, output):
        mask = output[1]
        if isinstance(mask, torch.Tensor) and mask.dim() == 3:
            state["valid"] = mask[:, -1:, :]  # (B, 1, T)

    def zero_padding(_module, inputs):
        valid = state.get("valid")
        x = inputs[0]  # (B, C, T)
        if valid is None or valid.size(-1) != x.size(-1) or bool(valid.all()):
            return None
        return (x.masked_fill(~valid, 0.0),) + tuple(inputs[1:])

    handles = [embed.register_forward_hook(keep_mask)]
    handles += [c.register_forward_pre_hook(zero_padding) for c in _temporal_convs(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
