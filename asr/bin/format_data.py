"""Format a Kaldi-style data dir for training/decoding (the recipe's stage 2).

Usage:
    python -m asr.bin.format_data --src data/train --dst dump/raw/train --min_duration 0.1 --max_duration 20

Validates ``--src`` (errors name the file and the problem), writes ``--dst`` with absolute
audio paths, ``utt2num_samples`` and ``utt2dur``, drops utterances outside the duration range
(logged, counted), and marks completion with ``--dst/.done``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import soundfile

from nar.base.kaldi import DataDirError, read_data_dir, validate_data_dir, write_data_dir


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--min_duration", type=float, default=0.0, help="seconds")
    p.add_argument("--max_duration", type=float, default=float("inf"), help="seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    src = read_data_dir(args.src)  # validates, naming the file and problem
    if src.segments is not None:
        raise DataDirError(f"{args.src}/segments: segmented recordings are not supported yet")
    wav_scp, num_samples, durations, dropped = {}, {}, {}, []
    for utt, value in src.wav_scp.items():
        path = value.split()[0] if len(value.split()) == 1 else None
        if path is None or value.endswith("|"):
            raise DataDirError(f"{args.src}/wav.scp: {utt}: piped commands are not supported: {value!r}")
        path = os.path.abspath(path)
        try:
            info = soundfile.info(path)
        except Exception as e:
            raise DataDirError(f"{args.src}/wav.scp: {utt}: cannot read {path}: {e}") from e
        dur = info.frames / info.samplerate
        if not args.min_duration <= dur <= args.max_duration:
            dropped.append(utt)
            continue
        wav_scp[utt], num_samples[utt], durations[utt] = path, info.frames, f"{dur:.3f}"
    if not wav_scp:
        raise DataDirError(f"{args.src}: every utterance is outside [{args.min_duration}, {args.max_duration}] s")
    if dropped:
        logging.info(f"{args.src}: dropped {len(dropped)} utterances outside the duration range, e.g. {dropped[0]}")
    dst = Path(args.dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / ".done").unlink(missing_ok=True)
    keep = set(wav_scp)
    write_data_dir(
        str(dst),
        wav_scp,
        {k: v for k, v in src.text.items() if k in keep},
        {k: v for k, v in src.utt2spk.items() if k in keep},
        extra={"utt2num_samples": num_samples, "utt2dur": durations},
    )
    validate_data_dir(str(dst))
    (dst / ".done").touch()
    total = sum(float(d) for d in durations.values()) / 3600
    logging.info(f"{dst}: {len(wav_scp)} utterances, {total:.2f} h")


if __name__ == "__main__":
    main()
