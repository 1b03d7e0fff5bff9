"""asr.data — corpus preparation: text, synthetic corpus, real test audio.

- :mod:`asr.data.text` — offline English sentences and ``normalize_text``, the one
  normalisation used for transcripts and WER scoring.
- Kaldi/ESPnet data dirs are read, written and validated by :mod:`nar.base.kaldi`; audio
  files are read by :func:`asr.audio.load_audio`.
- :mod:`asr.data.synth_en` — the synthetic corpus (``python -m asr.data.synth_en``).
- :mod:`asr.data.real` — ``test_real`` from Debian ``pocketsphinx-testdata``.
"""

from asr.data.text import normalize_text

__all__ = ["normalize_text"]
