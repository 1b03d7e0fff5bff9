"""asr.data.text: the normalisation and the sentence filter."""

import os
import re
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.data.text import (MissingToolError, bible_verses, clean_sentence, filter_sentences,
                           fortune_files, load_sentences, normalize_text, read_fortune_cookies,
                           split_sentences)

_ALPHABET = re.compile(r"[a-z' ]*")
_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.text(
    alphabet="aZ' -.,\t\n’‘é9!", max_size=40)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_normalize_idempotent_and_alphabet(s):
    out = normalize_text(s)
    assert normalize_text(out) == out
    assert _ALPHABET.fullmatch(out)
    assert out == " ".join(out.split())
    for word in out.split():
        assert word.strip("'") == word and word


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("  'Tis the  season -- isn't it? ", "tis the season isn't it"),
    ("the dogs' bones", "the dogs bones"),
    ("Café’s crème", "cafe's creme"),
    ("rock-n-roll 42 times", "rock n roll times"),
    ("''", ""),
])
def test_normalize_examples(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_rejects_non_str():
    with pytest.raises(TypeError, match="normalize_text expects str"):
        normalize_text(b"bytes")


@pytest.mark.parametrize("raw", [
    "He was born in 1952 and died young.",           # digits
    "Mr. Smith went to the market today.",           # abbreviation
    "Three words only.",                             # < 4 words
    " ".join(["word"] * 21) + ".",                   # > 20 words
    "Send mail to root@localhost right now please.", # symbols
    "Henry VIII had six wives, they say.",           # Roman numeral
    "Hmm, I do not know about that.",                # word without a vowel
    "Naïve people believe this sort of thing.",      # non-ASCII letter
])
def test_clean_sentence_rejects(raw):
    assert clean_sentence(raw) is None


@pytest.mark.parametrize("raw", [
    "The CIVIL war was a long one.",                 # capitals, but not a Roman numeral
    "O LORD, hear my prayer and my cry.",
    "I think I can do it now.",
])
def test_clean_sentence_keeps(raw):
    assert clean_sentence(raw) == raw.lower()


def test_clean_sentence_keeps_speakable_punctuation():
    speakable = clean_sentence('"Well," said the King -- "it isn\'t so."')
    assert speakable == "well, said the king it isn't so."
    assert normalize_text(speakable) == "well said the king it isn't so"


def test_split_sentences_and_long_clauses():
    assert split_sentences("One two three four. Five six? \"Seven!\" Eight") == [
        "One two three four.", "Five six?", '"Seven!"', "Eight"]
    long = "a b c d e f g h i j k l; m n o p q r s t u v w x y: z end"
    assert split_sentences(long, max_words=20) == [
        "a b c d e f g h i j k l;", "m n o p q r s t u v w x y:", "z end"]


def _fake_fortunes(root):
    os.makedirs(os.path.join(root, "off"))
    cookies = ("The sun also rises in the east.\n%\n"
               "A wise man once said nothing at all.  It was quiet.\n\t\t-- Some Author, 1999\n%\n"
               "The sun also rises in the east!\n%\n")
    with open(os.path.join(root, "wisdom"), "w") as f:
        f.write(cookies)
    with open(os.path.join(root, "wisdom.dat"), "wb") as f:
        f.write(b"\0\1binary")
    os.symlink("wisdom", os.path.join(root, "wisdom.u8"))
    with open(os.path.join(root, "off", "rude"), "w") as f:
        f.write("This rude cookie must never be read.\n%\n")


def test_fortunes_parsing_filter_and_dedup(tmp_path):
    root = str(tmp_path / "fortunes")
    _fake_fortunes(root)
    assert fortune_files(root) == [os.path.join(root, "wisdom")]
    cookies = list(read_fortune_cookies(os.path.join(root, "wisdom")))
    assert len(cookies) == 3 and "Author" not in cookies[1]
    sentences = load_sentences(("fortunes",), fortunes_dir=root)
    assert [s.text for s in sentences] == [
        "the sun also rises in the east", "a wise man once said nothing at all"]
    assert {s.source for s in sentences} == {"fortunes/wisdom"}
    assert load_sentences(("fortunes",), fortunes_dir=root) == sentences  # deterministic


def test_filter_sentences_dedups_by_normalised_text():
    kept = filter_sentences([("a", "Go to the shop now."), ("b", "go to the SHOP, now!")])
    assert [(s.source, s.text) for s in kept] == [("a", "go to the shop now")]


def test_missing_sources_name_the_package(tmp_path, monkeypatch):
    with pytest.raises(MissingToolError, match="fortunes"):
        fortune_files(str(tmp_path / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match="bible-kjv"):
        list(bible_verses())
    with pytest.raises(ValueError, match="unknown text source 'news'"):
        load_sentences(("news",))


@pytest.mark.skipif(shutil.which("bible") is None, reason="bible-kjv not installed")
def test_bible_verse_references_stripped():
    verses = list(bible_verses("Gen1:1-Gen1:2"))
    assert verses[0] == "In the beginning God created the heaven and the earth."
    assert len(verses) == 2 and not verses[1][0].isdigit()
    song = list(bible_verses("SSol1:1"))
    assert song == ["The song of songs, which is Solomon's."]
