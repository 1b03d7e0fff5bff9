"""asr.data — corpus preparation: text, Kaldi data dirs, audio loading, synthetic corpus.

- :mod:`asr.data.text` — offline English sentences and ``normalize_text``, the one
  normalisation used for transcripts and WER scoring.
- :mod:`asr.data.kaldi` — read/write/validate Kaldi/ESPnet data dirs; ``load_audio``.
- :mod:`asr.data.synth_en` — the synthetic corpus (``python -m asr.data.synth_en``).
- :mod:`asr.data.real` — ``test_real`` from Debian ``pocketsphinx-testdata``.
"""

from asr.data.text import normalize_text

__all__ = ["normalize_text"]
