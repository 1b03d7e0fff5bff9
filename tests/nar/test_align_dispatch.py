"""nar.align.forced_align's backends (issue #35): on CPU ``auto`` runs torchaudio's kernel item
by item where it gives our result, else the batched Viterbi; every backend gives the same bits
as torchaudio.functional.forced_align per item, ties included, and the same errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nar.align as align
from nar.align import BACKENDS, TIE_RULES, forced_align

from .helpers import assert_labels_equal_torchaudio, padded_log_probs, torchaudio_align


def outcome(log_probs, lengths, targets, target_lengths, **kwargs):
    """(labels, frame_scores), or the ValueError's message."""
    try:
        return forced_align(log_probs, lengths, targets, target_lengths, **kwargs)
    except ValueError as err:
        return str(err)


def assert_same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
    else:
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@st.composite
def batches(draw):
    """(log_probs (B, T, V) NaN-padded, lengths, targets (B, L) -1-padded, target_lengths, blank).

    Targets first, then frames: often exactly the minimum (tokens + repeated neighbours), the
    vocabulary small (repeats are frequent), log-probs with exact ties ("ties", "uniform") and
    with labels of probability 0 ("masked", which can leave an item no alignment at all)."""
    batch, vocab = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    blank = draw(st.integers(0, vocab - 1))
    labels = [v for v in range(vocab) if v != blank]
    rows, lengths = [], []
    for _ in range(batch):
        row = draw(st.lists(st.sampled_from(labels), max_size=8))
        need = len(row) + sum(a == b for a, b in zip(row, row[1:]))
        rows.append(row)
        lengths.append(need + draw(st.sampled_from([0, 0, 1, 3, 12])))
    if max(lengths) == 0:
        lengths[0] = 1
    mode = draw(st.sampled_from(["normal", "ties", "uniform", "masked"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]))
    seed = draw(st.integers(0, 2 ** 16))
    lp = padded_log_probs(lengths, vocab, seed, "ties" if mode == "masked" else mode, dtype=dtype)
    if mode == "masked":  # some (frame, label) cells get probability 0
        gen = torch.Generator().manual_seed(seed)
        cells = torch.rand(lp.shape, generator=gen) < 0.15
        for b, n in enumerate(lengths):
            cells[b, n:] = False
        lp = lp.masked_fill(cells, -math.inf)
    width = max(1, max(len(r) for r in rows))
    targets = torch.full((batch, width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        targets[b, :len(row)] = torch.tensor(row, dtype=torch.long)
    return lp, torch.tensor(lengths), targets, torch.tensor([len(r) for r in rows]), blank


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=batches())
def test_backends_equal_each_other_and_torchaudio_per_item(data):
    lp, lengths, targets, target_lengths, blank = data
    batched = outcome(lp, lengths, targets, target_lengths, blank=blank, backend="batched")
    for backend in ("torchaudio", "auto"):
        assert_same(outcome(lp, lengths, targets, target_lengths, blank=blank, backend=backend), batched)
    if isinstance(batched, str):
        assert "probability 0" in batched  # the only error these inputs can cause
        return
    labels, scores = batched
    assert_labels_equal_torchaudio(labels, scores, lp, lengths, targets, target_lengths, blank)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=batches(), tie_rule=st.sampled_from(TIE_RULES))
def test_batched_numpy_loops_equal_the_torch_loops(data, tie_rule):
    # On CPU the batched path runs its frame loops in NumPy; the torch version (CUDA, bfloat16)
    # must give the same bits.
    lp, lengths, targets, target_lengths, blank = data
    targets, target_lengths = align._check_targets(lp, lengths, targets, target_lengths, blank)
    results = []
    for use_numpy in (True, False):
        try:
            results.append(align._batched_labels(lp, lengths, targets, target_lengths, blank, tie_rule,
                                                 use_numpy=use_numpy))
        except ValueError as err:
            results.append(str(err))
    if isinstance(results[0], str) or isinstance(results[1], str):
        assert results[0] == results[1]
    else:
        valid = torch.arange(lp.shape[1]) < lengths[:, None]
        assert torch.equal(results[0][valid], results[1][valid])


