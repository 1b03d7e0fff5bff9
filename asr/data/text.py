"""English sentences from offline Debian text, and the one transcript normalisation.

``normalize_text`` is THE normalisation of this project: corpus transcripts are written
with it and WER/CER are scored after it. It does, in order:

1. Unicode NFKD and drop combining marks (``café`` → ``cafe``); typographic apostrophes
   (’ ‘ ʼ `) become ``'``;
2. lower-case;
3. every character other than ``a``–``z`` and ``'`` becomes a space;
4. apostrophes at the start or end of a word are removed (``'tis`` → ``tis``,
   ``dogs'`` → ``dogs``; ``don't`` stays), a word of apostrophes only disappears;
5. whitespace collapses to single spaces, none leading or trailing.

It is idempotent and its output alphabet is ``a``–``z``, ``'`` and space.

Sentences come from Debian ``fortunes`` (``/usr/share/games/fortunes/*``, cookies
separated by ``%`` lines; the offensive ``off/`` directory is skipped) and ``bible-kjv``
(``bible -f 'Gen1:1-Rev22:21'``, verse references stripped). A sentence is kept when
(see :func:`clean_sentence`): it has no digits, only letters, spaces and ordinary
punctuation, no abbreviation (``Mr.``, ``etc.``), no word without a vowel (``hmm``,
``nbc``), no capitalised Roman numeral (``VIII``) — the engines would speak these
differently from the transcript — and 4–20 words after normalisation. Duplicates (same
normalised text) keep their first occurrence; the order is fortunes files by name, then
the Bible in canonical order, so the result is deterministic.

Usage::

    python -m asr.data.text | head        # prints "source<TAB>transcript" lines
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

FORTUNES_DIR = "/usr/share/games/fortunes"
BIBLE_RANGE = "Gen1:1-Rev22:21"
MIN_WORDS = 4
MAX_WORDS = 20

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_LETTER = re.compile(r"[^a-z']+")
# Characters a kept sentence may contain before normalisation (anything else: symbols,
# digits, code, non-ASCII letters — makes the engines say something other than the text).
_ALLOWED = re.compile(r"[A-Za-z\s.,;:?!'\"()\-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')])\s+")
_CLAUSE_END = re.compile(r"(?<=[;:])\s+")
_VERSE_REF = re.compile(r"^[1-3]?[A-Za-z]+\d+:\d+\s+")
_CAPS_ROMAN_LETTERS = re.compile(r"\b[MDCLXVI]{2,}\b")
_ROMAN = re.compile(r"M{0,4}(?:C[MD]|D?C{0,3})(?:X[CL]|L?X{0,3})(?:I[XV]|V?I{0,3})")
_VOWEL = re.compile(r"[aeiouy]")
# Lower-cased words the engines expand or spell (checked after normalisation).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr etc eg ie vs prof gen col lt sgt capt inc ltd co esq rev hon "
    "ft oz lb lbs mph nb ps am pm".split()
)


class MissingToolError(RuntimeError):
    """A system program or data package is not installed; the message names the Debian package."""


@dataclass(frozen=True)
class Sentence:
    """One corpus sentence.

    Attributes:
        text: the transcript, ``normalize_text`` of the original.
        speakable: what the engines read: lower-cased original with only letters,
            apostrophes and ``, . ; : ? !`` kept (punctuation shapes prosody);
            ``normalize_text(speakable) == text``.
        source: ``fortunes/<file>`` or ``bible-kjv``.
    """

    text: str
    speakable: str
    source: str


def normalize_text(s: str) -> str:
    """Normalise a transcript or hypothesis for corpus text and WER scoring (see module doc).

    >>> normalize_text("  'Tis the Season -- isn't it?  Café's 'best'! ")
    "tis the season isn't it cafe's best"
    """
    if not isinstance(s, str):
        raise TypeError(f"normalize_text expects str, got {type(s).__name__}: {s!r}")
    s = s.translate(_APOSTROPHES)
    if not s.isascii():
        s = unicodedata.normalize("NFKD", s)
        s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.lower()
    words = (w.strip("'") for w in _NOT_LETTER.sub(" ", s).split())
    return " ".join(w for w in words if w)


def speakable_text(s: str) -> str:
    """Lower-case ``s`` keeping letters, apostrophes and ``, . ; : ? !``; other marks → space."""
    s = re.sub(r"[^a-z'.,;:?!]+", " ", s.lower())
    return " ".join(s.split())


def clean_sentence(raw: str) -> str | None:
    """Return the speakable form of ``raw`` if it passes the corpus filter, else ``None``."""
    if not _ALLOWED.fullmatch(raw) or any(
            _ROMAN.fullmatch(w) for w in _CAPS_ROMAN_LETTERS.findall(raw)):
        return None
    words = normalize_text(raw).split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(w.replace("'", "") in ABBREVIATIONS or not _VOWEL.search(w) for w in words):
        return None
    return speakable_text(raw)


def split_sentences(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Split running text after ``.``, ``!`` or ``?`` (optionally closing quote/paren).

    A sentence longer than ``max_words`` words is further split after ``;`` and ``:``
    (KJV verses are long chains of clauses).
    """
    parts = []
    for sent in _SENTENCE_END.split(" ".join(text.split())):
        if len(sent.split()) > max_words:
            parts.extend(_CLAUSE_END.split(sent))
        else:
            parts.append(sent)
    return [p.strip() for p in parts if p.strip()]


