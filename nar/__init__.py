"""nar — the shared non-autoregressive core: alignment and parallel decoding on tensors.

Depends on torch and torchaudio only. Dimension legend used throughout:
B batch, T frames, L tokens, K codebooks, V vocabulary, D model dim.
"""

# The functions ``nar.cif.cif`` and ``nar.mask_predict.mask_predict`` are deliberately not
# re-exported here: as package attributes they would shadow their submodules
# (``import nar.cif as m`` would then give the function).

from nar.align import (
    TokenSpan,
    error_based_sampling,
    fits_ctc,
    forced_align,
    spans_to_timestamps,
    token_ends,
    token_spans,
    trigger_mask,
)
from nar.cif import CIFOutput, fire_timestamps, quantity_loss, segment_alphas, token_count
from nar.ctc import (
    CTCGreedyResult,
    CTCHypothesis,
    ctc_greedy_search,
    ctc_prefix_beam_search,
)
from nar.mask_predict import DecodeStep, MaskPredictConfig
from nar.masking import glancing_mask, schedule, span_mask, span_starts_for_rate, uniform_mask

__all__ = [
    "CIFOutput",
    "CTCGreedyResult",
    "CTCHypothesis",
    "DecodeStep",
    "MaskPredictConfig",
    "TokenSpan",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "error_based_sampling",
    "fire_timestamps",
    "fits_ctc",
    "forced_align",
    "glancing_mask",
    "quantity_loss",
    "schedule",
    "segment_alphas",
    "span_mask",
    "span_starts_for_rate",
    "spans_to_timestamps",
    "token_count",
    "token_ends",
    "token_spans",
    "trigger_mask",
    "uniform_mask",
]