def test_torchaudio_follows_the_torchaudio_2_9_tie_rule():
    # s - 1 and s - 2 tie above s at frame 2 of [1, 2]: torchaudio stays in s ("torchaudio-2.9"),
    # the best-predecessor rule moves.
    lp = torch.tensor([[[-1.0, -1.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, -1.0]]])
    args = (lp, torch.tensor([3]), torch.tensor([[1, 2]]), torch.tensor([2]))
    ref, _ = torchaudio_align(lp[0], torch.tensor([1, 2]), 0)
    assert ref.tolist() == [1, 2, 0]
    assert forced_align(*args, backend="batched")[0][0].tolist() == [1, 2, 0]
    assert forced_align(*args, backend="batched", tie_rule="best")[0][0].tolist() == [1, 0, 2]
    assert align._torchaudio_tie_rule()[0] == "torchaudio-2.9"


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls of torchaudio's kernel (the operator torchaudio.functional.forced_align
    wraps, which forced_align calls directly); the once-per-process probe has run before."""
    assert align._torchaudio_tie_rule()[0] == "torchaudio-2.9"
    calls = []
    real = torch.ops.torchaudio.forced_align

    def counting(*args):
        calls.append(tuple(args[0].shape))
        return real(*args)

    monkeypatch.setattr(torch.ops.torchaudio, "forced_align", counting)
    return calls


def example(lengths=(20, 7, 12), vocab=5, seed=0, dtype=torch.float32):
    lp = padded_log_probs(list(lengths), vocab, seed, dtype=dtype)
    targets = torch.tensor([[1, 2, 2, 3], [4, 0, 0, 0], [3, 1, 1, 0]])[:len(lengths)]
    target_lengths = torch.tensor([4, 0, 3])[:len(lengths)]
    return lp, torch.tensor(lengths), targets, target_lengths


def test_auto_runs_torchaudio_item_by_item_on_cpu(kernel_calls):
    args = example()
    auto = forced_align(*args)
    assert kernel_calls == [(1, 20, 5), (1, 12, 5)]  # item 1 has no targets: all blank, no call
    assert_same(auto, forced_align(*args, backend="batched"))
    kernel_calls.clear()
    forced_align(*example(lengths=(9,)))  # B = 1
    assert kernel_calls == [(1, 9, 5)]


def test_auto_takes_the_batched_path_where_torchaudio_cannot_give_our_result(kernel_calls, monkeypatch):
    args = example()
    # tie_rule="best": torchaudio 2.9 follows the other rule
    assert_same(forced_align(*args, tie_rule="best"), forced_align(*args, tie_rule="best", backend="batched"))
    with pytest.raises(ValueError, match="tie_rule='best'.*follows 'torchaudio-2.9'"):
        forced_align(*args, tie_rule="best", backend="torchaudio")
    # bfloat16: torchaudio's kernel refuses it
    lp16 = args[0].bfloat16()
    assert_same(forced_align(lp16, *args[1:]), forced_align(lp16, *args[1:], backend="batched"))
    with pytest.raises(ValueError, match="bfloat16"):
        forced_align(lp16, *args[1:], backend="torchaudio")
    # hundreds of short items: the batched path is faster (cost model)
    lp = padded_log_probs([10] * 512, 6, 3)
    targets = torch.tensor([[1, 2]]).repeat(512, 1)
    assert not align._loop_is_faster(torch.full((512,), 10), torch.full((512,), 2), "torchaudio-2.9")
    forced_align(lp, torch.full((512,), 10), targets, torch.full((512,), 2))
    assert kernel_calls == []
    # not on CPU
    assert "CPU" in align._torchaudio_refusal(torch.zeros((1, 1, 2), device="meta"), "torchaudio-2.9")
    # no usable torchaudio
    monkeypatch.setattr(align, "_torchaudio_tie_rule", lambda: (None, "torchaudio cannot be imported (test)"))
    assert_same(forced_align(*args), forced_align(*args, backend="batched"))
    with pytest.raises(ValueError, match=r"backend='torchaudio'.*cannot be imported \(test\)"):
        forced_align(*args, backend="torchaudio")
    assert kernel_calls == []
    with pytest.raises(ValueError, match="backend must be one of"):
        forced_align(*args, backend="gpu")
    assert BACKENDS == ("auto", "batched", "torchaudio")


def test_items_torchaudio_gets_wrong_fall_back_to_the_batched_path(kernel_calls):
    # Every alignment has probability 0: torchaudio returns a path without an error; we raise.
    zero = torch.full((1, 3, 3), -math.inf)
    zero[..., 0] = 0.0
    one = (torch.tensor([3]), torch.tensor([[1]]), torch.tensor([1]))
    assert torchaudio_align(zero[0], torch.tensor([1]), 0)[0].tolist() == [0, 0, 1]
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"log_probs\[0\] gives every alignment of targets\[0\] probability 0"):
            forced_align(zero, *one, backend=backend)
    # ... also when the path torchaudio returns has finite scores: token 1 is impossible, the
    # returned path starts past it, in state 2 or 3.
    lp = torch.log_softmax(torch.zeros(1, 4, 3), -1)
    lp[0, :, 1] = -math.inf
    two = (torch.tensor([4]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert torch.isfinite(torchaudio_align(lp[0], torch.tensor([1, 2]), 0)[1]).all()
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="probability 0"):
            forced_align(lp, *two, backend=backend)
    # So any -inf sends the batch to the batched path, also when the alignment avoids it.
    lp = padded_log_probs([12], 5, 1)
    lp[0, :, 4] = -math.inf
    args = (lp, torch.tensor([12]), torch.tensor([[1, 3, 3]]), torch.tensor([3]))
    kernel_calls.clear()
    assert_same(forced_align(*args), forced_align(*args, backend="batched"))
    assert kernel_calls == []
    finite = lp.nan_to_num(neginf=-50.0)
    assert_same(forced_align(finite, *args[1:]), forced_align(finite, *args[1:], backend="batched"))
    assert len(kernel_calls) == 1
    # +inf is no log-probability: refused on every backend before any recursion (torchaudio's
    # kernel would return [1, 0, 1] here, not a valid alignment of [1, 1])
    lp = torch.tensor([[[-1.0, math.inf, math.inf], [0.0, -1.0, -1.0], [math.inf, -1.0, -1.0]]])
    args = (lp, torch.tensor([3]), torch.tensor([[1, 1]]), torch.tensor([2]))
    assert torchaudio_align(lp[0], torch.tensor([1, 1]), 0)[0].tolist() == [1, 0, 1]
    kernel_calls.clear()
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"\+inf inside the valid frames"):
            forced_align(*args, backend=backend)
    assert kernel_calls == []
    # float16 scores that overflow: both paths see no alignment
    lp = torch.full((1, 40, 3), -3000.0, dtype=torch.float16)
    args = (lp, torch.tensor([40]), torch.tensor([[1, 2]]), torch.tensor([2]))
    assert_same(outcome(*args), outcome(*args, backend="batched"))
    assert "probability 0" in outcome(*args)


def test_frame_scores_are_differentiable_on_both_paths():
    args = example()
    results = []
    for backend in ("torchaudio", "batched"):
        lp = args[0].nan_to_num(0.0).requires_grad_()
        labels, scores = forced_align(lp, *args[1:], backend=backend)
        scores.sum().backward()
        assert torch.equal(lp.grad.sum(-1), (torch.arange(20) < args[1][:, None]).float())
        results.append((labels, scores.detach(), lp.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_positive_infinity_is_refused_naming_the_item():
    """+inf is no log-probability; the batched recursion would return an invalid path for it."""
    import pytest as _pytest
    import torch as _torch

    from nar.align import forced_align as _fa

    lp = _torch.randn(2, 6, 4).log_softmax(-1)
    lp[1, 3, 2] = float("inf")
    with _pytest.raises(ValueError, match=r"\+inf inside the valid frames \(item 1\)"):
        _fa(lp, _torch.tensor([6, 6]), _torch.tensor([[1, 2], [1, 2]]), _torch.tensor([2, 2]))