def read_fortune_cookies(path: str) -> Iterator[str]:
    """Yield the cookies of one fortune file, attribution lines (``-- Author``) removed."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", errors="replace")
    for cookie in re.split(r"^%\s*$", data, flags=re.MULTILINE):
        lines = []
        for line in cookie.splitlines():
            if line.strip().startswith(("--", "\u2014")):
                break  # attribution: the rest of the cookie is source, not speech
            lines.append(line)
        if any(lines):
            yield "\n".join(lines)


def fortune_files(root: str = FORTUNES_DIR) -> list[str]:
    """The fortune text files directly under ``root`` (no ``off/``, ``.dat`` or ``.u8`` links)."""
    if not os.path.isdir(root):
        raise MissingToolError(f"{root} not found: install the Debian package 'fortunes' "
                               "(apt-get install fortunes fortune-mod)")
    names = sorted(os.listdir(root))
    return [os.path.join(root, n) for n in names
            if not n.endswith((".dat", ".u8")) and os.path.isfile(os.path.join(root, n))
            and not os.path.islink(os.path.join(root, n))]


def bible_verses(verse_range: str = BIBLE_RANGE) -> Iterator[str]:
    """Yield KJV verses (reference stripped) from ``bible -f``, in canonical order."""
    exe = shutil.which("bible")
    if exe is None:
        raise MissingToolError("program 'bible' not found: install the Debian package "
                               "'bible-kjv' (apt-get install bible-kjv)")
    out = subprocess.run([exe, "-f", verse_range], check=True, capture_output=True).stdout
    for line in out.decode("utf-8", errors="replace").splitlines():
        verse = _VERSE_REF.sub("", line, count=1).strip()
        if verse:
            yield verse


def filter_sentences(raw: Iterable[tuple[str, str]]) -> list[Sentence]:
    """Apply :func:`clean_sentence` to ``(source, sentence)`` pairs and deduplicate by text."""
    seen: set[str] = set()
    kept = []
    for source, sent in raw:
        speakable = clean_sentence(sent)
        if speakable is None:
            continue
        text = normalize_text(speakable)
        if text not in seen:
            seen.add(text)
            kept.append(Sentence(text=text, speakable=speakable, source=source))
    return kept


def _raw_sentences(sources: Sequence[str], fortunes_dir: str) -> Iterator[tuple[str, str]]:
    for source in sources:
        if source == "fortunes":
            for path in fortune_files(fortunes_dir):
                name = "fortunes/" + os.path.basename(path)
                for cookie in read_fortune_cookies(path):
                    yield from ((name, s) for s in split_sentences(cookie))
        elif source == "bible":
            for verse in bible_verses():
                yield from (("bible-kjv", s) for s in split_sentences(verse))
        else:
            raise ValueError(f"unknown text source {source!r}; valid: 'fortunes', 'bible'")


def restrict_vocabulary(sentences: Sequence[Sentence], max_vocab: int) -> list[Sentence]:
    """The sentences whose words are all among the ``max_vocab`` most frequent words.

    Word counts are taken over ``sentences`` themselves (ties broken alphabetically), so the
    result is deterministic. A closed vocabulary makes a small corpus learnable in minutes
    (every test word occurs in training); ``max_vocab <= 0`` keeps every sentence.
    """
    if max_vocab <= 0:
        return list(sentences)
    counts = Counter(w for s in sentences for w in s.text.split())
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = set(ranked[:max_vocab])
    return [s for s in sentences if all(w in vocab for w in s.text.split())]


def load_sentences(sources: Sequence[str] = ("fortunes", "bible"),
                   fortunes_dir: str = FORTUNES_DIR, max_vocab: int = 0) -> list[Sentence]:
    """All filtered, deduplicated sentences of ``sources``, in a deterministic order
    (only those within the ``max_vocab`` most frequent words when ``max_vocab > 0``)."""
    return restrict_vocabulary(filter_sentences(_raw_sentences(sources, fortunes_dir)), max_vocab)


def main(argv: Sequence[str] | None = None) -> int:
    sources = list(argv if argv is not None else sys.argv[1:]) or ["fortunes", "bible"]
    sentences = load_sentences(sources)
    for s in sentences:
        print(f"{s.source}\t{s.text}")
    by_source: dict[str, int] = {}
    for s in sentences:
        key = s.source.split("/")[0]
        by_source[key] = by_source.get(key, 0) + 1
    print(f"{len(sentences)} sentences: {by_source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
