"""Padding-invariant encoding with ESPnet encoders.

ESPnet's Conformer and E-Branchformer layers run depthwise convolutions over time without
masking the padded frames, so in a padded batch the last frames of a short utterance see
values computed from padding: a batch would not decode exactly as its items alone.
:func:`pad_safe_convolutions` zeroes the padded frames at the input of every temporal
``Conv1d`` (kernel > 1) inside the encoder layers for the duration of one forward pass.
Attention is already masked and every other layer works per frame, so with this the encoder
output of each item no longer depends on the padding around it.

ESPnet's subsampling blocks also derive the output mask by slicing the padded input mask, which
in a padded batch marks up to two frames per item as valid that were computed from padding
(a 37-frame item alone gives 8 frames after ``conv2d``, inside a 60-frame batch 10). The
output mask is therefore recomputed from each item's own length.

Shapes: B batch, T frames (after subsampling), C channels.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _slice_len(n: torch.Tensor, stop: int, step: int) -> torch.Tensor:
    """Length of ``range(0, n - stop, step)`` (what ``mask[..., :-stop:step]`` keeps)."""
    return torch.div(n - stop + step - 1, step, rounding_mode="floor").clamp(min=0)


#: per ESPnet subsampling class, the (stop, step) slices it applies to the mask
SUBSAMPLING_SLICES = {
    "Conv2dSubsampling": ((2, 2), (2, 2)),
    "Conv2dSubsampling1": ((2, 1), (2, 1)),
    "Conv2dSubsampling2": ((2, 2), (2, 1)),
    "Conv2dSubsampling6": ((2, 2), (4, 3)),
    "Conv2dSubsampling8": ((2, 2), (2, 2), (2, 2)),
}


def subsampled_lengths(embed: torch.nn.Module, lengths: torch.Tensor) -> torch.Tensor | None:
    """Frames after ESPnet's subsampling block for unpadded inputs of ``lengths`` (B,)."""
    slices = SUBSAMPLING_SLICES.get(type(embed).__name__)
    if slices is None:
        return None
    for stop, step in slices:
        lengths = _slice_len(lengths, stop, step)
    return lengths


def _temporal_convs(module: torch.nn.Module) -> list[torch.nn.Conv1d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv1d) and m.kernel_size[0] > 1]


@contextlib.contextmanager
def pad_safe_convolutions(encoder: torch.nn.Module) -> Iterator[None]:
    """Within the block, the encoder's layer convolutions ignore padded frames.

    The frame mask is taken from the output of ``encoder.embed`` when it is a subsampling block
    (which returns ``(x, mask)`` with a bool mask (B, 1, T) true on valid frames), so the
    encoder's own length arithmetic decides which frames are padding; an embedding without
    subsampling (``input_layer: linear``) keeps the input lengths. Encoders without ``embed``
    and ``encoders`` attributes are left untouched.
    """
    embed = getattr(encoder, "embed", None)
    layers = getattr(encoder, "encoders", None)
    if embed is None or layers is None:
        yield
        return
    state: dict[str, torch.Tensor] = {}

    def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
        return torch.arange(frames, device=lengths.device)[None, None, :] < lengths[:, None, None]

    def keep_lengths(_module, args, kwargs):
        state["lengths"] = args[1] if len(args) > 1 else kwargs["ilens"]
        state["valid"] = valid_frames(state["lengths"], args[0].size(1))  # (B, 1, T)

    def fix_mask(module, _inputs, output):
        if not (isinstance(output, tuple) and len(output) == 2):
            return None  # no subsampling: the input lengths hold
        x, mask = output
        if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 3):
            return None
        lengths = subsampled_lengths(module, state["lengths"])
        if lengths is None:  # an unknown block: trust its mask
            state["valid"] = mask[:, -1:, :]
            return None
        state["valid"] = valid_frames(lengths, mask.size(-1)) & mask[:, -1:, :]
        return x, state["valid"]

    def zero_padding(_module, inputs):
        valid = state.get("valid")
        x = inputs[0]  # (B, C, T)
        if valid is None or valid.size(-1) != x.size(-1) or bool(valid.all()):
            return None
        return (x.masked_fill(~valid, 0.0),) + tuple(inputs[1:])

    handles = [
        encoder.register_forward_pre_hook(keep_lengths, with_kwargs=True),
        embed.register_forward_hook(fix_mask),
    ]
    handles += [c.register_forward_pre_hook(zero_padding) for c in _temporal_convs(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

