"""Text front end for MaskGCT: text → IPA phones (espeak-ng) → integer ids.

How phones are made. :class:`Phonemizer` runs the Debian ``espeak-ng`` binary once per text,
the text on stdin::

    espeak-ng -q --ipa --sep=_ -v en-us

``--ipa`` (level 1) prints IPA, one line per clause (punctuation such as ``, . ? ; :`` starts a
new line), words separated by spaces; ``--sep=_`` puts ``_`` between the phonemes of a word, so
a multi-letter phoneme (``oʊ``, ``tʃ``, ``ɑːɹ``) stays one symbol. (``--ipa=2``/``--ipa=3`` turn
the separator into a tie *inside* multi-letter phonemes instead, and ``--ipa=3`` writes a
zero-width joiner there; neither gives one symbol per phoneme.) The output is then cleaned:

- clauses are joined, and every word boundary (within or across clauses) becomes the token
  ``"|"``; there is no leading or trailing ``|`` and never two in a row;
- empty phones (espeak writes ``__`` or a trailing ``_`` now and then) are dropped;
- language-switch marks such as ``(en)`` / ``(fr)`` (espeak writes them when a word is read
  with another language's rules), ``-`` linking marks and zero-width joiners are removed;
- **stress marks stay attached**: espeak writes the primary/secondary stress ``ˈ``/``ˌ`` as a
  prefix of the stressed vowel (``h ə l ˈoʊ``), and we keep it so — ``ˈoʊ`` and ``oʊ`` are
  different symbols. One symbol is then one phoneme, which the duration rule (phones per
  frame) relies on. A stress mark that espeak leaves on its own is moved onto the next phone;
  length marks ``ː`` stay attached as espeak writes them.

What is cleaned before espeak-ng sees the text (:func:`clean_text`; each cleaning is logged as a
warning that names the item and lists the characters): control characters other than tabs and
line breaks become a space (espeak-ng reads up to a NUL byte only, so ``"hello\\x00world"`` would
lose "world"); invisible format characters (zero-width joiners, byte-order marks, soft hyphens)
are removed; symbols are removed (with the combining marks, such as emoji variation selectors,
that follow them) except currency signs and :data:`SPOKEN_SYMBOLS`, which espeak-ng reads as
words of the sentence ("5 $" -> "five dollars") — any other symbol it would read out by its
Unicode name (an emoji as "grinning face", ``©`` as "copyright"), which is not what the text says.

What is an error (:class:`PhonemizeError`, a ``ValueError``; the message names the item when a
``name`` is given and quotes the text): empty or whitespace-only text; text with no letter or
digit at all (``"!!! ---"``, ``"…"``: espeak would read a lone ``!!!`` as "exclamation", which
we do not want), also once the cleaning above has removed what it removes (``"😀"``); espeak
producing no phones; espeak missing (install it with ``apt-get install espeak-ng``); an unknown voice (checked when the phonemizer is made); a
non-zero exit or a time-out. Digits, symbols within words and abbreviations are spoken the way
espeak reads them ("42" → ``f ˈoːɹ ɾ i | t ˈuː``), which is what we want for TTS.

Text files. :func:`check_utf8_file` refuses a file that is not UTF-8 with an error naming the
file, the line and the byte offset (instead of a bare ``UnicodeDecodeError``).

Ids. :class:`PhoneTokenizer` maps phones to ids with a token list whose first entries are
``<blank>`` (0, also the padding id), ``<unk>`` (1) and ``|`` (2), then the phones in sorted
order; the list is stored one token per line (ESPnet's ``tokens.txt`` format).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from nar.base.files import check_utf8, write_lines

logger = logging.getLogger(__name__)

BOUNDARY = "|"  # word boundary token
BLANK = "<blank>"  # id 0, also the padding id
UNK = "<unk>"  # id 1
SPECIAL_TOKENS = (BLANK, UNK, BOUNDARY)

ESPEAK = "espeak-ng"
_SEP = "_"  # espeak-ng --sep character between the phonemes of a word
_STRESS = "ˈˌ"
_LANG_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
_DROP_CHARS = str.maketrans("", "", "-\u200d")
_PHONEME_INPUT = re.compile(r"(?<=\[)(?=\[)|(?<=\])(?=\])")  # espeak reads [[...]] as phonemes


#: symbols that espeak-ng reads as words of the sentence and that are kept (currency signs too);
#: every other symbol is dropped by :func:`clean_text`
SPOKEN_SYMBOLS = frozenset("+=×÷±°")
#: control characters that are ordinary layout (whitespace), not dropped with a warning
_LAYOUT = frozenset("\t\n\r\v\f")


class PhonemizeError(ValueError):
    """A text could not be turned into phones; the message names the item and quotes the text."""


class TextEncodingError(ValueError):
    """A text file is not UTF-8; the message names the file, the line and the byte offset."""


def check_utf8_file(path: str | os.PathLike) -> None:
    """:func:`nar.base.files.check_utf8` raising :class:`TextEncodingError` (the first undecodable
    line as ``<path>:<line>: ...`` with the byte offset and the byte). A missing file is left to
    the reader."""
    check_utf8(path, TextEncodingError)


def _listing(chars: list[str]) -> str:
    """The distinct characters of ``chars`` in order, each quoted with its code point and name."""
    return ", ".join(f"{c!r} (U+{ord(c):04X}{' ' + unicodedata.name(c) if unicodedata.name(c, '') else ''})"
                     for c in dict.fromkeys(chars))


def clean_text(text: str, name: str | None = None) -> str:
    """``text`` without what espeak-ng must not be given (see the module docstring), logging one
    warning per kind of removal that lists the characters; ``name`` (an item) is in the warnings.

    Control characters other than tabs and line breaks become spaces; format characters,
    private-use and unassigned code points, and symbols other than currency signs and
    :data:`SPOKEN_SYMBOLS` are removed, with the combining marks that follow a removed symbol.
    """
    controls: list[str] = []
    dropped: list[str] = []
    out: list[str] = []
    after_dropped = False  # a combining mark (emoji variation selector) goes with its symbol
    for c in text:
        cat = unicodedata.category(c)
        if cat == "Cc" and c not in _LAYOUT:
            controls.append(c)
            out.append(" ")
            after_dropped = False
        elif (cat in ("Cf", "Co", "Cn", "Cs") or (cat[0] == "S" and cat != "Sc" and c not in SPOKEN_SYMBOLS)
              or (cat[0] == "M" and after_dropped)):
            dropped.append(c)
            after_dropped = True
        else:
            out.append(c)
            after_dropped = False
    if controls:
        logger.warning(f"{_item(name)}control characters {_listing(controls)} in text {text!r} replaced by spaces")
    if dropped:
        logger.warning(f"{_item(name)}dropped {_listing(dropped)} from text {text!r}: symbols and invisible "
                       "characters that espeak-ng cannot say or would read out by their names")
    return "".join(out)


def parse_espeak_ipa(output: str) -> list[str]:
    """Phones with ``"|"`` between words from ``espeak-ng -q --ipa --sep=_`` output (any number of
    clause lines). See the module docstring for the cleaning rules."""
    phones: list[str] = []
    for word in _LANG_SWITCH.sub(" ", output).translate(_DROP_CHARS).split():
        word_phones: list[str] = []
        stress = ""
        for phone in word.split(_SEP):
            if phone and not phone.strip(_STRESS):  # a stress mark on its own: onto the next phone
                stress += phone
            elif phone:
                word_phones.append(stress + phone)
                stress = ""
        if word_phones:
            if phones:
                phones.append(BOUNDARY)
            phones.extend(word_phones)
    return phones


def _item(name: str | None) -> str:
    return f"{name}: " if name is not None else ""


class Phonemizer:
    """Text → IPA phones with ``"|"`` between words, by the ``espeak-ng`` binary.

    Args:
        language: an espeak-ng voice (``espeak-ng --voices`` lists them), e.g. ``"en-us"``.
        executable: the espeak-ng program (a name on ``PATH`` or a path).
        timeout: seconds allowed for one espeak-ng run.
        max_cache: how many distinct texts to remember (results are cached by normalised text).

    Raises:
        PhonemizeError: espeak-ng is missing, or has no voice ``language`` (espeak-ng resolves
            names leniently: ``"en-qq"`` falls back to ``en``, ``"no-such-voice"`` to Norwegian;
            only a name with no usable language part, such as ``"zz"``, fails).

    Example:
        >>> Phonemizer("en-us")("Hello world")  # doctest: +SKIP
        ['h', 'ə', 'l', 'ˈoʊ', '|', 'w', 'ˈɜː', 'l', 'd']
    """

    def __init__(self, language: str = "en-us", executable: str = ESPEAK, timeout: float = 30.0,
                 max_cache: int = 100_000) -> None:
        if not language or any(c.isspace() for c in language):
            raise PhonemizeError(f"language must be an espeak-ng voice name, got {language!r}")
        found = shutil.which(executable)
        if found is None:
            raise PhonemizeError(f"{executable!r} not found: phonemes come from the espeak-ng program; "
                                 "install it with `apt-get install espeak-ng`")
        self.language = language
        self.executable = found
        self.timeout = timeout
        self.max_cache = max_cache
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        try:
            self._run("a")
        except PhonemizeError as e:
            raise PhonemizeError(f"espeak-ng cannot use voice {language!r} "
                                 f"(`espeak-ng --voices` lists them): {e}") from None

    def _run(self, text: str) -> str:
        cmd = [self.executable, "-q", "--ipa", f"--sep={_SEP}", "-v", self.language]
        try:
            r = subprocess.run(cmd, check=False, input=text.encode("utf-8"), capture_output=True, timeout=self.timeout)
        except FileNotFoundError:
            raise PhonemizeError(f"{self.executable!r} disappeared; install it with "
                                 "`apt-get install espeak-ng`") from None
        except subprocess.TimeoutExpired:
            raise PhonemizeError(f"espeak-ng took more than {self.timeout:g} s") from None
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).decode("utf-8", "replace").strip()
            raise PhonemizeError(f"`{' '.join(cmd)}` exited with status {r.returncode}: {msg}")
        return r.stdout.decode("utf-8", "replace")

    def __call__(self, text: str, name: str | None = None) -> list[str]:
        """Phones of ``text`` (cleaned by :func:`clean_text` first): a list of IPA symbols with ``"|"``
        between words (never first, last, or twice in a row). ``name`` (an utterance id) is only
        used in error and warning messages."""
        if not isinstance(text, str):
            raise TypeError(f"{_item(name)}text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise PhonemizeError(f"{_item(name)}empty text {text!r}")
        norm = " ".join(clean_text(text, name).split())
        if not norm:
            raise PhonemizeError(f"{_item(name)}text {text!r} is empty once the characters espeak-ng cannot say "
                                 "are dropped")
        if not any(c.isalnum() for c in norm):
            raise PhonemizeError(f"{_item(name)}text {text!r} has no letter or digit to pronounce")
        cached = self._cache.get(norm)
        if cached is not None:
            return list(cached)
        try:
            phones = parse_espeak_ipa(self._run(_PHONEME_INPUT.sub(" ", norm)))
        except PhonemizeError as e:
            raise PhonemizeError(f"{_item(name)}text {text!r}: {e}") from None
        if not phones:
            raise PhonemizeError(f"{_item(name)}espeak-ng produced no phones for text {text!r}")
        with self._lock:
            if len(self._cache) < self.max_cache:
                self._cache[norm] = tuple(phones)
        return phones

    def phonemize_many(self, texts: Sequence[str], names: Sequence[str] | None = None,
                       jobs: int = 2) -> list[list[str]]:
        """``[self(t, n) for t, n in zip(texts, names)]`` by ``jobs`` threads (each runs espeak-ng
        processes); order kept. The first failing item (in order) raises its PhonemizeError."""
        if names is not None and len(names) != len(texts):
            raise ValueError(f"names has {len(names)} entries but texts has {len(texts)}")
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        items = list(zip(texts, names if names is not None else [None] * len(texts)))
        if jobs == 1 or len(items) <= 1:
            return [self(t, n) for t, n in items]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(lambda item: self(*item), items))


class PhoneTokenizer:
    """Phones ↔ integer ids.

    Args:
        token_list: the tokens in id order, or a file with one token per line. It must begin with
            ``<blank>`` (id 0, the padding id), ``<unk>`` (1), ``|`` (2); tokens are unique and
            contain no whitespace. :meth:`build_token_list` makes such a list (phones sorted).

    Raises:
        ValueError: a malformed list; the message names the file (if any) and the token.
    """

    def __init__(self, token_list: Sequence[str] | str | os.PathLike) -> None:
        if isinstance(token_list, (str, os.PathLike)):
            source = str(token_list)
            if not os.path.isfile(source):
                raise ValueError(f"token_list {source}: file missing")
            with open(source, encoding="utf-8") as f:
                tokens = [line.rstrip("\n") for line in f]
        else:
            source, tokens = "token_list", list(token_list)
        if tuple(tokens[:3]) != SPECIAL_TOKENS:
            raise ValueError(f"{source}: must begin with {list(SPECIAL_TOKENS)}, begins with {tokens[:3]}")
        index: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok or any(c.isspace() for c in tok):
                raise ValueError(f"{source}: token {i} ({tok!r}) is empty or contains whitespace")
            if tok in index:
                raise ValueError(f"{source}: token {tok!r} appears twice (ids {index[tok]} and {i})")
            index[tok] = i
        self._tokens = tokens
        self._index = index
        self._warned: set[str] = set()

    @staticmethod
    def build_token_list(phone_seqs: Iterable[Sequence[str]]) -> list[str]:
        """``[<blank>, <unk>, |]`` + every other symbol of ``phone_seqs`` in sorted order."""
        phones: set[str] = set()
        for i, seq in enumerate(phone_seqs):
            for p in seq:
                if not isinstance(p, str) or not p or any(c.isspace() for c in p):
                    raise ValueError(f"phone_seqs[{i}]: phone {p!r} is empty or contains whitespace")
                phones.add(p)
        return list(SPECIAL_TOKENS) + sorted(phones.difference(SPECIAL_TOKENS))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhoneTokenizer:
        """A tokenizer from a token-list file (one token per line)."""
        return cls(path)

    def save(self, path: str | os.PathLike) -> None:
        """Write the token list, one token per line, atomically (temp file + rename)."""
        write_lines(path, self._tokens)

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def pad_id(self) -> int:
        """Id of ``<blank>`` (0), used for padding."""
        return self._index[BLANK]

    @property
    def unk_id(self) -> int:
        return self._index[UNK]

    @property
    def boundary_id(self) -> int:
        """Id of the word-boundary token ``|``."""
        return self._index[BOUNDARY]

    def encode(self, phones: Sequence[str]) -> list[int]:
        """Phones → ids (L,); a symbol not in the list becomes ``<unk>`` (warned once per symbol)."""
        ids = []
        for p in phones:
            i = self._index.get(p)
            if i is None:
                if p not in self._warned:
                    self._warned.add(p)
                    logger.warning("phone %r is not in the token list: encoded as %s", p, UNK)
                i = self.unk_id
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids (L,) → tokens, one per id (``<blank>``/``<unk>`` included)."""
        out = []
        for i in ids:
            j = int(i)
            if not 0 <= j < len(self._tokens):
                raise ValueError(f"ids: {j} is out of range for {len(self._tokens)} tokens")
            out.append(self._tokens[j])
        return out
