"""Caption token ids of data dirs (``text``: ``<utt> <caption>``) for MAGNeT training.

Usage:
    python -m audio_gen.bin.caption_tokens --train_dir data/train --data_dir data/train data/dev \
        data/test --out_dir dump/captions/train dump/captions/dev dump/captions/test \
        --token_list dump/captions/tokens.txt
    python -m audio_gen.bin.caption_tokens --t5_dir /path/to/t5 --data_dir ... --out_dir ...

Word tokens (:class:`audio_gen.conditioning.CaptionTokenizer`): the token list is built from the
``--train_dir`` captions (kept if it exists). With ``--t5_dir`` the ids come from that local T5
directory's tokenizer. Writes ``<out>/text_int`` (``<utt> <id> <id> ...``; an empty caption
gives no ids, i.e. unconditional) and ``<out>/text_shape`` (``<utt> <S>``) per data dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audio_gen.conditioning import CaptionError, CaptionTokenizer, T5Tokens


def read_text(data_dir) -> list[tuple[str, str]]:
    path = Path(data_dir) / "text"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a data dir with captions is needed)")
    rows = []
    for n, line in enumerate(path.open(encoding="utf-8"), 1):
        parts = line.rstrip("\n").split(maxsplit=1)
        if not parts:
            continue
        rows.append((parts[0], parts[1] if len(parts) > 1 else ""))
    if not rows:
        raise CaptionError(f"{path}: no captions")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", nargs="+", required=True)
    p.add_argument("--out_dir", nargs="+", required=True)
    p.add_argument("--train_dir", help="captions the word token list is built from")
    p.add_argument("--token_list", help="word token list (written from --train_dir if missing)")
    p.add_argument("--t5_dir", help="local Hugging Face T5 directory (its tokenizer instead of words)")
    args = p.parse_args(argv)
    if len(args.data_dir) != len(args.out_dir):
        p.error("--data_dir and --out_dir need the same number of entries")
    if args.t5_dir:
        tok = T5Tokens(args.t5_dir)
    else:
        if not args.token_list:
            p.error("--token_list is required without --t5_dir")
        path = Path(args.token_list)
        if path.is_file():
            tok = CaptionTokenizer.load(path)
        else:
            if not args.train_dir:
                p.error(f"--token_list {path} does not exist: give --train_dir to build it")
            tok = CaptionTokenizer.build(c for _, c in read_text(args.train_dir))
            path.parent.mkdir(parents=True, exist_ok=True)
            tok.save(path)
            print(f"{path}: {len(tok)} caption tokens")
    for data_dir, out_dir in zip(args.data_dir, args.out_dir):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = read_text(data_dir)
        unk = 0
        with open(out / "text_int", "w") as f_int, open(out / "text_shape", "w") as f_shape:
            for utt, caption in rows:
                ids = tok.encode(caption)
                unk += sum(1 for i in ids if i == 1) if not args.t5_dir else 0
                f_int.write(" ".join([utt] + [str(i) for i in ids]) + "\n")
                f_shape.write(f"{utt} {max(1, len(ids))}\n")
        print(f"{out}: {len(rows)} captions" + (f", {unk} unknown words" if unk else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
