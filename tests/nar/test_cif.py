"""nar.cif: vectorised CIF vs a per-frame reference loop, exact firing with scaled alphas, tail
handling per item in a padded batch, float64 integration, losses, timestamps, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.cif import cif, fire_timestamps, quantity_loss, token_count

EPS = 1e-12


def reference_cif(hidden, alphas, threshold=1.0, tail=0.0):
    """Straightforward per-frame loop for ONE unpadded item (float64): integrate each frame's
    weight; whenever the integral reaches the threshold, fire (several times if the weight
    allows), the crossing frame's weight split between the tokens."""
    frames, dim = hidden.shape
    weights = [float(a) for a in alphas] + [tail]
    feats = torch.cat([hidden.double(), torch.zeros(1, dim, dtype=torch.float64)])
    integral, acc = 0.0, torch.zeros(dim, dtype=torch.float64)
    tokens, ends = [], []
    for t, w in enumerate(weights):
        while integral + w >= threshold - EPS:
            need = threshold - integral
            tokens.append(acc + need * feats[t])
            ends.append(min(t, frames - 1))
            acc, integral, w = torch.zeros(dim, dtype=torch.float64), 0.0, max(w - need, 0.0)
        integral += w
        acc = acc + w * feats[t]
    stacked = torch.stack(tokens) if tokens else torch.zeros(0, dim, dtype=torch.float64)
    return stacked, ends


def padded_batch(lengths, dim, seed, scale=0.7, garbage=True):
    gen = torch.Generator().manual_seed(seed)
    frames = max(lengths)
    hidden = torch.randn(len(lengths), frames, dim, generator=gen, dtype=torch.float64)
    alphas = torch.rand(len(lengths), frames, generator=gen, dtype=torch.float64) * scale
    if garbage:  # padding must never be read
        for b, n in enumerate(lengths):
            hidden[b, n:] = 1e6
            alphas[b, n:] = 5.0
    return hidden, alphas


def assert_matches_reference(out, hidden, alphas, lengths, threshold, tail=0.0):
    for b, n in enumerate(lengths):
        ref, ends = reference_cif(hidden[b, :n], alphas[b, :n], threshold, tail)
        count = int(out.token_lengths[b])
        assert count == len(ref), f"item {b}"
        assert torch.allclose(out.embeddings[b, :count].double(), ref, atol=1e-9)
        assert out.token_ends[b, :count].tolist() == ends
        assert torch.all(out.embeddings[b, count:] == 0)
        assert torch.all(out.token_ends[b, count:] == -1)
        assert out.fire_frames[b].nonzero()[:, 0].tolist() == sorted(set(ends))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=4), seed=st.integers(0, 10 ** 6),
       threshold=st.sampled_from([1.0, 0.9, 0.5]), scale=st.sampled_from([0.3, 1.0, 2.5]))
def test_cif_matches_reference_loop(lengths, seed, threshold, scale):
    hidden, alphas = padded_batch(lengths, 3, seed, scale)
    out = cif(hidden, alphas, torch.tensor(lengths), threshold=threshold)
    assert_matches_reference(out, hidden, alphas, lengths, threshold)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=4), seed=st.integers(0, 10 ** 6),
       data=st.data())
def test_scaled_alphas_fire_exactly_target_count(lengths, seed, data):
    targets = [data.draw(st.integers(0, 2 * n)) for n in lengths]
    hidden, alphas = padded_batch(lengths, 4, seed)
    alphas = alphas + 0.01  # every item has weight to scale
    for dtype in (torch.float64, torch.float32):
        out = cif(hidden.to(dtype), alphas.to(dtype), torch.tensor(lengths),
                  target_lengths=torch.tensor(targets))
        assert out.token_lengths.tolist() == targets
        assert out.embeddings.shape[1] == max(targets)
    out = cif(hidden, alphas, torch.tensor(lengths), target_lengths=torch.tensor(targets))
    for b, n in enumerate(lengths):  # integrated weights sum to the target; padding is zero
        assert float(out.alphas[b, :n].sum()) == pytest.approx(targets[b])
        assert torch.all(out.alphas[b, n:] == 0)
    assert_matches_reference(out, hidden, out.alphas, lengths, 1.0)


