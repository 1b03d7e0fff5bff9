"""asr.wordlm: a word n-gram LM through a lexicon tree in character CTC prefix beam search.

Independent truths: the word LM's own sentence probability (the look-ahead increments must sum
to it exactly over any finished hypothesis, hypothesis-tested), brute-force maxima for the
look-ahead, brute-force enumeration of every CTC frame path for the fused search, and a case
where the lexicon must overrule the acoustics.
"""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.bin.train_ngram import main as train_ngram_main
from asr.lm import BOS, EOS, UNK, ArpaError, NgramLM, train_ngram
from asr.wordlm import Lexicon, WordLMScorer
from nar.ctc import ctc_prefix_beam_search
from tests.nar.test_ctc import brute_force

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "'", "<space>", "<sos/eos>"]
IDS = {t: i for i, t in enumerate(TOKENS)}
WORDS = ["a", "ab", "abc", "b", "ba", "cab", "c'a", "bb"]


def make_lm(order=3, seed=0, words=WORDS):
    rng = random.Random(seed)
    sents = [[rng.choice(words[:6]) for _ in range(rng.randint(1, 4))] for _ in range(40)]
    sents.append(list(words))  # every word is seen
    return train_ngram(sents, order, sorted(set(words)))


def spell(words):
    ids = []
    for i, w in enumerate(words):
        if i:
            ids.append(IDS["<space>"])
        ids += [IDS[c] for c in w]
    return tuple(ids)


def test_lexicon_tree_and_ranges():
    lex = Lexicon(WORDS + ["xyz"], TOKENS)  # "xyz" cannot be spelled with these tokens
    assert lex.words == sorted(WORDS) and lex.unspellable == ["xyz"]
    for prefix in ["a", "ab", "b", "c", "c'", "ca"]:
        node = lex.node_of(prefix, TOKENS)
        under = [w for w in lex.words if w.startswith(prefix)]
        assert lex.words[lex.lo[node]:lex.hi[node]] == under
        assert (lex.word_at[node] is not None) == (prefix in WORDS)
    assert lex.node_of("ac", TOKENS) is None and lex.node_of("", TOKENS) == 0
    with pytest.raises(ValueError, match="spelled"):
        Lexicon(["xyz"], TOKENS)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_lookahead_is_the_best_word_below_the_node(order):
    lm = make_lm(order)
    scorer = WordLMScorer(lm, TOKENS)
    for hist in [(BOS,), (BOS, "ab"), ("b", "ba"), ("cab", "a")]:
        hist = hist[len(hist) - order + 1:] if order > 1 else ()
        for prefix in ["a", "ab", "b", "c", "c'"]:
            node = scorer.lexicon.node_of(prefix, TOKENS)
            want = max(lm.logprob(hist, w) for w in WORDS if w.startswith(prefix))
            assert scorer._lookahead(hist, node) == pytest.approx(want, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), st.sampled_from([1, 2, 3, 4]),
       st.floats(-2.0, 2.0))
def test_increments_telescope_to_the_word_lm(words, order, bonus):
    lm = make_lm(order)
    scorer = WordLMScorer(lm, TOKENS, length_bonus=bonus)
    ids = spell(words)
    assert scorer.prefix_logprob(ids) == pytest.approx(lm.sentence_logprob(words), abs=1e-6)
    # the same through the hook, one token at a time (with the length bonus), plus the end
    total = sum(float(scorer([ids[:i]], torch.tensor([[ids[i]]]))[0, 0]) for i in range(len(ids)))
    total += scorer.end_logprob(ids)
    assert total == pytest.approx(lm.sentence_logprob(words) + bonus * len(ids), abs=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(WORDS + ["cc", "ac", "bab'"]), min_size=1, max_size=5), st.floats(-8.0, 0.0))
def test_out_of_vocabulary_words(words, penalty):
    lm = make_lm(3)
    closed, open_ = WordLMScorer(lm, TOKENS), WordLMScorer(lm, TOKENS, oov_penalty=penalty)
    ids = spell(words)
    as_lm = [w if w in WORDS else UNK for w in words]
    n_oov = sum(w not in WORDS for w in words)
    expected = lm.sentence_logprob(as_lm) + penalty * n_oov
    assert open_.prefix_logprob(ids) == pytest.approx(expected, abs=1e-6)
    assert (closed.prefix_logprob(ids) == -math.inf) == (n_oov > 0)


