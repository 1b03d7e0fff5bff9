"""nar.ctc: greedy search, prefix beam search (beam 1 = greedy, exact on tiny cases vs brute
force, LM hook), batch = items, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.ctc import CTCHypothesis, ctc_greedy_search, ctc_prefix_beam_search

from .helpers import padded_log_probs


def collapse(path, blank=0):
    out, prev = [], None
    for c in path:
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs, blank=0, lm=None, lm_weight=0.0):
    """All label sequences of one utterance (T, V) with log P(y | x) (+ lm_weight * log P_LM(y)),
    best first: enumerate every frame path, collapse, sum probabilities."""
    frames, vocab = log_probs.shape
    table = log_probs.tolist()
    totals = {}
    for path in itertools.product(range(vocab), repeat=frames):
        score = sum(table[t][c] for t, c in enumerate(path))
        y = collapse(path, blank)
        totals[y] = totals.get(y, -math.inf)
        totals[y] = max(totals[y], score) + math.log1p(math.exp(-abs(totals[y] - score)))
    ranked = []
    for y, s in totals.items():
        if lm is not None:
            s += lm_weight * sum(lm(y[:i], y[i]) for i in range(len(y)))
        ranked.append((s, y))
    return sorted(ranked, key=lambda p: (-p[0], p[1]))


def test_greedy_known_case_and_padding():
    lp = torch.full((2, 6, 4), -10.0)
    for b, path in enumerate([[1, 1, 0, 1, 2, 2], [3, 0, 3, 3, 0, 0]]):
        for t, c in enumerate(path):
            lp[b, t, c] = -0.01
    lp[1, 4:] = float("nan")  # padding is never read
    res = ctc_greedy_search(lp, torch.tensor([6, 4]))
    assert res.tokens == [[1, 1, 2], [3, 3]]
    assert res.frame_labels[1].tolist() == [3, 0, 3, 3, 0, 0]
    assert torch.allclose(res.scores, torch.tensor([-0.06, -0.04]))
    ties = torch.zeros(1, 2, 3)  # every label equal: the first maximum (blank) wins
    assert ctc_greedy_search(ties, torch.tensor([2])).tokens == [[]]


def test_greedy_batch_equals_items():
    lengths = [12, 5, 9]
    lp = padded_log_probs(lengths, 6, 3)
    res = ctc_greedy_search(lp, torch.tensor(lengths))
    for b, n in enumerate(lengths):
        one = ctc_greedy_search(lp[b:b + 1, :n], torch.tensor([n]))
        assert one.tokens[0] == res.tokens[b]
        assert torch.equal(one.scores[0], res.scores[b])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=4), vocab=st.integers(2, 8),
       seed=st.integers(0, 10 ** 6))
def test_beam_one_equals_greedy(lengths, vocab, seed):
    lp = padded_log_probs(lengths, vocab, seed)
    greedy = ctc_greedy_search(lp, torch.tensor(lengths))
    beams = ctc_prefix_beam_search(lp, torch.tensor(lengths), beam_size=1)
    assert [list(h[0].tokens) for h in beams] == greedy.tokens
    for h, score in zip(beams, greedy.scores.tolist()):
        assert h[0].score == pytest.approx(score, abs=1e-4)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=3), vocab=st.integers(2, 4),
       seed=st.integers(0, 10 ** 6), blank=st.integers(0, 1))
def test_large_beam_is_exact_on_tiny_cases(lengths, vocab, seed, blank):
    blank = min(blank, vocab - 1)
    lp = padded_log_probs(lengths, vocab, seed, dtype=torch.float64)
    beams = ctc_prefix_beam_search(lp, torch.tensor(lengths), beam_size=128, blank=blank, nbest=3)
    for b, n in enumerate(lengths):
        ref = brute_force(lp[b, :n], blank)
        assert beams[b][0].tokens == ref[0][1]
        for hyp, (score, y) in zip(beams[b], ref):
            assert hyp.score == pytest.approx(score, abs=1e-9)
        assert len({h.tokens for h in beams[b]}) == len(beams[b])  # no duplicate prefixes


def bigram_lm(prev_token, token):
    """A fixed toy LM: log P(token | last token of the prefix)."""
    table = torch.tensor([[-0.1, -3.0, -2.5], [-2.0, -0.3, -1.6], [-0.7, -1.1, -1.5]], dtype=torch.float64)
    return float(table[prev_token % 3, token % 3])


def test_lm_hook_contract_and_exactness():
    calls = []

    def lm_score_fn(prefixes, next_tokens):
        calls.append((list(prefixes), next_tokens.clone()))
        assert next_tokens.dtype == torch.long and next_tokens.shape[0] == len(prefixes)
        return torch.tensor([[bigram_lm(p[-1] if p else 0, int(c)) for c in row]
                             for p, row in zip(prefixes, next_tokens)], dtype=torch.float64)

    lengths = [4, 3]
    lp = padded_log_probs(lengths, 3, 7, dtype=torch.float64)
    beams = ctc_prefix_beam_search(lp, torch.tensor(lengths), beam_size=64, nbest=3,
                                   lm_score_fn=lm_score_fn, lm_weight=0.7)
    lm = lambda prefix, token: bigram_lm(prefix[-1] if prefix else 0, token)  # noqa: E731
    for b, n in enumerate(lengths):
        ref = brute_force(lp[b, :n], 0, lm, 0.7)
        assert [h.tokens for h in beams[b]] == [y for _, y in ref[:3]]
        assert [h.score for h in beams[b]] == pytest.approx([s for s, _ in ref[:3]], abs=1e-9)
    assert all(isinstance(p, tuple) for prefixes, _ in calls for p in prefixes)
    # lm_weight 0 never calls the hook and gives the acoustic result
    calls.clear()
    plain = ctc_prefix_beam_search(lp, torch.tensor(lengths), beam_size=64, lm_score_fn=lm_score_fn)
    assert not calls
    assert plain[0][0].tokens == brute_force(lp[0, :4])[0][1]


def test_lm_hook_changes_the_result():
    # Acoustics slightly prefer label 1 over label 2; an LM that dislikes 1 flips the decision.
    lp = torch.log(torch.tensor([[[0.1, 0.48, 0.42]]], dtype=torch.float64))
    plain = ctc_prefix_beam_search(lp, torch.tensor([1]), beam_size=3)
    assert plain[0][0].tokens == (1,)

    def no_ones(prefixes, next_tokens):
        return torch.where(next_tokens == 1, -5.0, -0.1).double()

    fused = ctc_prefix_beam_search(lp, torch.tensor([1]), beam_size=3, nbest=2,
                                   lm_score_fn=no_ones, lm_weight=0.5)
    assert fused[0][0] == CTCHypothesis(tokens=(2,), score=pytest.approx(math.log(0.42) - 0.05))
    assert fused[0][1].tokens == ()  # empty hypothesis has no LM term: log 0.1


@pytest.mark.parametrize("mode", ["normal", "ties"])
def test_prefix_search_batch_equals_items_and_nbest_sorted(mode):
    lengths = [60, 11, 48, 30]
    lp = padded_log_probs(lengths, 7, 21, mode)  # "ties": many exactly equal scores
    beams = ctc_prefix_beam_search(lp, torch.tensor(lengths), beam_size=6, nbest=4)
    for b, n in enumerate(lengths):
        one = ctc_prefix_beam_search(lp[b:b + 1, :n], torch.tensor([n]), beam_size=6, nbest=4)[0]
        assert [h.tokens for h in one] == [h.tokens for h in beams[b]]
        # Scores agree up to rounding: CPU vector kernels may round logaddexp differently by an
        # element's position in the tensor (seen: 1 ulp), so bit equality is not guaranteed.
        assert [h.score for h in one] == pytest.approx([h.score for h in beams[b]], rel=1e-6)
        scores = [h.score for h in beams[b]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 4


def test_bad_input():
    lp = padded_log_probs([4, 3], 5, 0)
    lens = torch.tensor([4, 3])
    for fn in (ctc_greedy_search, ctc_prefix_beam_search):
        with pytest.raises(ValueError, match="log_probs"):
            fn(lp[0], lens)
        with pytest.raises(TypeError, match="log_probs"):
            fn(lp.long(), lens)
        with pytest.raises(ValueError, match=r"lengths\[0\] = 9"):
            fn(lp, torch.tensor([9, 3]))
        with pytest.raises(TypeError, match="lengths"):
            fn(lp, lens.float())
        with pytest.raises(ValueError, match="lengths"):
            fn(lp, torch.tensor([4]))
        with pytest.raises(ValueError, match="empty batch"):
            fn(lp[:0], lens[:0])
        with pytest.raises(ValueError, match="blank"):
            fn(lp, lens, blank=5)
        with pytest.raises(ValueError, match="NaN"):
            fn(torch.full((1, 2, 3), float("nan")), torch.tensor([2]))
    with pytest.raises(ValueError, match="beam_size"):
        ctc_prefix_beam_search(lp, lens, beam_size=0)
    with pytest.raises(ValueError, match="nbest"):
        ctc_prefix_beam_search(lp, lens, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="lm_score_fn"):
        ctc_prefix_beam_search(lp, lens, lm_score_fn=lambda p, n: torch.zeros(1), lm_weight=1.0)
