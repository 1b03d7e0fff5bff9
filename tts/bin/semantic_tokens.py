"""Semantic tokens: fit k-means over an ASR encoder layer, or encode a data dir (resumable).

Usage:
    python -m tts.bin.semantic_tokens fit --asr_model_dir "$(cat ../asr1/exp/asr_model_dir)" \
        --layer 4 --data_dir data/train --out_dir exp/semantic_l4_k512 [--codebook_size 512]
    python -m tts.bin.semantic_tokens encode --tokenizer exp/semantic_l4_k512 \
        --data_dir data/train data/test --out_dir dump/semantic/train dump/semantic/test

``encode`` writes ``<out_dir>/data/<utt>.npy`` (T,) int16, ``semantic.scp`` and
``semantic_shape`` (ESPnet's npy loader and shape-file conventions); a rerun skips the
utterances already written from unchanged inputs (``<out_dir>/.stamp.json``,
:mod:`audio_gen.data`): the tokenizer (its files, and the ASR model or TorchScript encoder its
features come from) and each utterance's audio and segment.

``fit`` records what it was fitted on in ``<out_dir>/.stamp.json`` (the data dir's ``wav.scp``
and ``segments``, hashed; its audio, stat'ed; the ASR model's ``config.yaml`` and checkpoint,
hashed; the options). A rerun keeps a finished tokenizer ("already trained") when they are
unchanged; otherwise it stops with an error that lists the differences and keeps the
tokenizer: delete ``<out_dir>`` or pass ``--force`` to fit it again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from audio_gen.bin.fit_tokenizer import STAMP, check_finished, data_signature
from audio_gen.data import TokenArchive, encode_to_archive, load_item, read_audio_list
from nar.base.experiment import find_checkpoint
from nar.base.stamps import StageStamp, directory_signature, model_file_signature
from tts.semantic import CONFIG_FILE, ASREncoderFeatures, SemanticTokenizer

logger = logging.getLogger("tts.bin.semantic_tokens")


def _asr_model_files(model_dir) -> dict:
    """The files of a trained ASR model that its features come from: config.yaml and the
    checkpoint it loads (:func:`nar.base.experiment.find_checkpoint`)."""
    model_dir = Path(model_dir)
    try:
        checkpoint = find_checkpoint(model_dir)
    except FileNotFoundError:
        checkpoint = model_dir / "<no checkpoint>"
    return {"config.yaml": model_dir / "config.yaml", "checkpoint": checkpoint}


def semantic_tokenizer_signature(directory) -> dict:
    """What identifies a saved semantic tokenizer: its files and those of its feature source
    (the ASR model's config.yaml and checkpoint, or the TorchScript encoder)."""
    directory = Path(directory)
    sig = {"files": directory_signature(directory)}
    try:
        features = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("features") or {}
    except (OSError, ValueError, AttributeError):
        return sig
    if features.get("type") == ASREncoderFeatures.kind and features.get("model_dir"):
        sig["features"] = {name: model_file_signature(path)
                           for name, path in _asr_model_files(features["model_dir"]).items()}
    elif features.get("path"):
        sig["features"] = {"module": model_file_signature(features["path"])}
    return sig


def fit_signature(args) -> dict:
    files = _asr_model_files(args.asr_model_dir)
    options = {"asr_model_dir": os.path.abspath(args.asr_model_dir), "layer": args.layer,
               "codebook_size": args.codebook_size, "max_utts": args.max_utts, "max_frames": args.max_frames,
               "seed": args.seed}
    return data_signature(args.data_dir, options, {f"asr {name}": path for name, path in files.items()})


def fit(args) -> int:
    out = Path(args.out_dir)
    sig = fit_signature(args)  # before reading: a change while it runs is seen next time
    if (out / CONFIG_FILE).is_file():
        if not args.force:
            check_finished(out, sig, "fit")
            print(f"{out}: already trained; delete it to refit")
            return 0
        logger.info(f"{out}: fitting again (--force)")
        (out / STAMP).unlink(missing_ok=True)
        (out / CONFIG_FILE).unlink()  # a kill while fitting must not leave the old config beside new weights
    feats = ASREncoderFeatures(args.asr_model_dir, args.layer, args.device)
    items = read_audio_list(args.data_dir)
    if len(items) > args.max_utts:
        items = random.Random(args.seed).sample(items, args.max_utts)
    wavs = (load_item(it, feats.sample_rate) for it in tqdm(items, desc="semantic features", file=sys.stderr))
    tok = SemanticTokenizer.fit(feats, wavs, args.codebook_size, max_frames=args.max_frames, seed=args.seed,
                                progress=lambda m: logging.info(m))
    tok.save(out)
    StageStamp(out / STAMP).write(sig, tool="tts.bin.semantic_tokens fit")
    print(f"{out}: {tok.codebook_size} semantic codes over layer {feats.layer}/{feats.num_layers} of "
          f"{feats.model_dir} at {tok.frame_rate:g} frames/s")
    return 0


def encode(args) -> int:
    if len(args.data_dir) != len(args.out_dir):
        raise SystemExit(f"{len(args.data_dir)} --data_dir but {len(args.out_dir)} --out_dir")
    identity = semantic_tokenizer_signature(args.tokenizer)  # before loading: a change while it runs is seen next time
    tok = SemanticTokenizer.load(args.tokenizer, device=args.device)

    def encode_batch(batch):
        codes, lens = tok.encode_list([w for _, w in batch])
        return [codes[i, : int(lens[i])].numpy() for i in range(len(batch))]

    for data_dir, out_dir in zip(args.data_dir, args.out_dir):
        items = read_audio_list(data_dir)
        scp = encode_to_archive(items, TokenArchive(out_dir, "semantic"), tok.sample_rate, args.batch_seconds,
                                encode_batch, f"semantic tokens {data_dir}", identity=identity)
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
    f.add_argument("--force", action="store_true",
                   help="fit again even when a finished tokenizer (fitted on other data or options) is there")
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