def test_spaces_specials_and_rows():
    scorer = WordLMScorer(make_lm(2), TOKENS)
    row = scorer._row(scorer._state(()))
    # nothing starts with a space or a special token; every first letter of a word is allowed
    for tok in ["<space>", "<unk>", "<sos/eos>", "'"]:
        assert row[IDS[tok]] == -math.inf
    for tok in "abc":
        assert row[IDS[tok]] > -math.inf
    mid = scorer._row(scorer._state(spell(["c"])))  # "c" is only a prefix (of "cab", "c'a")
    assert mid[IDS["<space>"]] == -math.inf and mid[IDS["'"]] > -math.inf and mid[IDS["b"]] == -math.inf
    assert scorer.end_logprob(spell(["c"])) == -math.inf
    double = spell(["ab"]) + (IDS["<space>"],)
    assert scorer._row(scorer._state(double))[IDS["<space>"]] == -math.inf


def test_fused_beam_is_exact_against_brute_force():
    tokens = ["<blank>", "a", "b", "<space>"]
    lm = train_ngram([["a", "ab"], ["b", "a"], ["ab"], ["ba", "a"]] * 3, 2, ["a", "ab", "b", "ba"])
    scorer = WordLMScorer(lm, tokens)
    torch.manual_seed(0)
    for _ in range(4):
        lp = torch.randn(1, 6, 4).log_softmax(-1)
        beams = ctc_prefix_beam_search(lp, torch.tensor([6]), beam_size=200, nbest=200, lm_score_fn=scorer,
                                       lm_weight=0.7)[0]
        ranked = sorted(((h.score + 0.7 * scorer.end_logprob(h.tokens), h.tokens) for h in beams), reverse=True)
        truth = [(s + 0.7 * scorer.prefix_logprob(y), y) for s, y in brute_force(lp[0])]
        truth = sorted((t for t in truth if t[0] > -math.inf), reverse=True)
        assert ranked[0][1] == truth[0][1]
        assert ranked[0][0] == pytest.approx(truth[0][0], abs=1e-4)


def test_lexicon_overrules_a_misspelling():
    # frames say "a" then "c" by a margin over "b"; "ac" is no word of the lexicon, "ab" is
    tokens = ["<blank>", "a", "b", "c", "<space>"]
    lm = train_ngram([["ab"], ["ba"], ["ab", "ba"]] * 5, 2, ["ab", "ba"])
    lp = torch.full((1, 3, 5), -8.0)
    lp[0, 0, 1] = -0.01  # a
    lp[0, 1, 3], lp[0, 1, 2] = -0.5, -0.9  # c by a margin, then b
    lp[0, 2, 0] = -0.01
    lp = lp.log_softmax(-1)
    plain = ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=8)[0][0]
    fused = ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=8, lm_score_fn=WordLMScorer(lm, tokens),
                                   lm_weight=0.1)[0][0]
    assert plain.tokens == (1, 3) and fused.tokens == (1, 2)


def test_misuse_is_a_clear_error():
    lm = make_lm(2)
    with pytest.raises(ArpaError, match="<space>"):
        WordLMScorer(lm, ["<blank>", "a", "b"])
    with pytest.raises(ArpaError, match="character token lists only"):
        WordLMScorer(lm, ["<blank>", "<space>", "a", "▁ab"])
    char_lm = train_ngram([list("abc")], 3, ["a", "b", "c", "<space>"])
    with pytest.raises(ArpaError, match="token LM"):
        WordLMScorer(char_lm, TOKENS)


def test_train_ngram_cli_words(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("the cat sat\nthe hat\na cat and a hat\n")
    out = tmp_path / "2gram.arpa"
    train_ngram_main(["--token_type", "word", "--text", str(text), "--order", "2", "--output", str(out)])
    lm = NgramLM.load(str(out))
    assert {"the", "cat", "sat", "hat", "a", "and"} <= set(lm.vocab) and EOS in lm.vocab
    assert lm.logprob((BOS,), "the") > lm.logprob((BOS,), "sat")
    with pytest.raises(SystemExit, match="token_list"):
        train_ngram_main(["--token_type", "char", "--text", str(text), "--output", str(out)])
