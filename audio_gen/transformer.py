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


def position_angles(positions: Tensor, dim: int, what: str = "sinusoidal positions") -> Tensor:
    """(B, T) integer positions -> (B, T, ``dim`` / 2) angles position x 10000^(-i / (dim / 2)),
    the frequencies shared by the sinusoidal and the rotary encodings."""
    if dim % 2:
        raise ValueError(f"dim must be even for {what}, got {dim}")
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    return positions.to(torch.float32)[..., None] * freq


def sinusoid_positions(positions: Tensor, dim: int) -> Tensor:
    """(B, T) integer positions -> (B, T, ``dim``) sinusoidal encodings (sin | cos halves)."""
    angle = position_angles(positions, dim)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


#: Position encodings accepted by :class:`BidirectionalTransformer`.
POSITION_ENCODINGS = ("sin", "rope", "sin+rope")


def rotary_tables(positions: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """(B, T) integer positions -> cos, sin tables (B, 1, T, head_dim / 2) for :func:`rotate`."""
    angle = position_angles(positions, head_dim, "rotary positions")[:, None]  # (B, 1, T, Dh/2)
    return angle.cos(), angle.sin()


def rotate(x: Tensor, tables: tuple[Tensor, Tensor]) -> Tensor:
    """Rotary position embedding (Su et al., RoFormer) of (B, H, T, Dh) queries or keys: each pair
    (x_i, x_{i + Dh/2}) is rotated by position x frequency_i, so a query-key dot product depends
    on the positions only through their difference."""
    cos, sin = tables
    a, b = x.float().chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).to(x.dtype)


def make_input_conv(d_model: int, kernel: int) -> Optional[nn.Conv1d]:
    """A same-length convolution of ``kernel`` frames over (embedded) input frames, or None for
    kernel 0: the ``input_conv`` local prior of MAGNeT and MaskGCT (see :func:`apply_input_conv`)."""
    if kernel < 0 or (kernel and kernel % 2 == 0):
        raise ValueError(f"input_conv must be a positive odd kernel (or 0: off), got {kernel}")
    return nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2) if kernel else None


