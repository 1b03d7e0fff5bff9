"""Semantic tokens: fit k-means over an ASR encoder layer, or encode a data dir (resumable).

Usage:
    python -m tts.bin.semantic_tokens fit --asr_model_dir "$(cat ../asr1/exp/asr_model_dir)" \
        --layer 4 --data_dir data/train --out_dir exp/semantic_l4_k512 [--codebook_size 512]
    python -m tts.bin.semantic_tokens encode --tokenizer exp/semantic_l4_k512 \
        --data_dir data/train data/test --out_dir dump/semantic/train dump/semantic/test

``encode`` writes ``<out_dir>/data/<utt>.npy`` (T,) int16, ``semantic.scp`` and
``semantic_shape`` (ESPnet's npy loader and shape-file conventions); a rerun skips the
utterances already written.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from audio_gen.data import TokenArchive, encode_to_archive, load_item, read_audio_list
from tts.semantic import CONFIG_FILE, ASREncoderFeatures, SemanticTokenizer


def fit(args) -> int:
    out = Path(args.out_dir)
    if (out / CONFIG_FILE).is_file():
        print(f"{out}: already trained; delete it to refit")
        return 0
    feats = ASREncoderFeatures(args.asr_model_dir, args.layer, args.device)
    items = read_audio_list(args.data_dir)
    if len(items) > args.max_utts:
        items = random.Random(args.seed).sample(items, args.max_utts)
    wavs = (load_item(it, feats.sample_rate) for it in tqdm(items, desc="semantic features", file=sys.stderr))
    tok = SemanticTokenizer.fit(feats, wavs, args.codebook_size, max_frames=args.max_frames, seed=args.seed,
                                progress=lambda m: logging.info(m))
    tok.save(out)
    print(f"{out}: {tok.codebook_size} semantic codes over layer {feats.layer}/{feats.num_layers} of "
          f"{feats.model_dir} at {tok.frame_rate:g} frames/s")
    return 0


def encode(args) -> int:
    if len(args.data_dir) != len(args.out_dir):
        raise SystemExit(f"{len(args.data_dir)} --data_dir but {len(args.out_dir)} --out_dir")
    tok = SemanticTokenizer.load(args.tokenizer, device=args.device)
    def encode_batch(batch):
        codes, lens = tok.encode_list([w for _, w in batch])
        return [codes[i, : int(lens[i])].numpy() for i in range(len(batch))]

    for data_dir, out_dir in zip(args.data_dir, args.out_dir):
        items = read_audio_list(data_dir)
        scp = encode_to_archive(items, TokenArchive(out_dir, "semantic"), tok.sample_rate, args.batch_seconds,
                                encode_batch, f"semantic tokens {data_dir}")
        print(f"{scp}: {len(items)} utterances")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--asr_model_dir", required=True)
    f.add_argument("--layer", type=int, default=-1, help="encoder block (1-based; 0 = its input; -1 = last)")
    f.add_argument("--data_dir", required=True)
    f.add_argument("--out_dir", required=True)
    f.add_argument("--codebook_size", type=int, default=512)
    f.add_argument("--max_utts", type=int, default=2000)
    f.add_argument("--max_frames", type=int, default=200_000)
    f.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("encode")
    e.add_argument("--tokenizer", required=True)
    e.add_argument("--data_dir", required=True, nargs="+", help="one or more data dirs")
    e.add_argument("--out_dir", required=True, nargs="+", help="one output dir per data dir")
    e.add_argument("--batch_seconds", type=float, default=60.0)
    for q in (f, e):
        q.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_grad_enabled(False)
    return fit(args) if args.cmd == "fit" else encode(args)


if __name__ == "__main__":
    sys.exit(main())
