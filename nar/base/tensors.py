"""Length masks: the one place the ``arange(T) < lengths[:, None]`` idiom is written.

Shapes: B batch, T positions (frames, tokens, codebook steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["length_mask"]


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """(B, size) bool, True on the first ``lengths[b]`` positions of row b.

    Args:
        lengths (Tensor): shape (B,), integer; values may exceed ``size`` (the row is then all
            True) or be <= 0 (all False).
        size (int): T, the padded length.

    Returns:
        Tensor: shape (B, T), bool, on ``lengths``' device.
    """
    return torch.arange(size, device=lengths.device) < lengths[:, None]
