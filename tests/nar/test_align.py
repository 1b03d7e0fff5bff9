"""nar.align: Viterbi vs torchaudio (ties included), spans, trigger masks, ESA, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.align import (
    TIE_RULES,
    TokenSpan,
    error_based_sampling,
    forced_align,
    spans_to_timestamps,
    token_spans,
    trigger_mask,
)
from nar.ctc import ctc_greedy_search

from .helpers import assert_labels_equal_torchaudio, padded_log_probs, per_item_generators, random_targets


def assert_matches_torchaudio(lp, lengths, targets, target_lengths, blank):
    labels, scores = forced_align(lp, torch.tensor(lengths), targets, target_lengths, blank=blank)
    assert_labels_equal_torchaudio(labels, scores, lp, lengths, targets, target_lengths, blank)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 24), min_size=1, max_size=4), vocab=st.integers(2, 6),
       mode=st.sampled_from(["normal", "ties", "uniform"]), seed=st.integers(0, 2 ** 16),
       blank=st.integers(0, 1))
def test_forced_align_equals_torchaudio_per_item(lengths, vocab, mode, seed, blank):
    blank = min(blank, vocab - 1)
    lp = padded_log_probs(lengths, vocab, seed, mode)
    targets, target_lengths = random_targets(lengths, vocab, seed, blank=blank)
    assert_matches_torchaudio(lp, lengths, targets, target_lengths, blank)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forced_align_crafted_ties(dtype):
    # Uniform frames: every alignment has the same score. torchaudio 2.9 stays in a state unless
    # a predecessor is strictly better than both others, and prefers ending on the last token.
    lengths = [6, 6, 5, 7]
    lp = padded_log_probs(lengths, 3, 0, "uniform", dtype=dtype)
    targets = torch.tensor([[1, 2, 0], [1, 1, 0], [1, 2, 0], [2, 1, 2]])
    target_lengths = torch.tensor([2, 2, 2, 3])
    labels, _ = forced_align(lp, torch.tensor(lengths), targets, target_lengths)
    assert labels[0, :6].tolist() == [1, 2, 2, 2, 2, 2]
    assert labels[1, :6].tolist() == [1, 0, 1, 1, 1, 1]
    assert labels[2, :5].tolist() == [1, 2, 2, 2, 2]
    assert_matches_torchaudio(lp, lengths, targets, target_lengths, 0)


def test_forced_align_reproduces_torchaudio_stay_on_tie():
    # Item 1: entering a token state, s - 1 and s - 2 tie above staying; torchaudio 2.9 stays
    # (keeping the lower score), which changes which final state wins. Found by hypothesis.
    lengths = [9, 5]
    lp = padded_log_probs(lengths, 6, 1, "ties")
    targets, target_lengths = random_targets(lengths, 6, 1)
    labels, _ = forced_align(lp, torch.tensor(lengths), targets, target_lengths)
    assert labels[1, :5].tolist() == [4, 3, 1, 0, 0]
    assert_matches_torchaudio(lp, lengths, targets, target_lengths, 0)


def reference_viterbi(frames_lp, targets, blank, tie_rule):
    """Plain per-item Viterbi in Python floats (float64), with the two documented tie rules."""
    num_frames, num_states = len(frames_lp), 2 * len(targets) + 1
    label = [blank if s % 2 == 0 else targets[s // 2] for s in range(num_states)]
    neg = float("-inf")
    alpha = [[neg] * num_states for _ in range(num_frames)]
    back = [[0] * num_states for _ in range(num_frames)]
    for s in range(min(2, num_states)):
        alpha[0][s] = frames_lp[0][label[s]]
    for t in range(1, num_frames):
        for s in range(num_states):
            x0, x1 = alpha[t - 1][s], alpha[t - 1][s - 1] if s > 0 else neg
            x2 = alpha[t - 1][s - 2] if s % 2 == 1 and s > 1 and label[s] != label[s - 2] else neg
            if x2 > x1 and x2 > x0:
                k = 2
            elif (x1 > x0 and x1 > x2) if tie_rule == "torchaudio-2.9" else (x1 > x0 and x1 >= x2):
                k = 1
            else:
                k = 0
            back[t][s] = k
            alpha[t][s] = [x0, x1, x2][k] + frames_lp[t][label[s]]
    s = num_states - 1 if num_states == 1 or alpha[-1][-1] > alpha[-1][-2] else num_states - 2
    path = []
    for t in range(num_frames - 1, -1, -1):
        path.append(label[s])
        s -= back[t][s]
    return path[::-1]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 16), min_size=1, max_size=3), vocab=st.integers(2, 5),
       mode=st.sampled_from(["normal", "ties", "uniform"]), seed=st.integers(0, 2 ** 16))
def test_forced_align_tie_rules_match_plain_reference(lengths, vocab, mode, seed):
    lp = padded_log_probs(lengths, vocab, seed, mode, dtype=torch.float64)
    targets, target_lengths = random_targets(lengths, vocab, seed)
    results = {}
    for rule in TIE_RULES:
        labels, scores = forced_align(lp, torch.tensor(lengths), targets, target_lengths, tie_rule=rule)
        results[rule] = scores.sum(1)
        for b, n in enumerate(lengths):
            ref = reference_viterbi(lp[b, :n].tolist(), targets[b, :int(target_lengths[b])].tolist(), 0, rule)
            assert labels[b, :n].tolist() == ref
    assert torch.all(results["best"] >= results["torchaudio-2.9"] - 1e-9)  # "best" is optimal


def test_forced_align_tight_frames_and_repeats():
    # T == L + repeats: the only path; many repeats; long sequences.
    targets = torch.tensor([[1, 1, 2, 2, 2, 3], [2, 2, 2, 2, 2, 2]])
    target_lengths = torch.tensor([6, 6])
    lengths = [9, 11]
    for mode in ("normal", "ties", "uniform"):
        lp = padded_log_probs(lengths, 4, 3, mode)
        assert_matches_torchaudio(lp, lengths, targets, target_lengths, 0)
    lp = padded_log_probs([300, 250], 30, 5)
    targets, target_lengths = random_targets([300, 250], 30, 5)
    assert_matches_torchaudio(lp, [300, 250], targets, target_lengths, 0)


def test_forced_align_batch_equals_items_and_padding_is_ignored():
    lengths = [20, 9, 15]
    lp = padded_log_probs(lengths, 5, 11)
    targets, target_lengths = random_targets(lengths, 5, 11)
    labels, scores = forced_align(lp, torch.tensor(lengths), targets, target_lengths)
    for b, n in enumerate(lengths):
        m = int(target_lengths[b])
        one, one_scores = forced_align(lp[b:b + 1, :n], torch.tensor([n]), targets[b:b + 1, :max(m, 1)],
                                       torch.tensor([m]))
        assert torch.equal(one[0], labels[b, :n]) and torch.equal(one_scores[0], scores[b, :n])


def test_forced_align_edge_cases():
    # zero frames, zero targets, single frame, mixed in one batch
    empty = forced_align(torch.zeros(2, 0, 3), torch.tensor([0, 0]), torch.zeros(2, 0, dtype=torch.long),
                         torch.tensor([0, 0]))
    assert empty[0].shape == (2, 0) and empty[1].shape == (2, 0)
    lp = padded_log_probs([1, 3, 2], 3, 0)
    labels, scores = forced_align(lp, torch.tensor([1, 3, 0]), torch.tensor([[2, 0], [1, 1], [0, 0]]),
                                  torch.tensor([1, 2, 0]))
    assert labels.tolist() == [[2, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert scores[2].tolist() == [0.0, 0.0, 0.0]


def test_forced_align_bad_input():
    lp = padded_log_probs([5, 4], 4, 0)
    lens, tg, tl = torch.tensor([5, 4]), torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    forced_align(lp, lens, tg, tl)
    cases = [
        ((lp[0], lens, tg, tl), ValueError, "log_probs"),  # wrong rank
        ((lp.long(), lens, tg, tl), TypeError, "log_probs"),  # wrong dtype
        ((lp, torch.tensor([6, 4]), tg, tl), ValueError, "lengths"),  # longer than T
        ((lp, lens.float(), tg, tl), TypeError, "lengths"),
        ((lp, lens, torch.tensor([[1, 0], [3, 0]]), tl), ValueError, "blank"),  # blank in target
        ((lp, lens, tg.float(), tl), TypeError, "targets"),
        ((lp, lens, tg, torch.tensor([3, 1])), ValueError, "target_lengths"),
        ((lp, lens, torch.tensor([[1, 9], [3, 0]]), tl), ValueError, "targets"),  # >= V
        ((lp[:0], lens[:0], tg[:0], tl[:0]), ValueError, "empty"),
    ]
    for args, exc, word in cases:
        with pytest.raises(exc, match=word):
            forced_align(*args)
    # T < L + repeats: item 1 has 4 frames, [1, 1, 1] needs 5 (3 tokens + 2 repeats)
    with pytest.raises(ValueError, match=r"targets\[1\] cannot be aligned: it needs at least 5 frames"):
        forced_align(lp, lens, torch.tensor([[1, 2, 0], [1, 1, 1]]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="blank"):
        forced_align(lp, lens, tg, tl, blank=7)
    with pytest.raises(ValueError, match="tie_rule"):
        forced_align(lp, lens, tg, tl, tie_rule="first")
    zero = torch.full((1, 3, 3), -math.inf)
    zero[..., 0] = 0.0
    with pytest.raises(ValueError, match="probability 0"):
        forced_align(zero, torch.tensor([3]), torch.tensor([[1]]), torch.tensor([1]))


def test_token_spans_match_torchaudio_merge_tokens():
    lengths = [30, 18]
    lp = padded_log_probs(lengths, 6, 4)
    targets, target_lengths = random_targets(lengths, 6, 4)
    labels, scores = forced_align(lp, torch.tensor(lengths), targets, target_lengths)
    spans = token_spans(labels, torch.tensor(lengths), scores)
    for b, n in enumerate(lengths):
        ref = torchaudio.functional.merge_tokens(labels[b, :n], scores[b, :n])
        assert [(s.token, s.start, s.end) for s in spans[b]] == [(s.token, s.start, s.end) for s in ref]
        assert [s.score for s in spans[b]] == pytest.approx([s.score for s in ref], abs=1e-5)
        assert [s.token for s in spans[b]] == targets[b, :int(target_lengths[b])].tolist()
    no_scores = token_spans(labels, torch.tensor(lengths))
    assert all(math.isnan(s.score) for s in no_scores[0])
    assert spans_to_timestamps([TokenSpan(3, 2, 5, 0.0)], 0.04) == [(0.08, pytest.approx(0.2))]
    with pytest.raises(ValueError, match="frame_shift"):
        spans_to_timestamps(spans[0], 0.0)
    with pytest.raises(ValueError, match="labels"):
        token_spans(labels[0], torch.tensor(lengths))


def reference_trigger_mask(labels, length, left, right, blank):
    """Straightforward loop: CASS-NAT's cumsum-of-shifted-first-frames rule, then widening."""
    starts = [t for t in range(length) if labels[t] != blank and (t == 0 or labels[t] != labels[t - 1])]
    count = len(starts)
    rows = []
    for u in range(count + 1):
        row = [0] * len(labels)
        for t in range(length):
            index = sum(1 for s in starts if s < t)  # tokens started strictly before t
            if index == u or (u == count and t == length - 1):
                row[t] = 1
        rows.append(row)
    widened = []
    for row in rows:
        new = [0] * len(row)
        for t in range(length):
            if any(row[s] for s in range(max(0, t - right), min(length, t + left + 1))):
                new[t] = 1
        widened.append(new)
    return widened, count


