"""A bidirectional (non-causal) pre-LayerNorm transformer for masked generative models.

Shared by MaskGCT (``tts.models.maskgct``) and MAGNeT: self-attention over every valid
position, padding excluded by a key mask, sinusoidal positions given explicitly per position so a
sequence made of several segments (phones, then semantic tokens) can restart its positions in
each segment. Each item only attends to its own valid positions, so an item's output does not
depend on what else is in the batch or how much padding follows it.

Dimension legend: B batch, T positions, D model dim.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def sinusoid_positions(positions: Tensor, dim: int) -> Tensor:
    """(B, T) integer positions -> (B, T, ``dim``) sinusoidal encodings (sin | cos halves)."""
    if dim % 2:
        raise ValueError(f"dim must be even for sinusoidal positions, got {dim}")
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angle = positions.to(torch.float32)[..., None] * freq  # (B, T, D/2)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class Block(nn.Module):
    """Pre-LN self-attention + GELU feed-forward block."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """x (B, T, D); attn_mask (B, 1, 1, T) bool, True = may be attended."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout.p if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, T, D/H)
        x = x + self.dropout(self.out(h.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class BidirectionalTransformer(nn.Module):
    """A stack of :class:`Block` with a final LayerNorm.

    Args:
        d_model: model dim D; num_layers: blocks; num_heads: attention heads;
        ff_mult: feed-forward width as a multiple of D; dropout: dropout rate.
    """

    def __init__(self, d_model: int = 256, num_layers: int = 6, num_heads: int = 4, ff_mult: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.blocks = nn.ModuleList(Block(d_model, num_heads, ff_mult, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, valid: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """x (B, T, D) input embeddings; valid (B, T) bool (False: padding, neither attended nor
        meaningful in the output); positions (B, T) integer positions added as sinusoids (None:
        0..T-1). Returns (B, T, D); padded positions hold zeros."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        if valid.shape != x.shape[:2] or valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor of shape {tuple(x.shape[:2])}, got "
                             f"{valid.dtype} {tuple(valid.shape)}")
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[:2])
        x = x + sinusoid_positions(positions, self.d_model).to(x.dtype)
        # An item with no valid position would give NaN attention rows; let it attend to itself.
        attn = (valid | ~valid.any(1, keepdim=True))[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, attn)
        return self.norm(x) * valid[..., None].to(x.dtype)
