"""Phonemise a Kaldi ``text`` file with espeak-ng and write phones, ids and a shape file.

Usage:
    # training set: builds dump/phones/tokens.txt from its phones (if missing, or its phones changed)
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
``<out_dir>/tokens.txt``.

A ``--token_list`` this tool writes is derived data: a stamp beside it
(``.<name>.stamp.json``) records the set it was built from (that run's ``--out_dir`` and
``--text``, hashed) and the list as written. When that same set (the recipe's training set:
the same ``--out_dir``) is phonemised again and its phones are no longer those of the list (new
phones in its text, phones gone, another ``--language``), the list is rebuilt, with a warning
that names the phones added and dropped: the sets phonemised with the old list, and any model
trained on it, must be redone (the recipe's stage 3 phonemises the other sets after the
training set). A list edited since the tool wrote it is not overwritten: phones of the set that
built it missing from it are an error naming them and the file. Other sets (dev, test) read the
list; their phones not in it become ``<unk>``, with a warning that names them, as do those of
any set phonemised with a list that has no stamp (written by an older version or by hand:
nothing says which set it was built from; a list without a stamp that is exactly the list of the
set being phonemised is recorded as built from it).

An utterance that cannot be phonemised (empty text, no letter or
digit, espeak-ng failing on it) stops the tool with its id and text, unless ``--skip_bad``
is given: then it is logged and left out of every output file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from nar.base.kaldi import read_kaldi_map, write_kaldi_map
from nar.base.stamps import StageStamp, StampError, file_signature, signature
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


def _stamp(token_list: Path) -> StageStamp:
    return StageStamp(token_list.with_name(f".{token_list.name}.stamp.json"))


def _phones_list(phones) -> str:
    shown = sorted(phones)
    return " ".join(shown[:30]) + (" ..." if len(shown) > 30 else "")


def shared_token_list(token_list: Path, phones: dict[str, list[str]], args: argparse.Namespace) -> PhoneTokenizer:
    """The ``--token_list`` for this set: built (and stamped) when missing, rebuilt when this set
    built it and its phones changed, else read (see the module docs)."""
    stamp = _stamp(token_list)
    sig = signature({"text": args.text}, {"out_dir": os.path.abspath(args.out_dir), "text": os.path.abspath(args.text),
                                          "language": args.language})
    fresh = PhoneTokenizer.build_token_list(phones.values())

    def build(why: str) -> PhoneTokenizer:
        tokenizer = PhoneTokenizer(fresh)
        stamp.remove()
        tokenizer.save(token_list)
        stamp.write(sig, outputs={"token_list": token_list}, tool="tts.bin.phonemize")
        logger.info("wrote %d tokens to %s (%s)", len(tokenizer), token_list, why)
        return tokenizer

    if not token_list.is_file():
        return build(f"built from {args.text}")
    try:
        tokenizer = PhoneTokenizer.load(token_list)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    try:
        recorded = stamp.read()
    except StampError as e:
        logger.warning("%s; nothing says which set %s was built from", e, token_list)
        recorded = None
    if recorded is None and tokenizer.tokens == fresh:
        # exactly the list this set builds: it was built from it (a kill between writing the list and
        # its stamp, or an older version); recorded as such from now on
        stamp.write(sig, outputs={"token_list": token_list}, tool="tts.bin.phonemize")
        logger.info("read %d tokens from %s (no stamp, but exactly the phones of this set: recorded as built from %s)",
                    len(tokenizer), token_list, args.text)
        return tokenizer
    used = {p for seq in phones.values() for p in seq}
    missing = used.difference(tokenizer.tokens)
    builder = recorded is not None and recorded["options"].get("out_dir") == sig["options"]["out_dir"]
    if builder:
        as_written = not _file_changes_since(recorded, token_list)
        if as_written and tokenizer.tokens != fresh:
            added, dropped = set(fresh).difference(tokenizer.tokens), set(tokenizer.tokens).difference(fresh)
            logger.warning("%s was built from this set (%s), whose phones changed since %s: new phones: %s; no longer "
                           "used: %s. Rebuilding it: sets phonemised with the old list, and models trained on it, must "
                           "be redone", token_list, recorded["options"].get("text"), recorded.get("written", "?"),
                           _phones_list(added) or "none", _phones_list(dropped) or "none")
            return build(f"rebuilt from {args.text}")
        if missing:
            raise SystemExit(
                f"{token_list}: {len(missing)} phones of {args.text} are not in this token list, which was built from "
                f"this set ({args.out_dir}) and edited since: {_phones_list(missing)}. They would become <unk>: add "
                f"them to the list, or delete {token_list} to rebuild it from {args.text}")
        if as_written and stamp.changes(sig, outputs={"token_list": token_list}):
            stamp.write(sig, outputs={"token_list": token_list}, tool="tts.bin.phonemize")  # same phones: the text now
        logger.info("read %d tokens from %s (built from this set, %s)", len(tokenizer), token_list,
                    "its phones unchanged" if as_written else "edited since; it has every phone of this set")
        return tokenizer
    if recorded is not None:
        source = recorded["inputs"].get("text") or {}
        now = file_signature(source.get("path", "")) if source.get("path") else {}
        if source.get("sha256") and now.get("sha256") != source.get("sha256"):
            logger.warning("%s was built from %s, which changed since (%s): phonemise that set again first; it "
                           "rebuilds the list", token_list, source.get("path"), recorded.get("written", "?"))
    elif missing:
        logger.warning("%s has no stamp (written by an older version or by hand): nothing says which set it was built "
                       "from; if %s is the training text, delete the list to rebuild it from it", token_list, args.text)
    if missing:
        logger.warning("%d phones of %s are not in %s and become <unk>: %s", len(missing), args.text, token_list,
                       _phones_list(missing))
    logger.info("read %d tokens from %s", len(tokenizer), token_list)
    return tokenizer


def _file_changes_since(recorded: dict, token_list: Path) -> bool:
    """Whether the token list differs from the one the stamp says the tool wrote."""
    was = (recorded.get("outputs") or {}).get("token_list") or {}
    now = file_signature(token_list)
    return was.get("sha256") is None or was.get("sha256") != now.get("sha256")


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
    if args.token_list:
        tokenizer = shared_token_list(token_list, phones, args)
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