@settings(max_examples=40, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 16), min_size=1, max_size=4), seed=st.integers(0, 999),
       left=st.integers(0, 2), right=st.integers(0, 2))
def test_trigger_mask_rows_cover_the_right_frames(lengths, seed, left, right):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (len(lengths), max(lengths)), generator=gen)
    for b, n in enumerate(lengths):
        labels[b, n:] = 0
    mask, counts = trigger_mask(labels, torch.tensor(lengths), left, right)
    assert mask.shape == (len(lengths), int(counts.max()) + 1, max(lengths))
    for b, n in enumerate(lengths):
        ref, count = reference_trigger_mask(labels[b].tolist(), n, left, right, 0)
        assert int(counts[b]) == count
        assert mask[b, :count + 1].int().tolist() == ref
        assert not mask[b, count + 1:].any()
        assert mask[b, count, n - 1]  # the end-of-sentence slot gets the final frame


def test_trigger_mask_example_and_errors():
    labels = torch.tensor([[0, 5, 5, 0, 7, 0, 0]])
    mask, counts = trigger_mask(labels, torch.tensor([7]))
    assert counts.tolist() == [2]
    assert mask[0].int().tolist() == [[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1]]
    wide, _ = trigger_mask(labels, torch.tensor([7]), left=1, right=1)
    assert wide[0, 1].int().tolist() == [0, 1, 1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="left"):
        trigger_mask(labels, torch.tensor([7]), left=-1)
    with pytest.raises(ValueError, match="lengths"):
        trigger_mask(labels, torch.tensor([8]))
    with pytest.raises(TypeError, match="labels"):
        trigger_mask(labels.float(), torch.tensor([7]))


