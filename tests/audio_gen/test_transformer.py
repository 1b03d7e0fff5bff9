"""The shared bidirectional transformer's position encodings (sinusoids, rotary) and its
convolution sub-layer: rotary against complex multiplication, relative encodings invariant to a
shift of every position, incremental decoding equal to a causal forward, padding never leaking
through the convolution (a batch computes as its items)."""

from __future__ import annotations

import pytest
import torch

from audio_gen.transformer import BidirectionalTransformer, rotary_tables, rotate

D, H = 16, 2


def stack(**kw):
    torch.manual_seed(0)
    return BidirectionalTransformer(D, num_layers=2, num_heads=H, dropout=0.0, **kw).eval()


def test_rotary_equals_complex_rotation_and_depends_on_offsets_only():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 8)  # (B, H, T, Dh)
    pos = torch.tensor([[0, 1, 2, 7, 30], [4, 4, 9, 2, 0]])
    got = rotate(x, rotary_tables(pos, 8))
    # brute force: pair (x_i, x_{i+4}) as the complex number x_i + j x_{i+4}, times exp(j p w_i)
    w = torch.tensor([10000.0 ** (-i / 4) for i in range(4)], dtype=torch.float64)
    z = torch.complex(x[..., :4].double(), x[..., 4:].double()) * torch.polar(
        torch.ones(2, 1, 5, 4, dtype=torch.float64), pos.double()[:, None, :, None] * w)
    assert torch.allclose(got.double(), torch.cat([z.real, z.imag], -1), atol=1e-5)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(pq, pk):
        return float((rotate(q, rotary_tables(torch.tensor([[pq]]), 8)) *
                      rotate(k, rotary_tables(torch.tensor([[pk]]), 8))).sum())
    assert score(3, 7) == pytest.approx(score(103, 107), abs=1e-4)
    assert score(3, 7) != pytest.approx(score(3, 8), abs=1e-3)


@pytest.mark.parametrize("position,invariant", [("rope", True), ("sin", False), ("sin+rope", False)])
def test_relative_encodings_are_invariant_to_shifting_every_position(position, invariant):
    model = stack(position=position)
    x = torch.randn(2, 9, D)
    valid = torch.ones(2, 9, dtype=torch.bool)
    pos = torch.arange(9).expand(2, 9)
    a, b = model(x, valid, positions=pos), model(x, valid, positions=pos + 37)
    assert torch.allclose(a, b, atol=1e-4) == invariant


@pytest.mark.parametrize("position", ["sin", "rope", "sin+rope"])
def test_incremental_decoding_equals_the_causal_forward(position):
    model = stack(position=position)
    x = torch.randn(2, 7, D)
    valid = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    full = model(x, valid, attn_mask=causal)
    cache = [dict() for _ in model.blocks]
    steps = [model(x[:, t:t + 1], valid[:, :t + 1], positions=torch.full((2, 1), t), cache=cache,
                   attn_mask=causal[t:t + 1, :t + 1]) for t in range(7)]
    inc = torch.cat(steps, 1)
    assert torch.allclose(full[0], inc[0], atol=1e-5)
    assert torch.allclose(full[1, :5], inc[1, :5], atol=1e-5)


@pytest.mark.parametrize("position", ["sin", "rope"])
def test_convolution_layer_a_batch_computes_as_its_items(position):
    model = stack(position=position, conv_kernel=5)
    lengths = [9, 4, 6]
    x = torch.randn(3, 9, D) * 3  # padding holds garbage, which must never reach valid frames
    valid = torch.arange(9) < torch.tensor(lengths)[:, None]
    both = model(x, valid)
    for i, n in enumerate(lengths):
        alone = model(x[i:i + 1, :n], torch.ones(1, n, dtype=torch.bool))
        assert torch.allclose(both[i, :n], alone[0], atol=1e-5), i
        assert (both[i, n:] == 0).all()
    # the convolution is local: without attention reach (a band of 0) a change 4 frames away
    # reaches frame 0 only through the kernel of 5 stacked twice (2 + 2 frames)
    band0 = torch.eye(9, dtype=torch.bool)
    y = x[:1].clone()
    y[0, 5] += torch.randn(D)  # (a constant shift would vanish in the LayerNorm)
    same = model(x[:1], valid[:1], attn_mask=band0), model(y, valid[:1], attn_mask=band0)
    assert torch.allclose(same[0][0, 0], same[1][0, 0], atol=1e-6)
    y = x[:1].clone()
    y[0, 4] += torch.randn(D)
    assert not torch.allclose(model(y, valid[:1], attn_mask=band0)[0, 0], same[0][0, 0], atol=1e-6)


def test_bad_options():
    with pytest.raises(ValueError, match="position must be one of"):
        BidirectionalTransformer(D, 1, H, position="learned")
    with pytest.raises(ValueError, match="conv_kernel"):
        BidirectionalTransformer(D, 1, H, conv_kernel=4)
    model = stack(conv_kernel=3)
    with pytest.raises(ValueError, match="whole sequences"):
        model(torch.randn(1, 1, D), torch.ones(1, 1, dtype=torch.bool), cache=[dict() for _ in model.blocks])
