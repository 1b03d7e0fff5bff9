"""nar.masking: schedules, span-rate table (exact, no overflow), span masking's realised rate,
glancing counts, uniform masking, per-item generators, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from nar.masking import (
    SCHEDULES,
    glancing_mask,
    schedule,
    span_mask,
    span_rate_table,
    span_starts_for_rate,
    uniform_mask,
    uniform_noise,
)

from .helpers import per_item_generators


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_go_from_one_to_zero(name):
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    values = schedule(name, grid)
    assert float(values[0]) == pytest.approx(1.0) and float(values[-1]) == pytest.approx(0.0, abs=1e-12)
    assert torch.all(values[1:] <= values[:-1])
    assert schedule(name, 0.25) == pytest.approx(float(schedule(name, torch.tensor(0.25))))


def test_schedule_shapes_and_errors():
    assert schedule("cosine", 0.3) == pytest.approx(math.sin(math.pi / 2 * 0.7))  # MaskGCT's sin(pi t/2)
    assert schedule("linear", 0.3) == pytest.approx(0.7)
    assert schedule("sine", 0.5) == pytest.approx(1 - math.sqrt(0.5))
    with pytest.raises(ValueError, match="cosine"):
        schedule("exp", 0.5)
    with pytest.raises(ValueError, match="progress"):
        schedule("linear", 1.5)
    with pytest.raises(TypeError, match="progress"):
        schedule("linear", "0.5")


def test_span_rate_table_is_exact_and_does_not_overflow():
    for frames, span in [(10, 3), (7, 1), (5, 4)]:
        table = span_rate_table(torch.tensor([frames]), span)[0]
        cands = frames + span - 1
        for u in range(cands + 1):
            exact = 1 - math.comb(cands - span, u) / math.comb(cands, u) if u <= cands - span else 1.0
            assert float(table[u]) == pytest.approx(exact, abs=1e-12)
    big = span_rate_table(torch.tensor([100_000, 30]), 10)
    assert torch.isfinite(big).all() and torch.all(big[:, 1:] >= big[:, :-1])
    assert float(big[1, 0]) == 0.0 and float(big[1, 40]) == 1.0


def test_span_starts_for_rate_is_the_nearest_table_entry():
    lengths = torch.tensor([50, 10, 1])
    for rate in (0.0, 0.1, 0.5, 0.9, 1.0):
        starts = span_starts_for_rate(lengths, rate, 3)
        for b, n in enumerate(lengths.tolist()):
            table = span_rate_table(torch.tensor([n]), 3)[0]
            gaps = [abs(float(table[u]) - rate) for u in range(n + 3)]
            assert int(starts[b]) == gaps.index(min(gaps))
    assert span_starts_for_rate(lengths, 0.0, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.7, 0.95])
def test_span_mask_realised_mean_rate_matches(rate):
    gen = torch.Generator().manual_seed(int(rate * 100))
    lengths = torch.randint(20, 80, (3000,), generator=gen)
    mask = span_mask(lengths, rate, 3, generator=gen)
    realised = (mask.sum(1).double() / lengths).mean()
    assert float(realised) == pytest.approx(rate, abs=0.006)


def test_span_mask_structure_edges_and_per_item_generators():
    lengths = torch.tensor([30, 12, 25])
    mask = span_mask(lengths, 0.4, 4, generator=per_item_generators(3, 5))
    for b, n in enumerate(lengths.tolist()):
        row = mask[b].tolist()
        assert not any(row[n:])
        runs, start = [], None
        for t, m in enumerate(row[:n] + [False]):
            if m and start is None:
                start = t
            if not m and start is not None:
                runs.append((start, t))
                start = None
        for s, e in runs:  # runs are unions of spans of 4, clipped only at the edges
            assert e - s >= 4 or s == 0 or e == n
        one = span_mask(lengths[b:b + 1], 0.4, 4, generator=per_item_generators(3, 5)[b:b + 1])
        assert torch.equal(one[0], mask[b, :n])
    assert not span_mask(lengths, 0.0, 3).any()
    full = span_mask(lengths, 1.0, 3)
    assert torch.equal(full, torch.arange(30) < lengths[:, None])
    per_item = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert span_mask(lengths, per_item, 2).sum(1).tolist() == [0, 12, 0]
    assert span_mask(lengths, 0.5, 3, max_len=40).shape == (3, 40)


def test_glancing_mask_counts():
    targets = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 0, 0, 0, 0], [5, 5, 5, 5, 5, 5, 0, 0]])
    preds = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0], [1, 9, 9, 9, 0, 0, 0, 0], [5, 5, 5, 5, 5, 5, 1, 1]])
    lengths = torch.tensor([8, 4, 6])
    # wrong = [5, 3, 0]; ratio 0.5 -> round(2.5) = 2 (half to even), round(1.5) = 2, 0
    for seed in range(20):
        mask = glancing_mask(preds, targets, lengths, 0.5, generator=torch.Generator().manual_seed(seed))
        assert mask.sum(1).tolist() == [2, 2, 0]
        assert not mask[1, 4:].any() and not mask[2, 6:].any()
    assert glancing_mask(preds, targets, lengths, 1.0).sum(1).tolist() == [5, 3, 0]
    assert not glancing_mask(preds, targets, lengths, 0.0).any()
    hits = torch.zeros(8)  # positions are uniform over the item, correct or not
    for seed in range(400):
        hits += glancing_mask(preds, targets, lengths, 0.5, generator=torch.Generator().manual_seed(seed))[0]
    assert hits.min() > 50 and hits.sum() == 800
    gens = per_item_generators(3, 2)
    batch = glancing_mask(preds, targets, lengths, 0.75, generator=gens)
    for b, n in enumerate(lengths.tolist()):
        one = glancing_mask(preds[b:b + 1, :n], targets[b:b + 1, :n], lengths[b:b + 1], 0.75,
                            generator=per_item_generators(3, 2)[b:b + 1])
        assert torch.equal(one[0], batch[b, :n])


def test_uniform_mask_counts():
    lengths = torch.tensor([10, 7, 1])
    assert uniform_mask(lengths, 0.5).sum(1).tolist() == [5, 4, 0]  # round half to even: 3.5 -> 4
    for seed in range(30):
        counts = uniform_mask(lengths, generator=torch.Generator().manual_seed(seed)).sum(1)
        assert torch.all((counts >= 1) & (counts <= lengths))
    mask = uniform_mask(lengths, 1.0, max_len=12)
    assert mask.shape == (3, 12) and mask.sum(1).tolist() == [10, 7, 1]


def test_uniform_noise_per_item():
    gens = per_item_generators(2, 9)
    noise = uniform_noise((2, 5, 3), torch.tensor([5, 2]), gens)
    assert torch.equal(noise[1, :2], torch.rand((2, 3), generator=per_item_generators(2, 9)[1]))
    assert torch.all(noise[1, 2:] == 0.5)


def test_bad_input():
    lengths = torch.tensor([5, 4])
    with pytest.raises(ValueError, match="rate"):
        span_mask(lengths, 1.5, 3)
    with pytest.raises(ValueError, match="span_len"):
        span_mask(lengths, 0.5, 0)
    with pytest.raises(TypeError, match="lengths"):
        span_mask(lengths.float(), 0.5, 3)
    with pytest.raises(ValueError, match="lengths"):
        span_mask(lengths[None], 0.5, 3)
    with pytest.raises(ValueError, match="empty"):
        span_mask(lengths[:0], 0.5, 3)
    with pytest.raises(ValueError, match="max_len"):
        span_mask(lengths, 0.5, 3, max_len=3)
    with pytest.raises(ValueError, match="generator"):
        span_mask(lengths, 0.5, 3, generator=per_item_generators(3, 0))
    with pytest.raises(TypeError, match="generator"):
        uniform_mask(lengths, 0.5, generator=[1, 2])
    with pytest.raises(ValueError, match="ratio"):
        glancing_mask(lengths[None], lengths[None], torch.tensor([2]), 2.0)
    with pytest.raises(ValueError, match="predictions"):
        glancing_mask(lengths[None], torch.zeros(1, 3, dtype=torch.long), torch.tensor([2]), 0.5)
    with pytest.raises(ValueError, match="target_lengths"):
        glancing_mask(lengths[None], lengths[None], torch.tensor([3]), 0.5)
