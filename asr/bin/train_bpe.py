"""Train a sentencepiece model on transcripts (the recipe's BPE token stage).

Usage:
    python -m asr.bin.train_bpe --input data/token_list/bpe_unigram300/train.txt \
        --vocab_size 300 --model_type unigram --model_prefix data/token_list/bpe_unigram300/bpe
"""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="one transcript per line")
    p.add_argument("--vocab_size", type=int, required=True)
    p.add_argument("--model_type", choices=["unigram", "bpe"], default="unigram")
    p.add_argument("--model_prefix", required=True)
    args = p.parse_args(argv)
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=args.input,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        model_prefix=args.model_prefix,
        character_coverage=1.0,
        input_sentence_size=100_000_000,
        minloglevel=2,
    )
    print(f"wrote {args.model_prefix}.model ({args.vocab_size} {args.model_type} pieces)")


if __name__ == "__main__":
    main()
