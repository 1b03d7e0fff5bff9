"""tts.text (espeak-ng phonemizer, phone tokenizer) and the tts.bin.phonemize CLI end to end."""

import itertools
import logging
import shutil

import pytest

from tts.bin import phonemize as phonemize_cli
from tts.text import (
    BLANK,
    BOUNDARY,
    UNK,
    PhonemizeError,
    Phonemizer,
    PhoneTokenizer,
    parse_espeak_ipa,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def phonemizer():
    return Phonemizer("en-us")


def check_shape(phones):
    assert phones and all(phones)
    assert phones[0] != BOUNDARY and phones[-1] != BOUNDARY
    assert all(not (a == b == BOUNDARY) for a, b in itertools.pairwise(phones))
    assert all(not any(c.isspace() for c in p) for p in phones)


@needs_espeak
def test_words_are_separated(phonemizer):
    phones = phonemizer("the cat sat on a mat")
    check_shape(phones)
    assert phones.count(BOUNDARY) == 5
    assert phones[phones.index(BOUNDARY) + 1] == "k"  # "cat" begins with /k/


@needs_espeak
def test_clauses_and_punctuation_join_with_one_boundary(phonemizer):
    phones = phonemizer("Hello, world. How are you?")
    check_shape(phones)
    assert phones.count(BOUNDARY) == 4  # 5 words over 3 clauses
    assert phonemizer("Hello world how are you") == phones
    # stress stays attached to its vowel: one symbol per phoneme
    assert not any(p in ("ˈ", "ˌ") for p in phones) and any(p.startswith("ˈ") for p in phones)


@needs_espeak
def test_batch_equals_singles(phonemizer):
    texts = ["one two three", "Good morning, doctor.", "42 dogs", "a b"]
    assert phonemizer.phonemize_many(texts, jobs=2) == [Phonemizer("en-us")(t) for t in texts]
    assert phonemizer.phonemize_many(texts, names=["a", "b", "c", "d"], jobs=1) == phonemizer.phonemize_many(texts)


@needs_espeak
@pytest.mark.parametrize("text", ["", "   \n", "!!! ---", "…", "?!"])
def test_unpronounceable_text_names_the_item(phonemizer, text):
    with pytest.raises(PhonemizeError, match="utt-7") as err:
        phonemizer(text, name="utt-7")
    assert repr(text) in str(err.value)
    with pytest.raises(PhonemizeError, match="utt-9"):
        phonemizer.phonemize_many(["fine", text], names=["utt-8", "utt-9"])


@needs_espeak
def test_unknown_voice_and_missing_program():
    with pytest.raises(PhonemizeError, match="zz-yy"):
        Phonemizer("zz-yy")  # espeak-ng resolves "no-such-voice" to Norwegian
    with pytest.raises(PhonemizeError, match="apt-get install espeak-ng"):
        Phonemizer(executable="/nonexistent/espeak-ng")


def test_parse_espeak_output():
    out = "h_ə_l_ˈoʊ\nw_ˈɜː_l_d__\n ð_ɪ_ ˈɛ_n_d\n"
    assert parse_espeak_ipa(out) == ["h", "ə", "l", "ˈoʊ", "|", "w", "ˈɜː", "l", "d", "|", "ð", "ɪ", "|",
                                     "ˈɛ", "n", "d"]
    # language switches, linking hyphens, a stress mark on its own
    assert parse_espeak_ipa("l_ə- (en)_f_ˈʊ_t_(fr) e ˈ_a") == ["l", "ə", "|", "f", "ˈʊ", "t", "|", "e", "|", "ˈa"]
    assert parse_espeak_ipa("\n \n") == []


def test_tokenizer_round_trip_unk_and_save(tmp_path, caplog):
    seqs = [["h", "ə", "|", "w"], ["w", "ˈoʊ"]]
    tokens = PhoneTokenizer.build_token_list(seqs)
    assert tokens == [BLANK, UNK, BOUNDARY, "h", "w", "ə", "ˈoʊ"]
    tok = PhoneTokenizer(tokens)
    assert (tok.pad_id, tok.unk_id, tok.boundary_id, len(tok)) == (0, 1, 2, 7)
    ids = tok.encode(seqs[0])
    assert ids == [3, 5, 2, 4] and tok.decode(ids) == seqs[0]
    with caplog.at_level(logging.WARNING, logger="tts.text"):
        assert tok.encode(["x", "h", "x"]) == [1, 3, 1]
    assert sum("'x'" in r.getMessage() for r in caplog.records) == 1  # warned once
    path = tmp_path / "sub" / "tokens.txt"
    tok.save(path)
    assert path.read_text(encoding="utf-8").splitlines() == tokens
    assert PhoneTokenizer.load(path).tokens == tokens
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([7])


def test_tokenizer_rejects_bad_lists(tmp_path):
    with pytest.raises(ValueError, match="must begin with"):
        PhoneTokenizer(["a", BLANK, UNK, BOUNDARY])
    with pytest.raises(ValueError, match="twice"):
        PhoneTokenizer([BLANK, UNK, BOUNDARY, "a", "a"])
    bad = tmp_path / "tokens.txt"
    bad.write_text(f"{BLANK}\n{UNK}\n{BOUNDARY}\na b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="tokens.txt"):
        PhoneTokenizer(bad)
    with pytest.raises(ValueError, match="missing"):
        PhoneTokenizer(tmp_path / "none.txt")


def read_map(path):
    return dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


@needs_espeak
def test_cli_end_to_end(tmp_path):
    text = tmp_path / "text"
    text.write_text("spk1-2 good morning\nspk1-1 hello world, how are you\nspk2-1 !!!\n", encoding="utf-8")
    out = tmp_path / "dump" / "train"
    tokens = tmp_path / "dump" / "tokens.txt"
    argv = ["--text", str(text), "--out_dir", str(out), "--token_list", str(tokens), "--log_level", "ERROR"]
    with pytest.raises(SystemExit, match="spk2-1.*'!!!'"):
        phonemize_cli.main(argv)
    assert phonemize_cli.main(argv + ["--skip_bad", "--jobs", "2"]) == 0
    phones, ids, shape = read_map(out / "phones"), read_map(out / "phones_int"), read_map(out / "phones_shape")
    assert list(phones) == ["spk1-1", "spk1-2"]  # sorted, bad one left out
    assert phones["spk1-1"].split().count(BOUNDARY) == 4
    tok = PhoneTokenizer.load(tokens)
    for utt in phones:
        int_ids = [int(i) for i in ids[utt].split()]
        assert tok.decode(int_ids) == phones[utt].split()
        assert int(shape[utt]) == len(int_ids)
    # an existing token list is read, not rebuilt: unseen phones become <unk>
    text.write_text("spk3-1 zebra\n", encoding="utf-8")
    assert phonemize_cli.main(argv[:3] + [str(tmp_path / "test")] + argv[4:]) == 0
    assert tokens.read_text(encoding="utf-8") == "\n".join(tok.tokens) + "\n"
    assert "1" in read_map(tmp_path / "test" / "phones_int")["spk3-1"].split()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        phonemize_cli.main(["-h"])
    assert e.value.code == 0 and "--token_list" in capsys.readouterr().out
