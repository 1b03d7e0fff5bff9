"""The Paraformer decoder: a parallel (non-causal) transformer over token acoustic embeddings.

Its contract is its own, not ESPnet's ``AbsDecoder``/``ScorerInterface`` (those are for
autoregressive scorers in a beam search; this decoder predicts every token at once):
``forward(hs_pad (B, T, D), hlens (B,), queries (B, L, D), query_lens (B,)) -> (logits (B, L, V),
query_lens)``, padding of either side ignored. It is registered as ``decoder: paraformer`` in
:class:`asr.task.NARASRTask`.

Shapes: B batch, T encoder frames, D model dim, L tokens, V vocabulary.
"""

from __future__ import annotations

import torch
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.decoder_layer import DecoderLayer
from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)

from asr.models.layers import sinusoidal_positions
from nar.base.tensors import length_mask


class ParaformerDecoder(torch.nn.Module):
    """Parallel (non-causal) transformer decoder over token acoustic embeddings.

    Each of ``num_blocks`` layers: self-attention over all L positions (padding masked, no
    causal mask) → cross-attention to the encoder → feed-forward, pre-norm by default. By
    default the queries enter without positional encoding (their order comes from CIF), as in
    FunASR's ``ParaformerSANDecoder``. ``embed`` holds the token embeddings the GLM sampler
    substitutes (embedding scaled by sqrt(D) plus positional encoding, as FunASR's
    ``decoder.embed``).

    Two options give the decoder the token order that plain self-attention lacks (without them
    it is permutation-equivariant over the queries, and neighbouring acoustic embeddings with
    similar content tend to come out as the same token):

    * ``query_positional``: a sinusoidal positional encoding is added to the queries;
    * ``fsmn_kernel`` K > 0: before each layer, a depthwise convolution of width K over the
      token axis (padding masked) is added to the queries as a residual — the memory block of
      FunASR's SAN-M decoder, here in front of the self-attention instead of replacing it.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
        normalize_before: bool = True,
        concat_after: bool = False,
        query_positional: bool = False,
        fsmn_kernel: int = 0,
    ):
        super().__init__()
        dim = encoder_output_size
        if num_blocks < 1:
            raise ValueError(f"decoder_conf.num_blocks must be >= 1, got {num_blocks}")
        if fsmn_kernel < 0 or (fsmn_kernel and fsmn_kernel % 2 == 0):
            raise ValueError(f"decoder_conf.fsmn_kernel must be 0 or an odd width, got {fsmn_kernel}")
        self.query_positional = bool(query_positional)
        self.fsmn = None
        if fsmn_kernel:
            self.fsmn = torch.nn.ModuleList(
                torch.nn.Conv1d(dim, dim, fsmn_kernel, padding=fsmn_kernel // 2, groups=dim, bias=False)
                for _ in range(num_blocks)
            )
        self.embed = torch.nn.Sequential(
            torch.nn.Embedding(vocab_size, dim), PositionalEncoding(dim, positional_dropout_rate)
        )
        self.decoders = torch.nn.ModuleList(
            DecoderLayer(
                dim,
                MultiHeadedAttention(attention_heads, dim, self_attention_dropout_rate),
                MultiHeadedAttention(attention_heads, dim, src_attention_dropout_rate),
                PositionwiseFeedForward(dim, linear_units, dropout_rate),
                dropout_rate,
                normalize_before,
                concat_after,
            )
            for _ in range(num_blocks)
        )
        self.normalize_before = normalize_before
        self.after_norm = LayerNorm(dim) if normalize_before else None
        self.output_layer = torch.nn.Linear(dim, vocab_size)

    def forward(
        self,
        hs_pad: torch.Tensor,
        hlens: torch.Tensor,
        queries: torch.Tensor,
        query_lens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hs_pad (B, T, D) encoder output, hlens (B,), queries (B, L, D) token acoustic
        embeddings, query_lens (B,) -> logits (B, L, V), query_lens."""
        x = queries
        valid = length_mask(query_lens, x.size(1))
        tgt_mask = valid[:, None, :]  # (B, 1, L)
        memory_mask = length_mask(hlens, hs_pad.size(1))[:, None, :]  # (B, 1, T)
        if self.query_positional:
            x = x + sinusoidal_positions(x.size(1), x.size(2), x.device, x.dtype)[None]
        for i, layer in enumerate(self.decoders):
            if self.fsmn is not None:
                keep = valid[..., None].to(x.dtype)
                x = x + self.fsmn[i]((x * keep).transpose(1, 2)).transpose(1, 2) * keep
            x, tgt_mask, _, _ = layer(x, tgt_mask, hs_pad, memory_mask)
        if self.after_norm is not None:
            x = self.after_norm(x)
        return self.output_layer(x), query_lens

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids (>= 0) -> (B, L, D) reference embeddings for glancing sampling."""
        return self.embed(tokens)
