"""asr.lm: interpolated modified Kneser-Ney n-grams, ARPA I/O, and shallow fusion in CTC beam search.

Independent truths: the Kneser-Ney formulas evaluated directly from counts (not via back-off),
normalisation of every distribution (hypothesis), brute-force enumeration of CTC label
sequences for fusion, and an LM that must correct an acoustically ambiguous decision.
"""

import gzip
import math
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.bin.train_ngram import main as train_ngram_main
from asr.lm import BOS, EOS, UNK, ArpaError, NgramLM, discounts_from_counts, train_ngram
from nar.ctc import ctc_prefix_beam_search
from tests.nar.test_ctc import brute_force

VOCAB = ["a", "b", "c", "<space>"]


def reference_kn(sentences, order, vocab):
    """p(w | h) of interpolated modified Kneser-Ney, straight from the definitions."""
    words = sorted(set(vocab) | {EOS, UNK})
    padded = [[BOS, *s, EOS] for s in sentences]
    raw = Counter()
    for s in padded:
        for i in range(1, len(s)):
            for n in range(1, order + 1):
                if i - n + 1 >= 0:
                    raw[tuple(s[i - n + 1:i + 1])] += 1

    def adjusted(g):
        if len(g) == order or g[0] == BOS:
            return raw[g]
        return len({x[0] for x in raw if len(x) == len(g) + 1 and x[1:] == g})

    disc = {n: discounts_from_counts([adjusted(g) for g in raw if len(g) == n]) for n in range(1, order + 1)}

    def prob(h, w):
        if len(h) >= order:
            h = h[len(h) - order + 1:]
        n = len(h) + 1
        succ = {g[-1]: adjusted(g) for g in raw if len(g) == n and g[:-1] == h}
        lower = (1.0 / len(words)) if not h else prob(h[1:], w)
        total = sum(succ.values())
        if total == 0:
            return lower
        d = disc[n]
        gamma = (d.d1 * sum(c == 1 for c in succ.values()) + d.d2 * sum(c == 2 for c in succ.values())
                 + d.d3 * sum(c >= 3 for c in succ.values())) / total
        c = succ.get(w, 0)
        return max(c - d(c), 0.0) / total + gamma * lower if c else gamma * lower

    return prob, words


def random_corpus(seed, n=25, alphabet="abc"):
    rng = random.Random(seed)
    return [[rng.choice(alphabet) for _ in range(rng.randint(0, 6))] for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_the_kneser_ney_formulas(order, tmp_path):
    sents = random_corpus(order)
    prob, words = reference_kn(sents, order, VOCAB)
    path = str(tmp_path / "lm.arpa")
    train_ngram(sents, order, VOCAB).write_arpa(path)
    lm = NgramLM.load(path)  # what decoding uses: back-off scoring of the ARPA file
    contexts = [(), (BOS,), (BOS, "a"), ("a", "b"), ("c", "c"), ("b", "a", "b"), ("<space>",), (BOS, "c", "c")]
    for h in contexts:
        for w in words:
            assert lm.logprob(h, w) == pytest.approx(math.log(prob(h, w)), abs=1e-5), (h, w)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.integers(1, 5),
       context=st.lists(st.sampled_from(["a", "b", "c", "<space>", "zz"]), max_size=5), bos=st.booleans())
def test_every_distribution_sums_to_one(seed, order, context, bos):
    lm = train_ngram(random_corpus(seed, n=15), order, VOCAB)
    h = ([BOS] if bos else []) + context
    probs = lm.next_logprobs(h).exp()
    predicted = [i for i, w in enumerate(lm.vocab) if w != BOS]
    assert float(probs[predicted].sum()) == pytest.approx(1.0, abs=1e-9)
    assert lm.logprob(h, "zz") == lm.logprob(h, UNK)  # unknown words score as <unk>


def test_seen_text_is_more_probable_and_perplexity(tmp_path):
    text = [list("abab"), list("abab"), list("abc")] * 5
    lm = train_ngram(text, 3, VOCAB)
    assert lm.sentence_logprob(list("abab")) > lm.sentence_logprob(list("baba"))
    ppl, n = lm.perplexity([list("abab")])
    assert n == 5 and 1.0 < ppl < lm.perplexity([list("cccc")])[0]