def test_tail_threshold_per_item_in_a_padded_batch():
    # Item 0 ends with 0.6 integrated (fires with tail 0.45); item 1 ends with 0.3 (does not);
    # item 2 is the longest (its tail frame lies outside the tensor). Padding holds garbage.
    rows = [[0.5, 0.5, 0.3, 0.3], [0.5, 0.5, 0.3], [0.4, 0.4, 0.4, 0.4, 0.4, 0.4]]
    lengths = [len(r) for r in rows]
    alphas = torch.full((3, 6), 9.0, dtype=torch.float64)
    hidden = torch.full((3, 6, 2), 1e6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for b, row in enumerate(rows):
        alphas[b, :len(row)] = torch.tensor(row, dtype=torch.float64)
        hidden[b, :len(row)] = torch.randn(len(row), 2, generator=gen, dtype=torch.float64)
    out = cif(hidden, alphas, torch.tensor(lengths), tail_threshold=0.45)
    assert out.token_lengths.tolist() == [2, 1, 2]
    assert token_count(alphas, torch.tensor(lengths), tail_threshold=0.45).tolist() == [2, 1, 2]
    assert token_count(alphas, torch.tensor(lengths)).tolist() == [1, 1, 2]  # floor(sum)
    # The tail-fired token of item 0 integrates frames 2-3 only (0.3 + 0.3), attributed to frame 3
    assert torch.allclose(out.embeddings[0, 1], 0.3 * hidden[0, 2] + 0.3 * hidden[0, 3])
    assert out.token_ends[0].tolist() == [1, 3]
    assert out.fire_frames[0].tolist()[:4] == [False, True, False, True]
    assert torch.all(out.embeddings[1, 1:] == 0)
    assert_matches_reference(out, hidden, alphas, lengths, 1.0, tail=0.45)
    for b, n in enumerate(lengths):  # each item alone gives the same
        one = cif(hidden[b:b + 1, :n], alphas[b:b + 1, :n], torch.tensor([n]), tail_threshold=0.45)
        count = int(one.token_lengths[0])
        assert count == int(out.token_lengths[b])
        assert torch.equal(one.embeddings[0, :count], out.embeddings[b, :count])
        assert torch.equal(one.fire_frames[0], out.fire_frames[b, :n])


def test_float64_integration_matters_on_long_inputs():
    frames = 100_000
    alphas = torch.full((1, frames), 0.7)  # float32(0.7) = 0.69999998807907..., just below 0.7
    weight = float(alphas[0, 0])
    # Exact firing frames: token k fires at the first frame n - 1 with n * weight >= k
    # (the products are exact in float64: 24-bit mantissa times a 17-bit count).
    exact_count = int(frames * weight)
    assert exact_count == 69_999
    k = torch.arange(1, exact_count + 1, dtype=torch.float64)
    n = torch.ceil(k / weight)
    n = n + (n * weight < k).double() - ((n - 1) * weight >= k).double()
    out = cif(None, alphas, torch.tensor([frames]))
    assert int(out.token_lengths[0]) == exact_count
    assert torch.equal(out.token_ends[0], (n - 1).long())
    # The same integration stored in float32 misfires: frames early, and one token too many.
    c32 = alphas.cumsum(1)[0]
    assert int(torch.floor(c32[-1])) == exact_count + 1
    f32_ends = torch.searchsorted(c32, k.float())
    assert int((f32_ends != (n - 1).long()).sum()) > 1000


def test_gradients_flow_to_hidden_and_alphas():
    hidden = torch.randn(2, 12, 3, requires_grad=True)
    raw = torch.rand(2, 12, requires_grad=True)
    out = cif(hidden, raw * 0.6, torch.tensor([12, 9]), target_lengths=torch.tensor([4, 3]))
    (out.embeddings ** 2).sum().backward()
    assert hidden.grad.abs().sum() > 0 and raw.grad.abs().sum() > 0
    assert torch.all(hidden.grad[1, 9:] == 0)


def test_quantity_loss_and_timestamps():
    alphas = torch.tensor([[0.5, 0.5, 0.5, 9.0], [0.2, 0.2, 0.2, 0.2]])
    lengths, targets = torch.tensor([3, 4]), torch.tensor([2, 1])
    assert quantity_loss(alphas, lengths, targets, "none").tolist() == pytest.approx([0.5, 0.2])
    assert float(quantity_loss(alphas, lengths, targets)) == pytest.approx(0.35)
    assert float(quantity_loss(alphas, lengths, targets, "sum")) == pytest.approx(0.7)
    out = cif(None, torch.tensor([[0.0, 0.6, 0.6, 0.9, 0.0]]), torch.tensor([5]))
    assert out.token_starts.tolist() == [[1, 2]] and out.token_ends.tolist() == [[2, 3]]
    stamps = fire_timestamps(out.token_starts, out.token_ends, out.token_lengths, 0.06)
    assert [pytest.approx(pair) for pair in stamps[0]] == [(0.06, 0.18), (0.12, 0.24)]


def test_bad_input():
    hidden, alphas, lengths = torch.zeros(2, 5, 3), torch.full((2, 5), 0.5), torch.tensor([5, 4])
    cases = [
        ((hidden, alphas[0], lengths), {}, ValueError, "alphas"),
        ((hidden, alphas.long(), lengths), {}, TypeError, "alphas"),
        ((hidden[:, :4], alphas, lengths), {}, ValueError, "hidden"),
        ((hidden, alphas, torch.tensor([6, 4])), {}, ValueError, "lengths"),
        ((hidden, -alphas, lengths), {}, ValueError, "alphas"),
        ((hidden[:0], alphas[:0], lengths[:0]), {}, ValueError, "empty"),
        ((hidden, alphas, lengths), {"threshold": 0.0}, ValueError, "threshold"),
        ((hidden, alphas, lengths), {"tail_threshold": -1.0}, ValueError, "tail_threshold"),
        ((hidden, alphas, lengths), {"target_lengths": torch.tensor([1, 1]), "tail_threshold": 0.45},
         ValueError, "tail_threshold"),
        ((hidden, torch.zeros(2, 5), lengths), {"target_lengths": torch.tensor([1, 0])},
         ValueError, "sums to 0"),
    ]
    for args, kwargs, exc, word in cases:
        with pytest.raises(exc, match=word):
            cif(*args, **kwargs)
    with pytest.raises(ValueError, match="reduction"):
        quantity_loss(alphas, lengths, torch.tensor([1, 2]), reduction="avg")
