"""nar on an accelerator: CUDA results equal CPU results (skipped without CUDA), and which tie
rule the installed torchaudio follows."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchaudio

from nar.align import TIE_RULES, error_based_sampling, forced_align, trigger_mask
from nar.cif import cif
from nar.ctc import ctc_greedy_search, ctc_prefix_beam_search
from nar.mask_predict import MaskPredictConfig, mask_predict
from nar.masking import glancing_mask, span_mask

from .helpers import padded_log_probs, per_item_generators, random_targets

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEV = "cuda"


def test_installed_torchaudio_follows_one_tie_rule():
    """Report which rule the installed torchaudio's CPU kernel follows on crafted ties."""
    matches = {rule: 0 for rule in TIE_RULES}
    cases = 0
    for seed in range(120):
        lengths = [int(torch.randint(2, 12, (1,), generator=torch.Generator().manual_seed(seed)))]
        lp = padded_log_probs(lengths, 4, seed, "ties" if seed % 2 else "uniform")
        targets, target_lengths = random_targets(lengths, 4, seed)
        m = int(target_lengths[0])
        if m == 0:
            continue
        cases += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = torchaudio.functional.forced_align(lp[:1].contiguous(), targets[:1, :m].int())[0][0].long()
        for rule in TIE_RULES:
            labels, _ = forced_align(lp, torch.tensor(lengths), targets[:, :m], target_lengths, tie_rule=rule)
            matches[rule] += int(torch.equal(labels[0], ref))
    print(f"torchaudio {torchaudio.__version__}: {cases} crafted-tie cases, matches per rule {matches}")
    assert max(matches.values()) == cases


@cuda
def test_alignment_on_cuda_equals_cpu():
    lengths = [300, 180, 240, 90]
    lp = padded_log_probs(lengths, 30, 4, pad_value=0.0)
    targets, target_lengths = random_targets(lengths, 30, 4)
    for rule in TIE_RULES:
        cpu = forced_align(lp, torch.tensor(lengths), targets, target_lengths, tie_rule=rule)
        gpu = forced_align(lp.to(DEV), torch.tensor(lengths, device=DEV), targets.to(DEV),
                           target_lengths.to(DEV), tie_rule=rule)
        assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
    labels = cpu[0]
    mask, counts = trigger_mask(labels, torch.tensor(lengths), 1, 1)
    mask_g, counts_g = trigger_mask(labels.to(DEV), torch.tensor(lengths, device=DEV), 1, 1)
    assert torch.equal(mask, mask_g.cpu()) and torch.equal(counts, counts_g.cpu())
    esa = error_based_sampling(lp, torch.tensor(lengths), 4, generator=per_item_generators(4, 0))
    esa_g = error_based_sampling(lp.to(DEV), torch.tensor(lengths, device=DEV), 4,
                                 generator=per_item_generators(4, 0))
    assert torch.equal(esa[0], esa_g[0].cpu())


@cuda
def test_ctc_search_on_cuda_equals_cpu():
    lengths = [200, 120, 160]
    lp = padded_log_probs(lengths, 40, 6, pad_value=0.0)
    lens = torch.tensor(lengths)
    assert ctc_greedy_search(lp, lens).tokens == ctc_greedy_search(lp.to(DEV), lens.to(DEV)).tokens
    cpu = ctc_prefix_beam_search(lp, lens, beam_size=8, nbest=2)
    gpu = ctc_prefix_beam_search(lp.to(DEV), lens.to(DEV), beam_size=8, nbest=2)
    assert [h[0].tokens for h in cpu] == [h[0].tokens for h in gpu]
    assert [h[0].score for h in cpu] == pytest.approx([h[0].score for h in gpu], abs=1e-3)


@cuda
def test_cif_masking_mask_predict_on_cuda():
    gen = torch.Generator().manual_seed(0)
    hidden, alphas = torch.randn(3, 400, 16, generator=gen), torch.rand(3, 400, generator=gen) * 0.6
    lens = torch.tensor([400, 333, 250])
    for kwargs in ({}, {"tail_threshold": 0.45}, {"target_lengths": torch.tensor([90, 70, 60])}):
        cpu = cif(hidden, alphas, lens, **kwargs)
        kw = {k: (v.to(DEV) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        gpu = cif(hidden.to(DEV), alphas.to(DEV), lens.to(DEV), **kw)
        assert torch.equal(cpu.token_lengths, gpu.token_lengths.cpu())
        assert torch.equal(cpu.token_ends, gpu.token_ends.cpu())
        assert torch.allclose(cpu.embeddings, gpu.embeddings.cpu(), atol=1e-4)
    assert span_mask(lens.to(DEV), 0.4, 3).device.type == "cuda"
    tg = torch.randint(1, 5, (3, 20))
    glance = glancing_mask(tg.to(DEV), tg.to(DEV), torch.tensor([20, 10, 5], device=DEV), 0.5)
    assert glance.device.type == "cuda"
    table = torch.randn(10, 9, generator=gen)

    def forward(tokens, mask, step):
        return table.to(tokens.device)[tokens.clamp(max=9)]

    config = MaskPredictConfig(mask_id=9, steps=5, confidence_noise=1.0, top_k=4)
    init = torch.zeros(2, 30, dtype=torch.long)
    cpu = mask_predict(forward, init, config, generator=per_item_generators(2, 1))
    gpu = mask_predict(forward, init.to(DEV), config, generator=per_item_generators(2, 1))
    assert torch.equal(cpu, gpu.cpu())
