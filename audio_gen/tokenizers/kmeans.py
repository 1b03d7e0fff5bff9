"""k-means and residual k-means on feature frames (torch, CPU or GPU, deterministic by seed).

Used by the mel-RVQ acoustic tokenizer (K residual codebooks over log-mel frames) and by the
semantic tokenizer in ``tts`` (one codebook over ASR encoder features).

Shapes: ``x`` is (N, D) frames; a codebook is (C, D); codes are (N,) int64.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

# rows of x per distance matrix: bounds memory at CHUNK x C floats
CHUNK = 16384


def nearest(x: torch.Tensor, codebook: torch.Tensor, precise: bool = True) -> torch.Tensor:
    """Index of the nearest codeword (squared Euclidean) for every row of ``x`` (N, D) -> (N,).

    Row-independent (each row's answer depends only on that row). ``precise`` computes the
    distances in float64, so near-tied codewords do not flip with the shape of the batch (a batch
    of frames gets the same codes as the frames one by one); training uses float32 for speed.
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest: x (N, D) and codebook (C, D) expected, got {tuple(x.shape)} and "
                         f"{tuple(codebook.shape)}")
    dtype = torch.float64 if precise else torch.float32
    cb = codebook.to(dtype)
    c_sq = cb.pow(2).sum(1)
    out = []
    for start in range(0, x.shape[0], CHUNK):
        xs = x[start:start + CHUNK].to(dtype)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin
        d = c_sq[None, :] - 2.0 * xs @ cb.T
        out.append(d.argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def kmeans(
    x: torch.Tensor,
    num_clusters: int,
    iters: int = 20,
    seed: int = 0,
    init: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Lloyd's k-means on (N, D) frames -> codebook (num_clusters, D).

    Initialisation: ``init`` if given, else k-means++ on a subsample (deterministic by
    ``seed``). Empty clusters are re-seeded at the frames farthest from their codeword.
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans: x must be (N, D), got shape {tuple(x.shape)}")
    if num_clusters < 1:
        raise ValueError(f"kmeans: num_clusters must be >= 1, got {num_clusters}")
    if x.shape[0] < num_clusters:
        raise ValueError(
            f"kmeans: {x.shape[0]} frames cannot make {num_clusters} clusters; "
            "use more training audio or a smaller codebook_size"
        )
    if not torch.isfinite(x).all():
        raise ValueError("kmeans: the training frames contain NaN or Inf")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.float()
    c = init.clone().float() if init is not None else _kmeanspp(x, num_clusters, gen)
    for _ in range(iters):
        a = nearest(x, c, precise=False)
        sums, counts = _cluster_sums(x, a, num_clusters)
        new = (sums / counts.clamp(min=1)[:, None]).to(x.dtype)
        empty = counts == 0
        if empty.any():
            # re-seed empty clusters at the frames worst served by the current codebook
            err = (x - c[a]).pow(2).sum(1)
            far = err.topk(int(empty.sum())).indices
            new[empty] = x[far]
        c = new
    return c


def _cluster_sums(x: torch.Tensor, a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (k, D) (float64) and counts (k,) by sorting (index_add_ is slow on CPU)."""
    order = a.argsort()
    counts = torch.bincount(a, minlength=k)
    cs = torch.cat([torch.zeros(1, x.shape[1], dtype=torch.float64, device=x.device),
                    x[order].double().cumsum(0)])
    ends = counts.cumsum(0)
    sums = cs[ends] - cs[ends - counts]
    return sums, counts.double()


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator, max_frames: int = 20000) -> torch.Tensor:
    """Greedy k-means++ seeding (as scikit-learn: each new centre is the best of
    ``2 + log k`` candidates drawn in proportion to D^2) on at most ``max_frames`` frames drawn
    with ``gen``. For large k, centres are added in groups of k // 64 (one draw each) to stay fast.
    """
    n = x.shape[0]
    if n > max_frames:
        x = x[torch.randperm(n, generator=gen)[:max_frames].to(x.device)]
        n = max_frames
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    d2 = (x - x[first]).pow(2).sum(1)
    group = max(1, k // 64)
    trials = 2 + int(math.log(k))
    while len(chosen) < k:
        m = min(group, k - len(chosen))
        p = (d2 / d2.sum().clamp(min=1e-12)).cpu()
        if not torch.isfinite(p).all() or float(p.sum()) <= 0:
            p = torch.full((n,), 1.0 / n)
        if m == 1:
            cand = torch.multinomial(p, trials, replacement=True, generator=gen).to(x.device)
            new_d2 = torch.minimum(d2[None, :], torch.cdist(x[cand], x).pow(2))  # (trials, n)
            best = int(new_d2.sum(1).argmin())
            chosen.append(int(cand[best]))
            d2 = new_d2[best]
        else:
            idx = torch.multinomial(p, m, replacement=False, generator=gen).to(x.device)
            chosen.extend(int(i) for i in idx)
            d2 = torch.minimum(d2, torch.cdist(x, x[idx]).pow(2).min(1).values)
    return x[torch.tensor(chosen, device=x.device)].clone()


def residual_kmeans(
    x: torch.Tensor,
    num_codebooks: int,
    codebook_size: int,
    iters: int = 20,
    refine_rounds: int = 1,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> torch.Tensor:
    """Residual vector quantisation learned by k-means -> codebooks (K, C, D).

    Codebook k is k-means on the residual left by codebooks < k. Then ``refine_rounds`` rounds
    re-fit each codebook to what the other K-1 leave (a few Lloyd steps each), which lowers the
    error of the greedy stage-wise fit.
    """
    books: list[torch.Tensor] = []
    codes: list[torch.Tensor] = []
    r = x.float().clone()
    for k in range(num_codebooks):
        c = kmeans(r, codebook_size, iters=iters, seed=seed + k)
        a = nearest(r, c, precise=False)
        r = r - c[a]
        books.append(c)
        codes.append(a)
        if progress:
            progress(f"codebook {k + 1}/{num_codebooks}: residual mse {r.pow(2).mean().item():.4f}")
    for rnd in range(refine_rounds):
        for k in range(num_codebooks):
            target = r + books[k][codes[k]]
            books[k] = kmeans(target, codebook_size, iters=3, init=books[k])
            codes[k] = nearest(target, books[k], precise=False)
            r = target - books[k][codes[k]]
        if progress:
            progress(f"refine round {rnd + 1}/{refine_rounds}: residual mse {r.pow(2).mean().item():.4f}")
    return torch.stack(books)


def rvq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(N, D) frames -> (N, K) codes, greedily stage by stage."""
    r = x.float().clone()
    out = []
    for c in codebooks:
        a = nearest(r, c)
        r = r - c[a]
        out.append(a)
    return torch.stack(out, 1) if out else torch.zeros(x.shape[0], 0, dtype=torch.long)


def rvq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(N, K) codes -> (N, D): the sum of the K codewords."""
    out = torch.zeros(codes.shape[0], codebooks.shape[2], dtype=codebooks.dtype, device=codebooks.device)
    for k in range(codes.shape[1]):
        out = out + codebooks[k][codes[:, k]]
    return out
