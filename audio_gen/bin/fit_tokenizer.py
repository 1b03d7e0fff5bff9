"""Train the mel-RVQ acoustic tokenizer on a data dir (k-means, minutes on a CPU) and save it.

Usage:
    python -m audio_gen.bin.fit_tokenizer --data_dir data/train --out_dir exp/tokenizer_mel_rvq \
        [--num_codebooks 8 --codebook_size 1024 --n_mels 100 --hop_length 320 --max_frames 150000]

Writes ``<out_dir>/tokenizer.json`` + ``codebooks.pt`` (load with
``audio_gen.tokenizers.load_tokenizer``) and ``<out_dir>/.stamp.json``
(:class:`nar.base.stamps.StageStamp`): the data it was fitted on (``wav.scp`` and ``segments``
hashed, the audio files stat'ed) and its options. A rerun finds the finished tokenizer and
keeps it ("already trained") when the data and options are those of the stamp; when they differ
it stops with an error that lists the differences, and keeps the trained tokenizer: delete
``<out_dir>`` or pass ``--force`` to fit it again.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from audio_gen.data import load_item, read_audio_list
from audio_gen.tokenizers import MelRVQConfig, MelRVQTokenizer, load_tokenizer
from audio_gen.tokenizers.base import CONFIG_FILE
from nar.base.stamps import StageStamp, StampError, audio_files_of_scp, signature

logger = logging.getLogger("audio_gen.bin.fit_tokenizer")

#: the stamp of a finished fit (or training), inside its output directory
STAMP = ".stamp.json"
#: the options of MelRVQConfig set on the command line
CONFIG_FIELDS = ("sample_rate", "n_fft", "hop_length", "n_mels", "num_codebooks", "codebook_size", "griffin_lim_iters")


def data_signature(data_dir: str | os.PathLike, options: Mapping[str, Any],
                   extra_inputs: Mapping[str, str | os.PathLike] | None = None) -> dict:
    """The signature of a fit on ``data_dir`` (its ``wav.scp`` and ``segments`` hashed, its
    audio stat'ed), with ``options`` and other input files (hashed)."""
    data = Path(data_dir)
    inputs = {"wav.scp": data / "wav.scp", "segments": data / "segments", **(extra_inputs or {})}
    return signature(inputs, {"data_dir": os.path.abspath(data_dir), **options}, audio_files_of_scp(data / "wav.scp"))


def check_finished(out: Path, sig: Mapping[str, Any], what: str = "fit") -> None:
    """A finished ``out`` is kept when its stamp matches ``sig``; otherwise stop (SystemExit) with
    the differences: a trained model is never deleted silently.

    A finished output without a stamp (written by an older version) is kept with a warning: its
    inputs cannot be checked.
    """
    stamp = StageStamp(out / STAMP)
    try:
        recorded = stamp.read()
    except StampError as e:
        recorded, problem = None, str(e)
    else:
        problem = f"it has no stamp {STAMP}"
    if recorded is None:
        logger.warning(f"{out}: already trained, but {problem} (written by an older version?): the data and options "
                       f"it was trained with cannot be checked; delete it or pass --force to {what} it again")
        return
    reasons = stamp.changes(sig)
    if not reasons:
        logger.info(f"{out}: data and options unchanged since {stamp.written()}")
    else:
        raise SystemExit(f"{out}: already trained (stamp of {stamp.written()}), but with other inputs: "
                         f"{'; '.join(reasons)}. The trained result is kept: delete {out} or pass --force to "
                         f"{what} it again on the current ones")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    d = MelRVQConfig()
    for f in CONFIG_FIELDS:
        p.add_argument(f"--{f}", type=int, default=getattr(d, f))
    p.add_argument("--max_utts", type=int, default=3000, help="at most this many utterances (a seeded random subset)")
    p.add_argument("--max_frames", type=int, default=150_000)
    p.add_argument("--iters", type=int, default=15, help="Lloyd iterations per codebook")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="fit again even when a finished tokenizer (fitted on other data or options) is there")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out_dir)
    options = {f: getattr(args, f) for f in CONFIG_FIELDS + ("max_utts", "max_frames", "iters", "seed")}
    sig = data_signature(args.data_dir, options)  # before reading: a change while it runs is seen next time
    if (out / CONFIG_FILE).is_file():
        if not args.force:
            check_finished(out, sig, "fit")
            tok = load_tokenizer(out)
            print(f"{out}: already trained ({tok.describe()}); delete it to refit")
            return 0
        logger.info(f"{out}: fitting again (--force)")
        # a kill while fitting must not leave the old config beside new weights
        (out / STAMP).unlink(missing_ok=True)
        (out / CONFIG_FILE).unlink()
    cfg = MelRVQConfig(**{f: getattr(args, f) for f in CONFIG_FIELDS})
    items = read_audio_list(args.data_dir)
    if len(items) > args.max_utts:
        items = random.Random(args.seed).sample(items, args.max_utts)
    t0 = time.time()
    wavs = [load_item(it, cfg.sample_rate) for it in tqdm(items, desc=f"reading {args.data_dir}", file=sys.stderr)]
    tok = MelRVQTokenizer.fit(wavs, cfg, max_frames=args.max_frames, iters=args.iters, seed=args.seed,
                              progress=lambda m: logging.info(m))
    tok.save(out)
    StageStamp(out / STAMP).write(sig, tool="audio_gen.bin.fit_tokenizer")
    print(f"{out}: {tok.describe()} trained on {len(wavs)} utterances in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
