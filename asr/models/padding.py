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

The fix is claimed for the encoders of :data:`SUPPORTED_ENCODERS` with the subsampling blocks
of :data:`SUBSAMPLING_SLICES` (or none); :func:`check_pad_safe` refuses any other encoder with a
clear error when a model is built, instead of silently leaving it unfixed. One attention variant
is padding-dependent by construction and cannot be fixed from outside: ESPnet's legacy relative
positions (its relative shift wraps values across the padded length). It is kept, for parity
with the checkpoints that use it (converted FunASR Conformers), with a warning when the model is
built (``bench/peers.py``: with varied lengths, batch equals alone on 11 of 16 items; FunASR 4).

Shapes: B batch, T frames (after subsampling), C channels.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from espnet2.asr.encoder.branchformer_encoder import BranchformerEncoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
)

from espnet.nets.pytorch_backend.transformer.attention import LegacyRelPositionMultiHeadedAttention

from nar.base.tensors import length_mask

logger = logging.getLogger(__name__)


def uses_legacy_relative_positions(encoder: torch.nn.Module) -> bool:
    """Whether the encoder attends with ESPnet's legacy relative positions (``rel_pos_type:
    legacy``, FunASR's and old ESPnet configs' ``rel_pos`` + ``rel_selfattn``), whose relative
    shift wraps values across the padded length: such an encoder's output for an item depends on
    the padding around it, in ESPnet and FunASR alike."""
    return any(isinstance(m, LegacyRelPositionMultiHeadedAttention) for m in encoder.modules())

#: ESPnet encoders whose layers are per-frame except masked attention and temporal Conv1d
#: (which :func:`pad_safe_convolutions` masks): the ones a padded batch decodes like its items
SUPPORTED_ENCODERS = (ConformerEncoder, EBranchformerEncoder, BranchformerEncoder, TransformerEncoder)


def _slice_len(n: torch.Tensor, stop: int, step: int) -> torch.Tensor:
    """Length of ``range(0, n - stop, step)`` (what ``mask[..., :-stop:step]`` keeps)."""
    return torch.div(n - stop + step - 1, step, rounding_mode="floor").clamp(min=0)


#: per ESPnet subsampling class, the (stop, step) slices it applies to the mask
SUBSAMPLING_SLICES = {
    Conv2dSubsampling: ((2, 2), (2, 2)),
    Conv2dSubsampling1: ((2, 1), (2, 1)),
    Conv2dSubsampling2: ((2, 2), (2, 1)),
    Conv2dSubsampling6: ((2, 2), (4, 3)),
    Conv2dSubsampling8: ((2, 2), (2, 2), (2, 2)),
}


def check_pad_safe(encoder: torch.nn.Module) -> None:
    """Refuse an encoder for which :func:`pad_safe_convolutions` cannot guarantee that a padded
    batch encodes like its items: ValueError naming its class (and its input layer's)."""
    if type(encoder) not in SUPPORTED_ENCODERS:
        names = ", ".join(c.__name__ for c in SUPPORTED_ENCODERS)
        raise ValueError(f"encoder {type(encoder).__name__}: nar-speech decodes batches padding-invariantly "
                         f"only with {names}; choose one of them (encoder: conformer, e_branchformer, "
                         f"branchformer, transformer)")
    if uses_legacy_relative_positions(encoder):
        # kept for parity with the checkpoints that use them (converted FunASR Conformers)
        logger.warning(f"encoder {type(encoder).__name__} uses ESPnet's legacy relative positions "
                       "(rel_pos_type: legacy): its output depends on the padded length, so a padded batch "
                       "can decode an item differently from the item alone (as in ESPnet and FunASR); "
                       "decode with batch_size=1 for per-item results, or train with rel_pos_type: latest")
    embed = encoder.embed
    if type(embed) not in SUBSAMPLING_SLICES and not isinstance(embed, torch.nn.Sequential):
        raise ValueError(f"encoder {type(encoder).__name__}: input layer {type(embed).__name__} is not one "
                         f"whose output lengths are known (Conv2dSubsampling 1/2/4/6/8 or linear); choose "
                         f"encoder_conf.input_layer conv2d, conv2d1, conv2d2, conv2d6, conv2d8 or linear")


def subsampled_lengths(embed: torch.nn.Module, lengths: torch.Tensor) -> torch.Tensor | None:
    """Frames after ESPnet's subsampling block for unpadded inputs of ``lengths`` (B,)."""
    slices = SUBSAMPLING_SLICES.get(type(embed))
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
    subsampling (``input_layer: linear``) keeps the input lengths. The encoder must pass
    :func:`check_pad_safe` (checked here too).
    """
    check_pad_safe(encoder)
    embed, layers = encoder.embed, encoder.encoders
    state: dict[str, torch.Tensor] = {}

    def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
        return length_mask(lengths, frames)[:, None, :]  # (B, 1, T)

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

