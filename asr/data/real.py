"""``test_real``: real human speech from Debian ``pocketsphinx-testdata``, for sanity checks.

Five LibriVox utterances (``librivox/*.wav``, transcripts in ``librivox/transcription``,
one reader) and five "cards" clips (``cards/00[1-5].wav``, ``cards/cards.transcription``),
about 34 s in all. Transcript lines look like ``<s> ten of clubs </s> (001)``; they are
normalised with :func:`asr.data.text.normalize_text`. Audio that is not 16 kHz mono
16-bit is converted with sox into ``wav_dir``; otherwise ``wav.scp`` points at the
installed files.

Usage::

    python -m asr.data.real --out data/test_real
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from typing import Sequence

import soundfile as sf

from nar.base.kaldi import validate_data_dir, write_data_dir
from asr.data.text import MissingToolError, normalize_text
from nar.base.files import atomic_path

logger = logging.getLogger(__name__)

POCKETSPHINX_DATA = "/usr/share/pocketsphinx/test/data"
SAMPLE_RATE = 16000
# (speaker, sub-directory, transcription file)
SETS = (("cards", "cards", "cards.transcription"),
        ("librivox", "librivox", "transcription"))
_LINE = re.compile(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()\s]+)\)\s*$")


def parse_transcription(path: str) -> dict[str, str]:
    """``<s> words </s> (id)`` lines → ``{id: normalised words}``; errors name the line."""
    result: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _LINE.match(line)
            if m is None:
                raise ValueError(f"{path}:{lineno}: expected '<s> words </s> (id)', got {line!r}")
            words, key = normalize_text(m.group(1)), m.group(2)
            if not words or key in result:
                raise ValueError(f"{path}:{lineno}: empty transcript or duplicate id {key!r}")
            result[key] = words
    return result


def _needs_conversion(path: str) -> bool:
    info = sf.info(path)
    return info.samplerate != SAMPLE_RATE or info.channels != 1 or info.subtype != "PCM_16"


def _convert(src: str, dst: str) -> None:
    if shutil.which("sox") is None:
        raise MissingToolError("program 'sox' not found: install the Debian package 'sox'")
    logger.warning("%s: not 16 kHz mono 16-bit, converting to %s", src, dst)
    with atomic_path(dst) as tmp:
        subprocess.run(["sox", "-R", src, "-b", "16", "-c", "1", "-t", "wav", str(tmp),
                        "rate", "-h", str(SAMPLE_RATE)], check=True, capture_output=True)


def prepare_test_real(out: str, root: str = POCKETSPHINX_DATA, wav_dir: str | None = None) -> int:
    """Write the data dir ``out`` from ``root``; returns the number of utterances.

    Raises:
        MissingToolError: ``root`` is missing (install ``pocketsphinx-testdata``).
        ValueError: a transcript line is malformed or names a missing wav.
    """
    if not os.path.isdir(root):
        raise MissingToolError(f"{root} not found: install the Debian package "
                               "'pocketsphinx-testdata' (apt-get install pocketsphinx-testdata)")
    wav_dir = wav_dir or os.path.join(out, "wav")
    wav_scp, text, utt2spk = {}, {}, {}
    for speaker, sub, trans in SETS:
        for key, words in parse_transcription(os.path.join(root, sub, trans)).items():
            src = os.path.join(root, sub, key + ".wav")
            if not os.path.isfile(src):
                raise ValueError(f"{os.path.join(root, sub, trans)}: audio {src} missing")
            utt = f"{speaker}-{key}"
            if _needs_conversion(src):
                dst = os.path.join(wav_dir, utt + ".wav")
                _convert(src, dst)
                src = dst
            wav_scp[utt], text[utt], utt2spk[utt] = src, words, speaker
    write_data_dir(out, wav_scp=wav_scp, text=text, utt2spk=utt2spk)
    validate_data_dir(out)
    return len(wav_scp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="data directory to write")
    parser.add_argument("--root", default=POCKETSPHINX_DATA)
    parser.add_argument("--wav_dir", default=None, help="for converted audio (default OUT/wav)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    try:
        n = prepare_test_real(args.out, args.root, args.wav_dir)
    except (MissingToolError, ValueError) as e:
        logger.error("%s", e)
        return 1
    logger.info("%s: %d utterances", args.out, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
