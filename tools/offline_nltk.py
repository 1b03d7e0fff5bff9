"""Keep ESPnet's import of g2p_en from trying to download NLTK data at run time.

``g2p_en`` (imported by ``espnet2.text.phoneme_tokenizer``, itself imported by ESPnet's ASR
task) calls ``nltk.download`` at import when two resources are missing; this machine has no
network, so every import printed errors. nar-speech never uses g2p_en (its phonemes come from
espeak-ng), so the Makefile writes two empty, valid zip archives under ``<venv>/nltk_data``
where NLTK looks first. Using ESPnet's g2p_en tokenizer would then fail loudly on empty data.

Usage: python tools/offline_nltk.py   (run with the venv's python)
"""

import sys
import zipfile
from pathlib import Path

root = Path(sys.prefix) / "nltk_data"
for name in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip"):
    path = root / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w"):
            pass
