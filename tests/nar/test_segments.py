"""nar.align.token_ends / fits_ctc and nar.cif.segment_alphas against brute-force loops."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nar.align import fits_ctc, token_ends
from nar.cif import cif, segment_alphas

paths = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=4)


def _pad(rows, value=0):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows]), torch.tensor([len(r) for r in rows])


def _ends_brute(row):
    return [t for t, lab in enumerate(row) if lab != 0 and (t + 1 == len(row) or row[t + 1] != lab)]


@settings(max_examples=60, deadline=None)
@given(paths, st.integers(0, 3))
def test_token_ends_match_a_loop_and_ignore_padding(rows, pad):
    labels, lengths = _pad(rows, pad)
    ends = token_ends(labels, lengths, blank=0)
    for b, row in enumerate(rows):
        assert ends[b].nonzero().flatten().tolist() == _ends_brute(row)


@settings(max_examples=60, deadline=None)
@given(paths, st.booleans())
def test_segment_alphas_fire_one_token_per_segment(rows, end_token):
    labels, lengths = _pad(rows, 2)
    ends = token_ends(labels, lengths)
    alphas, counts = segment_alphas(ends, lengths, end_token)
    for b, row in enumerate(rows):
        e = _ends_brute(row)
        tail = len(row) - (e[-1] + 1 if e else 0)
        assert int(counts[b]) == len(e) + (1 if end_token and tail > 0 else 0)
        starts = [0] + [x + 1 for x in e]
        for s, stop in zip(starts, e):  # each token's segment: uniform weights summing to 1
            seg = alphas[b, s:stop + 1]
            torch.testing.assert_close(seg, torch.full_like(seg, 1.0 / (stop + 1 - s)))
        rest = alphas[b, starts[-1]:len(row)]
        expected = 1.0 / tail if end_token and tail else 0.0
        torch.testing.assert_close(rest, torch.full_like(rest, expected))
        assert float(alphas[b, len(row):].abs().sum()) == 0.0
    out = cif(None, alphas, lengths, threshold=1.0, target_lengths=counts)
    assert torch.equal(out.token_lengths, counts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 3), min_size=0, max_size=6), min_size=1, max_size=4),
       st.lists(st.integers(0, 10), min_size=4, max_size=4))
def test_fits_ctc_is_the_brute_force_condition(targets, frames):
    frames = torch.tensor(frames[: len(targets)])
    rows = [t if t else [1] for t in targets]
    padded, _ = _pad(rows, -1)
    lens = torch.tensor([len(t) for t in targets])
    got = fits_ctc(frames, padded, lens).tolist()
    for b, t in enumerate(targets):
        repeats = sum(1 for i in range(1, len(t)) if t[i] == t[i - 1])
        assert got[b] == (len(t) > 0 and len(t) + repeats <= int(frames[b]))
