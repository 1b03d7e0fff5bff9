"""Format a Kaldi-style data dir for training/decoding (the recipe's stage 2).

Usage:
    python -m asr.bin.format_data --src data/train --dst dump/raw/train --min_duration 0.1 --max_duration 20

Validates ``--src`` (errors name the file and the problem), writes ``--dst`` with absolute
audio paths, ``utt2num_samples`` and ``utt2dur``, drops utterances outside the duration range
(logged, counted), and marks completion with ``--dst/.done``.

``--dst/.done`` is a stamp (:mod:`nar.base.stamps`, JSON): the signature of what the run read
(the data dir's files, hashed; the audio files, stat'ed; the options) and of what it wrote. A
run whose inputs, options and outputs all match the stamp is skipped at once (no audio is
opened); otherwise the log says why it reruns ("wav.scp changed (sha256 differs)", "option
min_duration 0.1 -> 0.5", ...). ``--force`` rebuilds anyway.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import soundfile

from asr.audio import AudioFileError, check_not_truncated
from nar.base.files import check_utf8
from nar.base.kaldi import DataDirError, read_data_dir, validate_data_dir, write_data_dir
from nar.base.stamps import StageStamp, audio_files_of_scp, signature

logger = logging.getLogger(__name__)

#: the data dir files read (by nar.base.kaldi.read_data_dir and validate_data_dir)
SOURCE_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2dur", "reco2dur")
#: the files written into --dst
OUTPUT_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2num_samples", "utt2dur")
#: bumped when the output of the same inputs changes: older stamps then rerun
FORMAT_VERSION = 1


def _inputs(src: Path) -> tuple[dict[str, Path], list[str]]:
    """The files of the data dir this run reads (present or not) and the audio files it references."""
    return {name: src / name for name in SOURCE_FILES}, audio_files_of_scp(src / "wav.scp")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--min_duration", type=float, default=0.0, help="seconds")
    p.add_argument("--max_duration", type=float, default=float("inf"), help="seconds")
    p.add_argument("--force", action="store_true", help="rebuild even when the stamp says the inputs are unchanged")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    dst = Path(args.dst)
    stamp = StageStamp(dst / ".done")
    inputs, audio = _inputs(Path(args.src))
    options = {"format_version": FORMAT_VERSION, "src": os.path.abspath(args.src),
               "min_duration": args.min_duration, "max_duration": args.max_duration}
    # what this run reads, signed before it reads it: an input edited while it runs is seen next time
    sig = signature(inputs, options, audio)
    outputs = {name: dst / name for name in OUTPUT_FILES}
    if args.force:
        logger.info(f"{dst}: rebuilding (--force)")
    else:
        reasons = stamp.changes(sig, outputs=outputs)
        if not reasons:
            logger.info(f"{dst}: inputs unchanged since {stamp.written()}, skipped "
                        f"({len(audio)} audio files checked in {time.time() - t0:.1f} s)")
            return 0
        logger.info(f"{dst}: rebuilding: " + "; ".join(reasons))

    for path in inputs.values():
        if path.is_file():
            check_utf8(path, DataDirError)
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
            check_not_truncated(path)  # libsndfile would report the frames that are there
            info = soundfile.info(path)
        except AudioFileError as e:
            raise DataDirError(f"{args.src}/wav.scp: {utt}: {e}") from e
        except Exception as e:
            raise DataDirError(f"{args.src}/wav.scp: {utt}: cannot read {path}: {e}") from e
        dur = info.frames / info.samplerate
        if not args.min_duration <= dur <= args.max_duration:
            dropped.append((utt, dur))
            continue
        wav_scp[utt], num_samples[utt], durations[utt] = path, info.frames, f"{dur:.3f}"
    if not wav_scp:
        raise DataDirError(f"{args.src}: every utterance is outside [{args.min_duration}, {args.max_duration}] s")
    if dropped:
        for what, items in (("shorter than", [(u, d) for u, d in dropped if d < args.min_duration]),
                            ("longer than", [(u, d) for u, d in dropped if d > args.max_duration])):
            if items:
                bound = args.min_duration if what == "shorter than" else args.max_duration
                shown = " ".join(f"{u} ({d:.3f} s)" for u, d in items[:20]) + (" ..." if len(items) > 20 else "")
                logger.warning(f"{args.src}: dropped {len(items)} of {len(src.wav_scp)} utterances {what} "
                               f"{bound:g} s: {shown}")
    dst.mkdir(parents=True, exist_ok=True)
    stamp.remove()  # .done means complete: gone while the outputs are rewritten
    keep = set(wav_scp)
    write_data_dir(
        str(dst),
        wav_scp,
        {k: v for k, v in src.text.items() if k in keep},
        {k: v for k, v in src.utt2spk.items() if k in keep},
        extra={"utt2num_samples": num_samples, "utt2dur": durations},
    )
    validate_data_dir(str(dst))
    stamp.write(sig, outputs=outputs, tool="asr.bin.format_data")
    total = sum(float(d) for d in durations.values()) / 3600
    logger.info(f"{dst}: {len(wav_scp)} utterances, {total:.2f} h")
    return 0


if __name__ == "__main__":
    main()
