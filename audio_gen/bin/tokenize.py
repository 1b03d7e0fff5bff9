"""Encode a data dir into acoustic tokens (resumable), readable by ESPnet's ``npy`` loader.

Usage:
    python -m audio_gen.bin.tokenize --tokenizer exp/tokenizer_mel_rvq --data_dir data/test \
        --out_dir dump/codes/test [--batch_seconds 60 --device cpu]

Writes ``<out_dir>/data/<utt>.npy`` (K, T) int16, ``codes.scp`` and ``codes_shape``
(``<utt> T,K``). Rerunning after a kill skips the utterances already written.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from tqdm import tqdm

from audio_gen.data import TokenArchive, iter_batches, read_audio_list
from audio_gen.tokenizers import load_tokenizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="a saved tokenizer directory")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--batch_seconds", type=float, default=60.0, help="padded audio seconds per batch")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tok = load_tokenizer(args.tokenizer, device=args.device)
    items = read_audio_list(args.data_dir)
    archive = TokenArchive(args.out_dir, "codes")
    todo = [it for it in items if not archive.done(it.key)]
    if len(todo) < len(items):
        logging.info(f"{args.out_dir}: {len(items) - len(todo)} of {len(items)} utterances already done")
    bar = tqdm(total=len(todo), desc=f"tokenizing {args.data_dir}", unit="utt", file=sys.stderr)
    for batch in iter_batches(todo, tok.sample_rate, args.batch_seconds):
        wavs = [w for _, w in batch]
        lens = torch.tensor([w.numel() for w in wavs])
        codes, code_lens = tok.encode(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lens,
                                      names=[it.key for it, _ in batch])
        for i, (it, _) in enumerate(batch):
            archive.write(it.key, codes[i, :, : int(code_lens[i])].cpu().numpy())
        bar.update(len(batch))
    bar.close()
    scp = archive.finish([it.key for it in items])
    print(f"{scp}: {len(items)} utterances, {tok.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
