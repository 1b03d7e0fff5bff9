"""Feature frontends (ESPnet ``AbsFrontend``) added by nar-speech.

``kaldi_fbank_lfr`` (:class:`KaldiFbankLFR`): Kaldi fbank + low-frame-rate stacking, the
features of FunASR's Paraformer models.
"""

from asr.frontends.kaldi_fbank import KaldiFbankLFR, lfr_stack

#: YAML ``frontend:`` names -> classes
FRONTENDS: dict[str, type] = {"kaldi_fbank_lfr": KaldiFbankLFR}

__all__ = ["KaldiFbankLFR", "lfr_stack", "FRONTENDS"]
