"""Paraformer: CIF predictor + glancing (GLM) sampler + parallel decoder (Gao et al., 2022).

:mod:`~asr.models.paraformer.predictor` (the CIF predictor), :mod:`~asr.models.paraformer.decoder`
(the parallel decoder), :mod:`~asr.models.paraformer.model` (the model: training losses, batched
recognition, the decode-protocol decoder :class:`ParaformerSearch`).
"""

from asr.models.paraformer.decoder import ParaformerDecoder
from asr.models.paraformer.model import FIRING_MODES, ParaformerModel, ParaformerResult, ParaformerSearch
from asr.models.paraformer.predictor import CIFPredictor

__all__ = ["CIFPredictor", "FIRING_MODES", "ParaformerDecoder", "ParaformerModel", "ParaformerResult",
           "ParaformerSearch"]
