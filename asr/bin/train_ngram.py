"""Train a token n-gram LM (interpolated modified Kneser-Ney, ARPA) for CTC shallow fusion.

The recipe's n-gram stage (``recipes/asr.sh --use_ngram true``, stage 3): the LM is over the ASR
model's own tokens, so text is tokenised exactly as training transcripts are (ESPnet's char or
sentencepiece tokenizer, then the token list; unknown tokens become ``<unk>``).

Usage:
    python -m asr.bin.train_ngram --token_list data/token_list/char/tokens.txt --token_type char \
        --text data/lm_train.txt --kaldi_text dump/raw/train/text --dev_kaldi_text dump/raw/dev/text \
        --order 6 --output exp/ngram_char/6gram.arpa

A word LM for character models (``--token_type word``; decode with ``ngram_unit: word``, whose
lexicon is the LM's vocabulary: every word of the LM text)::

    python -m asr.bin.train_ngram --token_type word --text data/lm_train.txt \
        --dev_kaldi_text dump/raw/dev/text --order 3 --output exp/ngram_word/3gram.arpa

Writes the ARPA file and ``<output>.json`` (order, sentences, tokens, n-gram counts, dev
perplexity per token, ``</s>`` included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from nar.base.kaldi import read_kaldi_map
from asr.lm import ASR_SPECIAL, NgramLM, train_ngram
from asr.task import read_token_list


def read_sentences(paths: list[str], kaldi: bool) -> list[str]:
    """Lines of plain text files, or the text after the utterance id of Kaldi ``text`` files."""
    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LM text {path} does not exist")
        if kaldi:
            out += [text for text in read_kaldi_map(path, allow_empty_value=True).values() if text]
            continue
        with open(path, encoding="utf-8") as f:
            out += [line.strip() for line in f if line.strip()]
    return out


def tokenize(lines: list[str], token_type: str, bpemodel: str | None) -> list[list[str]]:
    if token_type == "word":
        return [line.split() for line in lines]
    if token_type not in ("char", "bpe"):
        raise ValueError(f"token_type must be char, bpe or word, got {token_type!r}")
    if token_type == "bpe" and (not bpemodel or not os.path.isfile(bpemodel)):
        raise FileNotFoundError(f"token_type bpe needs --bpemodel (a sentencepiece model), got {bpemodel!r}")
    from espnet2.text.build_tokenizer import build_tokenizer

    tok = build_tokenizer(token_type, bpemodel=bpemodel if token_type == "bpe" else None, space_symbol="<space>")
    return [tok.text2tokens(line) for line in lines]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--token_list", default=None,
                   help="the ASR model's token list (one token per line); char and bpe LMs only")
    p.add_argument("--token_type", default="char", choices=["char", "bpe", "word"],
                   help="LM units: the model's char or bpe tokens, or words (vocabulary: the LM text's words)")
    p.add_argument("--bpemodel", default=None, help="sentencepiece model (token_type bpe)")
    p.add_argument("--text", nargs="*", default=[], help="plain text files, one sentence per line")
    p.add_argument("--kaldi_text", nargs="*", default=[], help="Kaldi text files (utterance id first)")
    p.add_argument("--dev_kaldi_text", nargs="*", default=[], help="Kaldi text files for the perplexity report")
    p.add_argument("--order", type=int, default=6)
    p.add_argument("--output", required=True, help="ARPA file to write (.arpa or .arpa.gz)")
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if not args.text and not args.kaldi_text:
        raise SystemExit("give --text and/or --kaldi_text (the LM training text)")
    start = time.perf_counter()
    if args.token_type != "word" and not args.token_list:
        raise SystemExit(f"--token_type {args.token_type} needs --token_list (the ASR model's tokens)")
    bpemodel = None if args.bpemodel in (None, "none") else args.bpemodel
    lines = read_sentences(args.text, kaldi=False) + read_sentences(args.kaldi_text, kaldi=True)
    if not lines:
        raise SystemExit(f"no sentences in {args.text + args.kaldi_text}")
    sents = tokenize(lines, args.token_type, bpemodel)
    if args.token_type == "word":
        vocab = sorted({w for s in sents for w in s})
        known = set(vocab)
    else:
        token_list = read_token_list(args.token_list)
        vocab = [t for t in token_list if t not in ASR_SPECIAL]
        known = set(token_list)
    lm = train_ngram(sents, args.order, vocab)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    lm.write_arpa(args.output)
    lm = NgramLM.load(args.output)  # report what decoding will read
    info = {
        "order": args.order,
        "token_type": args.token_type,
        "sentences": len(sents),
        "tokens": sum(len(s) for s in sents),
        "oov_tokens": sum(t not in known for s in sents for t in s),
        "ngrams": {str(n): sum(len(g) == n for g in lm.logp) for n in range(1, args.order + 1)},
        "text": args.text + args.kaldi_text,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.dev_kaldi_text:
        dev = tokenize(read_sentences(args.dev_kaldi_text, kaldi=True), args.token_type, bpemodel)
        ppl, n = lm.perplexity(dev)
        info["dev"] = {"text": args.dev_kaldi_text, "tokens": n, "perplexity": round(ppl, 3)}
    Path(args.output + ".json").write_text(json.dumps(info, indent=2))
    dev_msg = f", dev perplexity {info['dev']['perplexity']:.2f} per token" if "dev" in info else ""
    print(f"wrote {args.output}: {args.order}-gram over {len(lm.vocab)} tokens from {len(sents)} sentences "
          f"({info['tokens']} tokens){dev_msg}; n-grams {info['ngrams']}", file=sys.stderr)


if __name__ == "__main__":
    main()
