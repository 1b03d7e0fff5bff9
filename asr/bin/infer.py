"""Transcribe audio files with a trained model.

Usage:
    python -m asr.bin.infer --model_dir exp/asr_train_ctc_char a.wav b.wav
    python -m asr.bin.infer --model_dir exp/asr_train_ctc_char --search beam --beam_size 10 \
        --timestamps --json *.wav

Prints ``<file> <text>`` per input (or one JSON object per line with ``--json``: text,
tokens, score and per-token timestamps in seconds). A file that cannot be read is reported on
stderr (and as ``{"file", "error"}`` with ``--json``), the others are still decoded, and the exit
status is 1. Files are read ``--files_per_call`` at a
time; within those, ``asr.Speech2Text`` sorts by duration and packs batches under
``--batch_seconds`` padded seconds; files longer than ``--max_seconds`` are decoded in
overlapping windows and stitched (timestamps in whole-file time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from asr.longform import DEFAULT_BATCH_SECONDS


def seconds_arg(text: str):
    """A number of seconds, 'auto' or 'none' (argparse type)."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, 'auto' or 'none', got {text!r}") from None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--model_file", default=None)
    p.add_argument("--search", choices=["greedy", "beam", "esa"], default="greedy")
    p.add_argument("--beam_size", type=int, default=10)
    p.add_argument("--timestamps", action="store_true", help="per-token times (forced alignment)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--files_per_call", type=int, default=256, help="files read and decoded per call")
    p.add_argument("--batch_seconds", type=float, default=DEFAULT_BATCH_SECONDS, help="padded seconds per batch")
    p.add_argument("--max_seconds", type=seconds_arg, default="auto",
                   help="longer files are decoded in windows ('auto': the longest training utterance; 'none': never)")
    p.add_argument("--overlap_seconds", type=seconds_arg, default="auto",
                   help="overlap of those windows ('auto': a quarter of the window, at most 4 s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=2)
    p.add_argument("audio", nargs="+", help="audio files")
    args = p.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    # stdout carries results only (one JSON object per line with --json): what libraries print
    # while ESPnet is imported and the model is built goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        from asr.audio import as_waveform
        from asr.inference import Speech2Text

        s2t = Speech2Text(args.model_dir, model_file=args.model_file, device=args.device,
                          search=args.search, beam_size=args.beam_size, timestamps=args.timestamps,
                          batch_seconds=args.batch_seconds, max_seconds=args.max_seconds,
                          overlap_seconds=args.overlap_seconds, progress=True)
    print(s2t.window_summary(), file=sys.stderr)
    if args.files_per_call < 1:
        p.error("--files_per_call must be >= 1")
    failed = 0
    for i in range(0, len(args.audio), args.files_per_call):
        files = args.audio[i : i + args.files_per_call]
        wavs, errors = {}, {}
        for path in files:  # a bad file is reported; the others are still decoded
            try:
                wav = as_waveform(path, s2t.sample_rate, name=path)
                s2t.check_lengths([wav], [path])  # too short for one frame, too long for one piece
                wavs[path] = wav
            except (ValueError, OSError) as err:  # AudioFileError: missing, unreadable, empty, ...
                errors[path] = str(err)
        hyps = dict(zip(wavs, s2t(list(wavs.values())))) if wavs else {}
        for path in files:
            if path in errors:
                failed += 1
                print(f"{path}: error: {errors[path]}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"file": path, "error": errors[path]}))
                continue
            hyp = hyps[path]
            if args.json:
                print(json.dumps({"file": path, "text": hyp.text, "tokens": list(hyp.tokens),
                                  "score": round(hyp.score, 4), "timestamps": hyp.timestamps}))
            else:
                print(f"{path} {hyp.text}")
    if failed:
        print(f"{failed} of {len(args.audio)} files could not be decoded (see above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
