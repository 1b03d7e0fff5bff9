"""asr.longform: window planning, duration batching and token-level stitching, checked against
brute-force truths with hypothesis."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.longform import Piece, Segment, pack_batches, plan_segments, resolve_window, stitch

RATE = 100  # samples per second: small numbers, same arithmetic


@given(st.lists(st.floats(0.01, 40.0), min_size=1, max_size=40), st.floats(5.0, 200.0),
       st.one_of(st.none(), st.integers(1, 8)))
def test_pack_batches_partitions_under_budget(durations, budget, cap):
    batches = pack_batches(durations, budget, cap)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(durations)))
    # longest first overall, so each batch's first item is its longest
    assert [durations[i] for i in flat] == sorted(durations, reverse=True)
    for b in batches:
        assert max(durations[i] for i in b) == durations[b[0]]
        if len(b) > 1:
            assert len(b) * durations[b[0]] <= budget + 1e-9
        if cap is not None:
            assert len(b) <= cap
    # greedy packing is tight: the next batch's first item would not have fitted
    for b, nxt in zip(batches, batches[1:]):
        if cap is None or len(b) < cap:
            assert (len(b) + 1) * durations[b[0]] > budget


def test_pack_batches_rejects_bad_budget():
    with pytest.raises(ValueError, match="budget_seconds"):
        pack_batches([1.0], 0)
    with pytest.raises(ValueError, match="max_batch_size"):
        pack_batches([1.0], 10, 0)


@given(st.lists(st.integers(1, 20_000), min_size=1, max_size=5), st.floats(5.0, 40.0), st.floats(0.0, 0.49),
       st.integers(1, 64))
def test_plan_segments_cover_and_partition(lengths, max_seconds, overlap_frac, align):
    overlap = overlap_frac * max_seconds
    segs = plan_segments(lengths, RATE, max_seconds, overlap, align=align)
    assert sorted({s.input_index for s in segs}) == list(range(len(lengths)))
    window = round(max_seconds * RATE)
    for i, n in enumerate(lengths):
        mine = [s for s in segs if s.input_index == i]
        if n <= window:
            assert mine == [Segment(i, 0, n)]
            continue
        assert mine[0].start == 0 and mine[-1].end == n
        assert all(s.num_samples == window for s in mine[:-1])
        assert window - align < mine[-1].num_samples <= window
        assert all(s.start % align == 0 for s in mine)
        # windows overlap by at least the requested overlap, in time order
        for a, b in zip(mine, mine[1:]):
            assert a.start < b.start and a.end - b.start >= round(overlap * RATE)
        # the kept regions tile the time line, and each lies inside its window with half the
        # overlap as margin (except at the ends of the input)
        assert mine[0].keep_from == -math.inf and mine[-1].keep_to == math.inf
        for a, b in zip(mine, mine[1:]):
            assert a.keep_to == b.keep_from
        margin = (round(overlap * RATE) / 2 - 0.75 * align) / RATE - 1e-9  # cuts snap to the grid
        for s in mine:
            if s.keep_from > -math.inf:
                assert s.keep_from - s.start / RATE >= margin
            if s.keep_to < math.inf:
                assert s.end / RATE - s.keep_to >= margin


def test_plan_segments_without_limit_and_bad_options():
    assert plan_segments([5, 7], RATE, None, 1.0) == [Segment(0, 0, 5), Segment(1, 0, 7)]
    with pytest.raises(ValueError, match="overlap_seconds"):
        plan_segments([5], RATE, 10.0, 5.0)
    with pytest.raises(ValueError, match="max_seconds"):
        plan_segments([5], RATE, 0.0, 0.0)
    with pytest.raises(ValueError, match="too short"):
        plan_segments([5], RATE, 1.0, 0.4, align=70)


def test_resolve_window_auto_explicit_and_bad_values():
    # auto: the longest training utterance rounded up to 0.1 s, overlap a quarter of it
    assert resolve_window("auto", "auto", 7.06)[:2] == (7.1, 7.1 / 4)
    assert resolve_window("auto", "auto", 7.0)[:2] == (7.0, 1.75)
    assert resolve_window("auto", "auto", 2.0)[:2] == (4.0, 1.0)  # at least 4 s
    assert resolve_window("auto", "auto", 60.0)[:2] == (60.0, 4.0)  # overlap at most 4 s
    window, overlap, why = resolve_window("auto", "auto", None)  # training lengths unknown
    assert (window, overlap) == (30.0, 4.0) and "unknown" in why
    # explicit values win; an explicit window still gets an automatic overlap
    assert resolve_window(12.0, 3.0, 7.0)[:2] == (12.0, 3.0)
    assert resolve_window(8.0, "auto", 60.0)[:2] == (8.0, 2.0)
    assert resolve_window(None, "auto", 7.0)[0] is None
    with pytest.raises(ValueError, match="max_seconds"):
        resolve_window("long", 1.0, None)
    with pytest.raises(ValueError, match="overlap_seconds"):
        resolve_window(10.0, "wide", None)
    with pytest.raises(ValueError, match="overlap_seconds"):
        resolve_window(10.0, 6.0, None)


@settings(max_examples=60, deadline=None)
@given(st.floats(30.0, 200.0), st.floats(0.0, 2.4), st.integers(0, 2**32 - 1))
def test_stitch_recovers_the_stream_from_noisy_window_edges(duration, edge, seed):
    """A brute-force truth: a token stream with known times; each window 'decodes' the tokens
    inside it, but those within ``edge`` seconds of its edges come out wrong or missing (no
    context there). Stitching must give back exactly the stream when the edge is under half
    the overlap minus half a token."""
    rng = random.Random(seed)
    max_seconds, overlap = 20.0, 6.0
    n = int(duration * RATE)
    duration = n / RATE
    # tokens of 0.05-0.5 s with gaps, as an aligner would give
    stream, t = [], 0.0
    while True:
        t += rng.uniform(0.0, 0.4)
        length = rng.uniform(0.05, 0.5)
        if t + length > duration:
            break
        stream.append((rng.randint(2, 30), (round(t, 3), round(t + length, 3))))
        t += length
    segs = plan_segments([n], RATE, max_seconds, overlap)
    assert len(segs) > 1
    pieces = []
    for seg in segs:
        lo, hi = seg.start / RATE, seg.end / RATE
        ids, stamps = [], []
        for tok, (s, e) in stream:
            if s < lo or e > hi:
                continue
            near_edge = (s - lo < edge and seg.start > 0) or (hi - e < edge and seg.end < n)
            if near_edge and rng.random() < 0.5:
                continue  # dropped; otherwise replaced by a wrong token
            ids.append(1 if near_edge else tok)
            stamps.append((s - lo, e - lo))
        pieces.append(Piece(seg, tuple(ids), tuple(stamps), -1.0))
    ids, stamps, score = stitch(pieces, RATE)
    assert ids == tuple(tok for tok, _ in stream)
    assert stamps == tuple(st_ for _, st_ in stream)
    assert score == -len(segs)


def test_stitch_makes_joins_monotonic_and_checks_lengths():
    a = Segment(0, 0, 1000, -math.inf, 8.0)
    b = Segment(0, 600, 1600, 8.0, math.inf)
    # a's last kept token ends at 7.9 + 0.3; b's first kept token (centre 8.05) starts at 7.95
    pa = Piece(a, (5, 6), ((7.0, 7.5), (7.8, 8.1)), 0.0)
    pb = Piece(b, (6, 7), ((1.95, 2.15), (2.5, 2.7)), 0.0)
    ids, stamps, _ = stitch([pa, pb], RATE)
    assert ids == (5, 6, 6, 7)
    starts = [s for s, _ in stamps]
    ends = [e for _, e in stamps]
    assert starts == sorted(starts) and ends == sorted(ends)
    assert all(s <= e for s, e in stamps) and stamps[2][0] >= stamps[1][1]
    with pytest.raises(ValueError, match="one timestamp per token"):
        stitch([Piece(a, (1, 2), ((0.0, 0.1),), 0.0)], RATE)
