"""asr — speech recognition models, training task and inference.

``from asr import Speech2Text`` is the inference API, ``DecodeConfig`` its decode options
(:mod:`asr.decoding`); imported lazily: ESPnet is heavy.
"""


def __getattr__(name):
    if name in ("Speech2Text", "Hypothesis", "DecodeConfig"):
        from asr import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