def apply_input_conv(conv: Optional[nn.Conv1d], x: Tensor, valid: Tensor) -> Tensor:
    """x + conv(x) over (B, T, D) with the padding zeroed first (an item never sees the batch's
    padding); x unchanged when conv is None. valid: (B, T) bool."""
    if conv is None:
        return x
    x = x * valid[..., None].to(x.dtype)
    return x + conv(x.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    """Pre-LN self-attention (+ optional cross-attention) + GELU feed-forward block.

    ``cross=True`` adds a pre-LN cross-attention sub-layer over a memory (e.g. text) after the
    self-attention. Self-attention can run incrementally with a key/value ``cache`` (a dict the
    block fills: autoregressive decoding one position at a time)."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int = 4, dropout: float = 0.1,
                 cross: bool = False, conv_kernel: int = 0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if cross:
            self.norm_x = nn.LayerNorm(d_model)
            self.q_x = nn.Linear(d_model, d_model)
            self.kv_x = nn.Linear(d_model, 2 * d_model)
            self.out_x = nn.Linear(d_model, d_model)
        self.cross = cross
        if conv_kernel:
            if conv_kernel < 0 or conv_kernel % 2 == 0:
                raise ValueError(f"conv_kernel must be a positive odd int (or 0: off), got {conv_kernel}")
            self.norm_c = nn.LayerNorm(d_model)
            self.conv_in = nn.Linear(d_model, 2 * d_model)
            self.conv = nn.Conv1d(d_model, d_model, conv_kernel, padding=conv_kernel // 2, groups=d_model)
            self.conv_out = nn.Linear(d_model, d_model)
        self.conv_kernel = conv_kernel
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model))
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, D/H)
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
        p = self.dropout.p if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, D/H)
        b, _, t, _ = h.shape
        return h.transpose(1, 2).reshape(b, t, -1)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of a (B, S, D) memory (computed once per sequence)."""
        k, v = self.kv_x(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, attn_mask: Tensor, memory: Optional[tuple] = None,
                memory_mask: Optional[Tensor] = None, cache: Optional[dict] = None,
                rotary: Optional[tuple] = None, valid: Optional[Tensor] = None) -> Tensor:
        """x (B, T, D); attn_mask bool broadcastable to (B, 1, T, T_keys), True = may be attended;
        memory: (keys, values) from :meth:`memory_kv` (cross blocks), memory_mask (B, 1, 1, S);
        cache: dict holding this block's past keys/values ("k", "v"), extended in place (keys
        cached after rotation); rotary: (cos, sin) tables of x's positions (:func:`rotary_tables`)
        applied to the self-attention queries and keys; valid: (B, T) bool, needed by the
        convolution sub-layer (padding is zeroed before it, so padding never leaks in)."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if rotary is not None:
            q, k = rotate(q, rotary), rotate(k, rotary)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        x = x + self.dropout(self.out(self._attend(q, k, v, attn_mask)))
        if self.cross:
            if memory is None:
                raise ValueError("a cross-attention block needs memory")
            qx = self._heads(self.q_x(self.norm_x(x)))
            x = x + self.dropout(self.out_x(self._attend(qx, memory[0], memory[1], memory_mask)))
        if self.conv_kernel:
            if cache is not None or valid is None:
                raise ValueError("the convolution sub-layer needs whole sequences (no cache) and valid")
            h = F.glu(self.conv_in(self.norm_c(x)), dim=-1) * valid[..., None].to(x.dtype)
            h = F.silu(self.conv(h.transpose(1, 2)).transpose(1, 2))
            x = x + self.dropout(self.conv_out(h))
        return x + self.dropout(self.ff(self.norm2(x)))


class BidirectionalTransformer(nn.Module):
    """A stack of :class:`Block` with a final LayerNorm.

    Args:
        d_model: model dim D; num_layers: blocks; num_heads: attention heads;
        ff_mult: feed-forward width as a multiple of D; dropout: dropout rate;
        cross: every block also cross-attends a memory (text conditioning);
        position: "sin" (absolute sinusoids added to the input, as audiocraft), "rope" (rotary
        positions in every self-attention, as the Llama blocks of Amphion's MaskGCT: attention
        scores depend on relative offsets, so "attend to my neighbours" is directly expressible)
        or "sin+rope" (both);
        conv_kernel: odd kernel of a Conformer-style convolution sub-layer in every block
        (pointwise + GLU, depthwise conv, SiLU, pointwise; no batch norm, so an item's output
        never depends on the batch), after the attention; 0 = off. Whole sequences only (no
        incremental decoding). A local prior: a masked frame sees its neighbours from the first
        step instead of waiting for attention to learn locality.

    Bidirectional by default; an explicit ``attn_mask`` (causal, banded) restricts it, and a
    ``cache`` list turns it into an incremental (autoregressive) decoder.
    """

    def __init__(self, d_model: int = 256, num_layers: int = 6, num_heads: int = 4, ff_mult: int = 4,
                 dropout: float = 0.1, cross: bool = False, position: str = "sin", conv_kernel: int = 0):
        super().__init__()
        if position not in POSITION_ENCODINGS:
            raise ValueError(f"position must be one of {POSITION_ENCODINGS}, got {position!r}")
        self.d_model = d_model
        self.cross = cross
        self.position = position
        self.head_dim = d_model // num_heads
        self.blocks = nn.ModuleList(Block(d_model, num_heads, ff_mult, dropout, cross, conv_kernel)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def memory_kv(self, memory: Tensor) -> list:
        """Per-block cross-attention keys/values of a (B, S, D) memory (reuse across steps)."""
        return [block.memory_kv(memory) for block in self.blocks]

    def forward(self, x: Tensor, valid: Tensor, positions: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, memory=None, memory_valid: Optional[Tensor] = None,
                cache: Optional[list] = None) -> Tensor:
        """x (B, T, D) input embeddings; valid (B, T) bool (False: padding, neither attended nor
        meaningful in the output); positions (B, T) integer positions added as sinusoids (None:
        0..T-1). Returns (B, T, D); padded positions hold zeros.

        attn_mask: optional bool (T, T) or (B, T, T), True = query may attend key, combined with
        the key padding; memory: (B, S, D) tensor or the list from :meth:`memory_kv`, with
        memory_valid (B, S) bool (cross stacks); cache: a list of one dict per block for
        incremental decoding (x holds only the new positions; ``valid`` then covers the cached
        and new positions, and ``attn_mask`` (T_new, T_all) if given)."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        keys = valid.shape[1] if valid.dim() == 2 else -1
        if valid.dtype != torch.bool or valid.dim() != 2 or valid.shape[0] != x.shape[0] or (
                cache is None and keys != x.shape[1]):
            raise ValueError(f"valid must be a bool tensor of shape {tuple(x.shape[:2])}, got "
                             f"{valid.dtype} {tuple(valid.shape)}")
        if positions is None:
            positions = torch.arange(keys - x.shape[1], keys, device=x.device).expand(x.shape[:2])
        if "sin" in self.position:
            x = x + sinusoid_positions(positions, self.d_model).to(x.dtype)
        rotary = rotary_tables(positions, self.head_dim) if "rope" in self.position else None
        # An item with no valid position would give NaN attention rows; let it attend to itself.
        attn = (valid | ~valid.any(1, keepdim=True))[:, None, None, :]  # (B, 1, 1, T_keys)
        if attn_mask is not None:
            attn = attn & (attn_mask[:, None] if attn_mask.dim() == 3 else attn_mask[None, None])
            # a query whose every key is excluded would be NaN: let it attend to everything valid
            attn = attn | ~attn.any(-1, keepdim=True)
        mem_mask = None
        if self.cross:
            if memory is None or memory_valid is None:
                raise ValueError("a cross-attention stack needs memory and memory_valid")
            if isinstance(memory, Tensor):
                memory = self.memory_kv(memory)
            mem_mask = (memory_valid | ~memory_valid.any(1, keepdim=True))[:, None, None, :]
        for i, block in enumerate(self.blocks):
            x = block(x, attn, memory[i] if self.cross else None, mem_mask,
                      None if cache is None else cache[i], rotary, valid)
        out_valid = valid[:, -x.shape[1]:]
        return self.norm(x) * out_valid[..., None].to(x.dtype)
