"""The Paraformer CIF predictor: one firing weight per encoder frame, integrated by
:func:`nar.cif.cif` into one acoustic embedding per token.

Shapes: B batch, T encoder frames, D model dim, L tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from nar.base.tensors import length_mask
from nar.cif import CIFOutput, cif

PREDICTOR_VARIANTS = ("v1", "v2")


class CIFPredictor(torch.nn.Module):
    """Per-frame CIF weights: conv1d over encoder frames → ReLU → linear → sigmoid.

    ``alphas = relu(sigmoid(x) * smooth_factor - noise_threshold)``, zero on padding.

    Args:
        idim: encoder output dim D.
        l_order, r_order: left/right context of the convolution (kernel l + r + 1).
        threshold: CIF firing threshold.
        dropout: dropout on the convolution output (variant v1 only, as in FunASR).
        smooth_factor, noise_threshold: see the formula above.
        tail_threshold: inference-only weight added right after each item's last frame so a
            nearly complete last token still fires (FunASR's ``tail_process_fn``); 0 disables.
        variant: ``"v2"`` (FunASR ``CifPredictorV2``: full convolution, no residual) or
            ``"v1"`` (FunASR ``CifPredictor``: depthwise convolution + residual + dropout).

    Padding frames are zeroed before the convolution, so an utterance gets the same alphas
    alone or in a padded batch.
    """

    def __init__(
        self,
        idim: int,
        l_order: int = 1,
        r_order: int = 1,
        threshold: float = 1.0,
        dropout: float = 0.1,
        smooth_factor: float = 1.0,
        noise_threshold: float = 0.0,
        tail_threshold: float = 0.45,
        variant: str = "v2",
    ):
        super().__init__()
        if variant not in PREDICTOR_VARIANTS:
            raise ValueError(f"predictor_conf.variant must be one of {PREDICTOR_VARIANTS}, got {variant!r}")
        if l_order < 0 or r_order < 0:
            raise ValueError(f"predictor_conf l_order/r_order must be >= 0, got {l_order}, {r_order}")
        if threshold <= 0 or tail_threshold < 0:
            raise ValueError(f"need threshold > 0 and tail_threshold >= 0, got {threshold}, {tail_threshold}")
        self.l_order, self.r_order = l_order, r_order
        self.variant = variant
        groups = idim if variant == "v1" else 1
        self.cif_conv1d = torch.nn.Conv1d(idim, idim, l_order + r_order + 1, groups=groups)
        self.cif_output = torch.nn.Linear(idim, 1)
        self.dropout = torch.nn.Dropout(p=dropout)
        self.threshold = float(threshold)
        self.smooth_factor = float(smooth_factor)
        self.noise_threshold = float(noise_threshold)
        self.tail_threshold = float(tail_threshold)

    def alphas(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D), lengths (B,) -> alphas (B, T), zero on padding (float32)."""
        valid = length_mask(lengths, hidden.size(1))
        context = hidden.float().masked_fill(~valid[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        out = self.cif_conv1d(F.pad(context, (self.l_order, self.r_order)))
        if self.variant == "v1":
            out = self.dropout(out + context)
        out = torch.relu(out.transpose(1, 2))
        alphas = torch.sigmoid(self.cif_output(out)).squeeze(-1)  # (B, T)
        alphas = torch.relu(alphas * self.smooth_factor - self.noise_threshold)
        return alphas.masked_fill(~valid, 0.0)

    def forward(
        self,
        hidden: torch.Tensor,
        lengths: torch.Tensor,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> tuple[CIFOutput, torch.Tensor]:
        """CIF on the encoder output.

        Training (``target_lengths`` given): alphas scaled to fire exactly that many tokens.
        Inference: the tail weight is added and ``floor(sum(alphas) + tail)`` tokens fire.

        Returns:
            (CIFOutput, alphas): the CIF result (embeddings (B, L, D), token_lengths (B,),
            firing frames) and the unscaled alphas (B, T) for the quantity loss.
        """
        alphas = self.alphas(hidden, lengths)
        tail = 0.0 if target_lengths is not None else self.tail_threshold
        out = cif(hidden.float(), alphas, lengths, threshold=self.threshold,
                  target_lengths=target_lengths, tail_threshold=tail)
        return out, alphas