def test_arpa_round_trip_gz_and_errors(tmp_path):
    lm = train_ngram(random_corpus(1), 3, VOCAB)
    plain, packed = tmp_path / "lm.arpa", tmp_path / "lm.arpa.gz"
    lm.write_arpa(str(plain))
    lm.write_arpa(str(packed))
    assert gzip.open(packed, "rt").read() == plain.read_text()
    a, b = NgramLM.load(str(plain)), NgramLM.load(str(packed))
    for h in [(), (BOS,), ("a", "b")]:
        torch.testing.assert_close(a.next_logprobs(h), b.next_logprobs(h))
        torch.testing.assert_close(a.next_logprobs(h), lm.next_logprobs(h), atol=1e-5, rtol=0)
    lines = plain.read_text().splitlines()
    bad = tmp_path / "bad.arpa"
    bad.write_text("\n".join(lines[:12] + ["-0.5 a b c d e"] + lines[12:]))  # a 2-gram line with 5 words
    with pytest.raises(ArpaError, match=r"bad\.arpa:13: a 1-gram line|bad\.arpa:13"):
        NgramLM.load(str(bad))
    bad.write_text(plain.read_text().replace("ngram 1=", "ngram 1=9"))
    with pytest.raises(ArpaError, match="header says"):
        NgramLM.load(str(bad))
    bad.write_text("hello\n")
    with pytest.raises(ArpaError, match="bad.arpa"):
        NgramLM.load(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        NgramLM.load(str(tmp_path / "missing.arpa"))


TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<space>", "<sos/eos>"]


def test_scorer_maps_asr_tokens_to_lm_words():
    lm = train_ngram([list("abc"), list("ab")], 3, ["a", "b", "<space>"])  # "c" is not an LM word
    scorer = lm.scorer(TOKENS, length_bonus=0.25)
    prefixes = [(), (2,), (2, 3), (4, 2, 3)]
    cand = torch.tensor([[2, 3, 4, 6]] * 4)
    got = scorer(prefixes, cand)
    for n, (p, ctx) in enumerate(zip(prefixes, [(BOS,), (BOS, "a"), ("a", "b"), ("a", "b")])):
        for c, w in enumerate(["a", "b", UNK, EOS]):
            assert float(got[n, c]) == pytest.approx(lm.logprob(ctx, w) + 0.25, abs=1e-5)
    assert scorer.end_logprob((2, 3)) == pytest.approx(lm.logprob(("a", "b"), EOS))


def test_fused_beam_is_exact_against_brute_force():
    torch.manual_seed(0)
    lm = train_ngram([list("ab"), list("abc"), list("ca")] * 3, 2, ["a", "b", "c", "<space>"])
    vocab = ["<blank>", "a", "b", "c"]
    scorer = lm.scorer(vocab)
    word = {1: "a", 2: "b", 3: "c"}

    def lm_fn(prefix, token):
        return lm.logprob([BOS] + [word[t] for t in prefix], word[token])

    for _ in range(3):
        lp = torch.randn(1, 5, 4).log_softmax(-1)
        best = ctc_prefix_beam_search(lp, torch.tensor([5]), beam_size=64, lm_score_fn=scorer, lm_weight=0.7)[0][0]
        ref = brute_force(lp[0], lm=lm_fn, lm_weight=0.7)[0]
        assert best.tokens == ref[1]
        assert best.score == pytest.approx(ref[0], abs=1e-4)


def test_lm_resolves_an_acoustically_ambiguous_token():
    # frames say "a ? b" where ? is c or b by a hair; the LM saw only "acb"
    lm = train_ngram([list("acb")] * 10, 3, ["a", "b", "c", "<space>"])
    vocab = ["<blank>", "a", "b", "c"]
    lp = torch.full((1, 4, 4), -8.0)
    lp[0, 0, 1] = lp[0, 2, 0] = lp[0, 3, 2] = -0.01  # a, ?, blank, b
    lp[0, 1, 2], lp[0, 1, 3] = -0.6, -0.8
    lp = lp.log_softmax(-1)
    plain = ctc_prefix_beam_search(lp, torch.tensor([4]), beam_size=8)[0][0]
    fused = ctc_prefix_beam_search(lp, torch.tensor([4]), beam_size=8, lm_score_fn=lm.scorer(vocab),
                                   lm_weight=0.5)[0][0]
    assert plain.tokens == (1, 2, 2) and fused.tokens == (1, 3, 2)


def test_train_ngram_cli(tmp_path, capsys):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    plain = tmp_path / "lm.txt"
    plain.write_text("ab ca\nabc\n")
    kaldi = tmp_path / "text"
    kaldi.write_text("u1 ab\nu2 cab xyz\n")
    out = tmp_path / "lm" / "3gram.arpa"
    train_ngram_main(["--token_list", str(tokens), "--text", str(plain), "--kaldi_text", str(kaldi),
                      "--dev_kaldi_text", str(kaldi), "--order", "3", "--output", str(out)])
    lm = NgramLM.load(str(out))
    assert "<space>" in lm.vocab and "x" not in lm.vocab  # char tokens; OOV characters -> <unk>
    assert lm.logprob((BOS, "a"), "b") > lm.logprob((BOS, "a"), "a")
    info = __import__("json").loads((tmp_path / "lm/3gram.arpa.json").read_text())
    assert info["sentences"] == 4 and info["oov_tokens"] == 3 and info["dev"]["tokens"] == 2 + 1 + 7 + 1
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_ngram_main(["--token_list", str(tokens), "--text", str(tmp_path / "nope.txt"), "--output", str(out)])


def test_train_ngram_cli_bpe(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "train.txt"
    text.write_text("\n".join(["the cat sat on the mat", "a cat and a hat", "the hat is on the cat"] * 20) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), vocab_size=20, model_type="unigram",
                                   model_prefix=str(tmp_path / "bpe"), character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.id_to_piece(i) not in ("<unk>", "<s>", "</s>")]
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", *pieces, "<sos/eos>"]) + "\n")
    out = tmp_path / "2gram.arpa"
    train_ngram_main(["--token_list", str(tokens), "--token_type", "bpe", "--bpemodel", str(tmp_path / "bpe.model"),
                      "--text", str(text), "--order", "2", "--output", str(out)])
    lm = NgramLM.load(str(out))
    assert set(pieces) <= set(lm.vocab)  # the LM's words are the model's pieces
    first = sp.encode("the cat", out_type=str)
    assert lm.sentence_logprob(first) > lm.sentence_logprob(list(reversed(first)))
    with pytest.raises(FileNotFoundError, match="bpemodel"):
        train_ngram_main(["--token_list", str(tokens), "--token_type", "bpe", "--text", str(text),
                          "--output", str(out)])


def test_unknown_word_without_unk_is_an_error(tmp_path):
    arpa = tmp_path / "words.arpa"
    arpa.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t</s>\n-99\t<s>\t-0.1\n-0.5\thello\n\n\\end\\\n")
    lm = NgramLM.load(str(arpa))
    assert lm.logprob([BOS], "hello") == pytest.approx(-0.5 * math.log(10))  # a unigram model ignores context
    with pytest.raises(KeyError, match="words.arpa"):
        lm.logprob([BOS], "world")
