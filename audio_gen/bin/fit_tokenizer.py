"""Train the mel-RVQ acoustic tokenizer on a data dir (k-means, minutes on a CPU) and save it.

Usage:
    python -m audio_gen.bin.fit_tokenizer --data_dir data/train --out_dir exp/tokenizer_mel_rvq \
        [--num_codebooks 8 --codebook_size 1024 --n_mels 100 --hop_length 320 --max_frames 150000]

Writes ``<out_dir>/tokenizer.json`` + ``codebooks.pt`` (load with
``audio_gen.tokenizers.load_tokenizer``). An existing complete output is kept (delete it to refit).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

from tqdm import tqdm

from audio_gen.data import load_item, read_audio_list
from audio_gen.tokenizers import MelRVQConfig, MelRVQTokenizer, load_tokenizer
from audio_gen.tokenizers.base import CONFIG_FILE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    d = MelRVQConfig()
    for f in ("sample_rate", "n_fft", "hop_length", "n_mels", "num_codebooks", "codebook_size", "griffin_lim_iters"):
        p.add_argument(f"--{f}", type=int, default=getattr(d, f))
    p.add_argument("--max_utts", type=int, default=3000, help="at most this many utterances (a seeded random subset)")
    p.add_argument("--max_frames", type=int, default=150_000)
    p.add_argument("--iters", type=int, default=15, help="Lloyd iterations per codebook")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out_dir)
    if (out / CONFIG_FILE).is_file():
        tok = load_tokenizer(out)
        print(f"{out}: already trained ({tok.describe()}); delete it to refit")
        return 0
    cfg = MelRVQConfig(**{f: getattr(args, f) for f in ("sample_rate", "n_fft", "hop_length", "n_mels",
                                                         "num_codebooks", "codebook_size", "griffin_lim_iters")})
    items = read_audio_list(args.data_dir)
    if len(items) > args.max_utts:
        items = random.Random(args.seed).sample(items, args.max_utts)
    t0 = time.time()
    wavs = [load_item(it, cfg.sample_rate) for it in tqdm(items, desc=f"reading {args.data_dir}", file=sys.stderr)]
    tok = MelRVQTokenizer.fit(wavs, cfg, max_frames=args.max_frames, iters=args.iters, seed=args.seed,
                              progress=lambda m: logging.info(m))
    tok.save(out)
    print(f"{out}: {tok.describe()} trained on {len(wavs)} utterances in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
