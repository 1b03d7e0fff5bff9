"""Encode a data dir into acoustic tokens (resumable), readable by ESPnet's ``npy`` loader.

Usage:
    python -m audio_gen.bin.tokenize --tokenizer exp/tokenizer_mel_rvq --data_dir data/test \
        --out_dir dump/codes/test [--batch_seconds 60 --device cpu]
    python -m audio_gen.bin.tokenize --tokenizer ... --data_dir data/train data/test \
        --out_dir dump/codes/train dump/codes/test        # several sets, one process

Writes ``<out_dir>/data/<utt>.npy`` (K, T) int16, ``codes.scp`` and ``codes_shape``
(``<utt> T,K``). Rerunning after a kill skips the utterances already written, as long as what
they were encoded from is unchanged (``<out_dir>/.stamp.json``, :mod:`audio_gen.data`): the
tokenizer's files (another tokenizer in the same directory re-encodes everything), and each
utterance's audio file and segment.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from audio_gen.data import TokenArchive, encode_to_archive, read_audio_list
from audio_gen.tokenizers import load_tokenizer
from nar.base.stamps import directory_signature


def tokenizer_identity(directory) -> dict:
    """What identifies a saved acoustic tokenizer: the signatures of its files (``tokenizer.json``
    and the weights it names; the training state of a subdirectory is not part of it)."""
    return {"files": directory_signature(directory)}


def encode_set(tok, data_dir: str, out_dir: str, batch_seconds: float, identity: dict | None = None) -> None:
    items = read_audio_list(data_dir)

    def encode(batch):
        wavs = [w for _, w in batch]
        lens = torch.tensor([w.numel() for w in wavs])
        codes, code_lens = tok.encode(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lens,
                                      names=[it.key for it, _ in batch])
        return [codes[i, :, : int(code_lens[i])].cpu().numpy() for i in range(len(batch))]

    scp = encode_to_archive(items, TokenArchive(out_dir, "codes"), tok.sample_rate, batch_seconds, encode,
                            f"tokenizing {data_dir}", identity=identity)
    print(f"{scp}: {len(items)} utterances, {tok.describe()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="a saved tokenizer directory")
    p.add_argument("--data_dir", required=True, nargs="+", help="one or more data dirs")
    p.add_argument("--out_dir", required=True, nargs="+", help="one output dir per data dir")
    p.add_argument("--batch_seconds", type=float, default=60.0, help="padded audio seconds per batch")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(args.data_dir) != len(args.out_dir):
        p.error(f"{len(args.data_dir)} --data_dir but {len(args.out_dir)} --out_dir")
    identity = tokenizer_identity(args.tokenizer)  # before loading: a change while it runs is seen next time
    tok = load_tokenizer(args.tokenizer, device=args.device)
    for data_dir, out_dir in zip(args.data_dir, args.out_dir):
        encode_set(tok, data_dir, out_dir, args.batch_seconds, identity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