def test_error_based_sampling_properties():
    lengths = [40, 25, 10]
    lp = padded_log_probs(lengths, 5, 8)
    labels, counts = error_based_sampling(lp, torch.tensor(lengths), num=8,
                                          generator=per_item_generators(3, 1))
    assert labels.shape == (3 * 8, 40) and counts.shape == (24,)
    greedy = ctc_greedy_search(lp, torch.tensor(lengths))
    grid = labels.view(3, 8, 40)
    assert torch.equal(grid[:, 0], greedy.frame_labels)  # copy 0 is the greedy path
    top2 = lp.nan_to_num(0.0).topk(2, -1).indices
    confident = lp.nan_to_num(-1.0).max(-1).values.exp() >= 0.9
    for b, n in enumerate(lengths):
        assert torch.all(grid[b, :, n:] == 0)
        same = grid[b][:, confident[b]] == greedy.frame_labels[b][confident[b]]
        assert same.all()  # high-confidence frames never change
        in_top2 = (grid[b, :, :n, None] == top2[b, None, :n]).any(-1)
        assert in_top2.all()
        for n_copy in range(8):
            row = grid[b, n_copy, :n].tolist()
            toks = [x for i, x in enumerate(row) if x != 0 and (i == 0 or x != row[i - 1])]
            assert len(toks) == int(counts[b * 8 + n_copy])
    assert (grid[:, 1:] != grid[:, :1]).any()  # something was resampled
    # Per-item generators: a padded batch samples each item as it would alone.
    for b, n in enumerate(lengths):
        one, _ = error_based_sampling(lp[b:b + 1, :n], torch.tensor([n]), num=8,
                                      generator=per_item_generators(3, 1)[b:b + 1])
        assert torch.equal(one, grid[b, :, :n])
    with pytest.raises(ValueError, match="num"):
        error_based_sampling(lp, torch.tensor(lengths), num=0)
    with pytest.raises(ValueError, match="threshold"):
        error_based_sampling(lp, torch.tensor(lengths), threshold=1.5)
    with pytest.raises(ValueError, match="generator"):
        error_based_sampling(lp, torch.tensor(lengths), generator=per_item_generators(2, 0))
