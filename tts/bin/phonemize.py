"""Phonemise a Kaldi ``text`` file with espeak-ng and write phones, ids and a shape file.

Usage:
    # training set: builds dump/phones/tokens.txt from its phones (if that file is missing)
    python -m tts.bin.phonemize --text data/train/text --out_dir dump/phones/train \
        --token_list dump/phones/tokens.txt --jobs 2
    # other sets: read the same token list (phones not in it become <unk>, with a warning)
    python -m tts.bin.phonemize --text data/test/text --out_dir dump/phones/test \
        --token_list dump/phones/tokens.txt [--skip_bad]

Writes, sorted by utterance id, each file atomically (temp file + rename):
    <out_dir>/phones        ``utt p1 p2 | p3 ...``  (IPA phones, ``|`` between words)
    <out_dir>/phones_int    ``utt 5 7 2 ...``       (ids in the token list)
    <out_dir>/phones_shape  ``utt L``               (ESPnet shape file: L phone tokens)

Without ``--token_list`` the list is built from this set and written to
``<out_dir>/tokens.txt``. An utterance that cannot be phonemised (empty text, no letter or
digit, espeak-ng failing on it) stops the tool with its id and text, unless ``--skip_bad``
is given: then it is logged and left out of every output file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from nar.base.kaldi import read_kaldi_map, write_kaldi_map
from tts.text import PhonemizeError, Phonemizer, PhoneTokenizer

logger = logging.getLogger("tts.bin.phonemize")


def phonemize_text_file(phonemizer: Phonemizer, text: dict[str, str], jobs: int,
                        skip_bad: bool) -> dict[str, list[str]]:
    """utt → phones for every entry of ``text``; failures raise SystemExit or are skipped."""
    def one(item: tuple[str, str]) -> list[str] | PhonemizeError:
        try:
            return phonemizer(item[1], name=item[0])
        except PhonemizeError as e:
            return e

    phones: dict[str, list[str]] = {}
    skipped = 0
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        results = pool.map(one, text.items())
        for utt, res in tqdm(zip(text, results), total=len(text), desc="phonemize", file=sys.stderr):
            if isinstance(res, PhonemizeError):
                if not skip_bad:
                    raise SystemExit(f"cannot phonemise utterance {res} (use --skip_bad to leave such "
                                     "utterances out)")
                logger.warning("skipped: %s", res)
                skipped += 1
            else:
                phones[utt] = res
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, the queued items are not run
    if skipped:
        logger.warning("skipped %d of %d utterances that could not be phonemised", skipped, len(text))
    if not phones:
        raise SystemExit("no utterance could be phonemised")
    return phones


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="Kaldi text file: <utt> <words...>")
    p.add_argument("--out_dir", required=True, help="where phones, phones_int, phones_shape go")
    p.add_argument("--token_list", default=None,
                   help="token list to read, or to build from this set if missing "
                        "(default: build <out_dir>/tokens.txt)")
    p.add_argument("--language", default="en-us", help="espeak-ng voice")
    p.add_argument("--jobs", type=int, default=2, help="espeak-ng processes run at once")
    p.add_argument("--skip_bad", action="store_true", help="leave out utterances that fail instead of stopping")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")

    try:
        text = read_kaldi_map(args.text, allow_empty_value=True)
        phonemizer = Phonemizer(args.language)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not text:
        raise SystemExit(f"{args.text}: no utterances")
    phones = phonemize_text_file(phonemizer, text, args.jobs, args.skip_bad)

    out = Path(args.out_dir)
    token_list = Path(args.token_list) if args.token_list else out / "tokens.txt"
    if args.token_list and token_list.is_file():
        try:
            tokenizer = PhoneTokenizer.load(token_list)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        logger.info("read %d tokens from %s", len(tokenizer), token_list)
    else:
        tokenizer = PhoneTokenizer(PhoneTokenizer.build_token_list(phones.values()))
        tokenizer.save(token_list)
        logger.info("wrote %d tokens to %s", len(tokenizer), token_list)

    ids = {utt: tokenizer.encode(ph) for utt, ph in phones.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(str(out / "phones"), phones)
    write_kaldi_map(str(out / "phones_int"), ids)
    write_kaldi_map(str(out / "phones_shape"), {utt: len(x) for utt, x in ids.items()})
    n_unk = sum(x.count(tokenizer.unk_id) for x in ids.values())
    total = sum(len(x) for x in ids.values())
    print(f"{out}: {len(phones)} utterances, {total} phone tokens ({n_unk} <unk>), "
          f"{len(tokenizer)} tokens in {token_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
