"""Shared builders for the nar tests (random padded batches)."""

from __future__ import annotations

import warnings

import torch
import torchaudio


def padded_log_probs(lengths, vocab, seed, mode="normal", dtype=torch.float32, pad_value=float("nan")):
    """(B, T, V) log-softmax batch; frames beyond each length hold ``pad_value`` (must be ignored).

    mode: "normal" (continuous, no ties), "ties" (integer logits in {0, 1}: many exact ties),
    "uniform" (every label equally likely: every path ties).
    """
    gen = torch.Generator().manual_seed(seed)
    batch, frames = len(lengths), max(max(lengths), 1)
    if mode == "normal":
        logits = torch.randn(batch, frames, vocab, generator=gen, dtype=torch.float64) * 2
    elif mode == "ties":
        logits = torch.randint(0, 2, (batch, frames, vocab), generator=gen).double()
    else:
        logits = torch.zeros(batch, frames, vocab, dtype=torch.float64)
    lp = logits.log_softmax(-1).to(dtype)
    for b, n in enumerate(lengths):
        lp[b, n:] = pad_value
    return lp


def random_targets(lengths, vocab, seed, blank=0, repeat_prob=0.3):
    """Targets (B, L) that fit their frames (L_b + repeats_b <= T_b), padded with -1."""
    gen = torch.Generator().manual_seed(seed + 1)
    labels = [v for v in range(vocab) if v != blank]
    rows = []
    for n in lengths:
        budget = int(torch.randint(0, n + 1, (1,), generator=gen))
        row = []
        while True:
            if row and float(torch.rand(1, generator=gen)) < repeat_prob:
                nxt = row[-1]
            else:
                nxt = labels[int(torch.randint(0, len(labels), (1,), generator=gen))]
            need = len(row) + 1 + sum(a == b for a, b in zip(row, row[1:])) + (bool(row) and nxt == row[-1])
            if need > budget:
                break
            row.append(nxt)
        rows.append(row)
    width = max(1, max(len(r) for r in rows))
    targets = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        targets[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return targets, torch.tensor([len(r) for r in rows])


def per_item_generators(batch, seed):
    return [torch.Generator().manual_seed(seed * 1000 + b) for b in range(batch)]


def torchaudio_align(log_probs, targets, blank):
    """torchaudio's public forced_align on one unpadded item (B = 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path, scores = torchaudio.functional.forced_align(
            log_probs[None].contiguous(), targets[None].int(), blank=blank)
    return path[0].long(), scores[0]


def assert_labels_equal_torchaudio(labels, scores, lp, lengths, targets, target_lengths, blank):
    """Each item of a forced alignment (labels, frame scores) equals torchaudio's on the item alone;
    padding frames are blank with score 0; an empty target (which torchaudio refuses) is all blank."""
    for b, n in enumerate(int(x) for x in lengths):
        m = int(target_lengths[b])
        assert torch.all(labels[b, n:] == blank) and torch.all(scores[b, n:] == 0)
        if m == 0:
            assert torch.all(labels[b, :n] == blank)
            continue
        ref_path, ref_scores = torchaudio_align(lp[b, :n], targets[b, :m], blank)
        assert torch.equal(labels[b, :n], ref_path), f"item {b}"
        assert torch.equal(scores[b, :n], ref_scores)
