"""nar.mask_predict: pinned positions, no mask left, batch = items (per-item generators), CFG
scale 0 = unguided, schedule-driven mask counts, stage-wise codebooks, helpers, bad input."""

from __future__ import annotations

import pytest
import torch

from nar.mask_predict import (
    FILTERED_LOGIT,
    DecodeStep,
    MaskPredictConfig,
    filter_logits,
    guide,
    mask_predict,
    num_to_mask,
    select_lowest,
)

from .helpers import per_item_generators

V, K, T_MAX, D = 9, 3, 40, 5
MASK = V  # mask id outside the vocabulary


class ToyModel:
    """Deterministic, item-independent stand-in for a masked transformer: the logits of
    codebook k at position t depend on the left neighbour in that codebook, on the token of
    codebook k - 1 at t, and on t. Exact table lookups, so a batch computes each item's logits
    bit for bit as that item alone."""

    def __init__(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.left = torch.randn(K, V + 1, T_MAX, V, generator=gen) * 2
        self.below = torch.randn(K, V + 1, V, generator=gen)
        self.hidden_table = torch.randn(K, V + 1, T_MAX, D, generator=gen)
        self.proj = torch.randn(D, V, generator=gen)
        self.calls = []

    def _tokens(self, tokens):
        return tokens[:, None] if tokens.dim() == 2 else tokens  # (B, K', T)

    def logits(self, tokens, mask, step: DecodeStep):
        self.calls.append((step, mask.clone()))
        tok = self._tokens(tokens)
        k, size = step.stage, tok.shape[-1]
        left = torch.nn.functional.pad(tok[:, k, :-1], (1, 0), value=MASK)  # (B, T)
        below = tok[:, k - 1] if k > 0 else torch.full_like(tok[:, 0], MASK)
        return self.left[k, left, torch.arange(size)] + self.below[k, below]

    def cfg_logits(self, tokens, mask, step):
        cond = self.logits(tokens, mask, step)
        return cond, cond.roll(1, dims=-1) * 0.5

    def cfg_hidden(self, tokens, mask, step):
        tok = self._tokens(tokens)
        left = torch.nn.functional.pad(tok[:, step.stage, :-1], (1, 0), value=MASK)
        cond = self.hidden_table[step.stage, left, torch.arange(tok.shape[-1])]
        return cond, cond * 0.3 - 0.1

    def head(self, hidden):
        return hidden @ self.proj


def batch_inputs(lengths, codebooks=1, seed=0, prompt=3):
    gen = torch.Generator().manual_seed(seed)
    size = max(lengths)
    shape = (len(lengths), codebooks, size) if codebooks > 1 else (len(lengths), size)
    init = torch.randint(0, V, shape, generator=gen)
    pinned = torch.zeros(shape, dtype=torch.bool)
    pinned[..., :prompt] = True  # a prompt prefix in every codebook
    return init, pinned


CONFIGS = {
    "maskgct": (MaskPredictConfig(mask_id=MASK, steps=6, confidence_noise=1.0, temperature=0.9, top_k=4,
                                  guidance="hidden", cfg_scale=2.5, cfg_rescale=0.75), "cfg_hidden"),
    "magnet": (MaskPredictConfig(mask_id=MASK, steps=5, unit="span", span_len=3, confidence="logprob",
                                 confidence_tempered=True, temperature=3.0, min_temperature=0.01, top_p=0.9,
                                 guidance="logits", cfg_scale=9.0, cfg_scale_end=0.0), "cfg_logits"),
    "plain": (MaskPredictConfig(mask_id=MASK, steps=4, schedule="linear", greedy_last=False), "logits"),
    "sine-span": (MaskPredictConfig(mask_id=MASK, steps=7, schedule="sine", unit="span", span_len=4,
                                    confidence_noise=0.5), "logits"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batch_equals_items_pins_kept_no_mask_left(name):
    config, method = CONFIGS[name]
    model = ToyModel(1)
    lengths = [40, 17, 29, 6]
    init, pinned = batch_inputs(lengths, seed=2)
    out = mask_predict(getattr(model, method), init, config, lengths=torch.tensor(lengths),
                       pinned=pinned, head=model.head, generator=per_item_generators(4, 7))
    assert torch.equal(out[pinned], init[pinned])
    for b, n in enumerate(lengths):
        assert not (out[b, :n] == MASK).any()
        assert torch.equal(out[b, n:], init[b, n:])  # padding untouched
        one = mask_predict(getattr(model, method), init[b:b + 1, :n], config, pinned=pinned[b:b + 1, :n],
                           head=model.head, generator=per_item_generators(4, 7)[b:b + 1])
        assert torch.equal(one[0], out[b, :n]), f"item {b}"


def test_stage_wise_codebooks_batch_equals_items():
    config = MaskPredictConfig(mask_id=MASK, steps=(5, 3, 1), confidence_noise=1.0, temperature=1.5)
    model = ToyModel(3)
    lengths = [33, 12]
    init, pinned = batch_inputs(lengths, codebooks=K, seed=4)
    pinned[0, 0] = True  # item 0: codebook 0 entirely given (an earlier stage)
    out = mask_predict(model.logits, init, config, lengths=torch.tensor(lengths), pinned=pinned,
                       generator=per_item_generators(2, 3))
    assert torch.equal(out[pinned], init[pinned]) and not (out == MASK).any()
    stages = [step.stage for step, _ in model.calls]
    assert stages == sorted(stages)
    for step, mask in model.calls:  # later codebooks masked, earlier ones complete
        assert not mask[:, :step.stage].any()
        valid = torch.arange(33) < torch.tensor(lengths)[:, None]
        assert torch.equal(mask[:, step.stage + 1:], (valid[:, None] & ~pinned[:, step.stage + 1:]))
    for b, n in enumerate(lengths):
        one = mask_predict(model.logits, init[b:b + 1, :, :n], config, pinned=pinned[b:b + 1, :, :n],
                           generator=per_item_generators(2, 3)[b:b + 1])
        assert torch.equal(one[0], out[b, :, :n])


def test_mask_counts_follow_schedule_and_decided_tokens_stay():
    config = MaskPredictConfig(mask_id=MASK, steps=5, unit="span", span_len=3, confidence_noise=2.0)
    model = ToyModel(5)
    lengths = torch.tensor([40, 22])
    init, pinned = batch_inputs([40, 22], seed=1, prompt=0)
    seen = []
    mask_predict(model.logits, init, config, lengths=lengths, pinned=pinned,
                 generator=torch.Generator().manual_seed(0), progress=lambda s, tok: seen.append((s, tok)))
    units = torch.tensor([14, 8])  # ceil(40 / 3), ceil(22 / 3)
    previous = None
    for step, tokens in seen:
        left = (tokens == MASK) & (torch.arange(40) < lengths[:, None])
        expected = num_to_mask("cosine", (step.index + 1) / step.steps, units)
        masked_units = torch.nn.functional.pad(left, (0, 2)).view(2, 14, 3).any(-1).sum(1)
        assert masked_units.tolist() == expected.tolist()
        if previous is not None:  # decided positions never change or get re-masked
            decided = previous != MASK
            assert torch.equal(tokens[decided], previous[decided])
        previous = tokens
    assert [s.index for s, _ in seen] == list(range(5))


@pytest.mark.parametrize("guidance", ["logits", "hidden"])
def test_cfg_scale_zero_equals_unguided(guidance):
    model = ToyModel(8)
    init, pinned = batch_inputs([30, 30], seed=5)
    base = dict(mask_id=MASK, steps=6, confidence_noise=1.0, temperature=1.2, top_k=5)
    guided = MaskPredictConfig(guidance=guidance, cfg_scale=0.0, cfg_rescale=0.5, **base)
    if guidance == "logits":
        fwd, plain_fwd, head = model.cfg_logits, model.logits, None
    else:
        fwd, head = model.cfg_hidden, model.head
        plain_fwd = lambda t, m, s: model.head(model.cfg_hidden(t, m, s)[0])  # noqa: E731
    a = mask_predict(fwd, init, guided, pinned=pinned, head=head, generator=torch.Generator().manual_seed(1))
    b = mask_predict(plain_fwd, init, MaskPredictConfig(**base), pinned=pinned,
                     generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    strong = MaskPredictConfig(guidance=guidance, cfg_scale=5.0, **base)
    c = mask_predict(fwd, init, strong, pinned=pinned, head=head, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_greedy_is_deterministic_and_single_step_works():
    model = ToyModel(2)
    init, pinned = batch_inputs([20, 11], seed=3)
    config = MaskPredictConfig(mask_id=MASK, steps=4, temperature=0.0)
    a = mask_predict(model.logits, init, config, pinned=pinned, generator=torch.Generator().manual_seed(1))
    b = mask_predict(model.logits, init, config, pinned=pinned, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    one = mask_predict(model.logits, init, MaskPredictConfig(mask_id=MASK, steps=1), pinned=pinned)
    assert not (one == MASK).any()


def test_helpers():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    assert (filter_logits(logits, top_k=2) == FILTERED_LOGIT).tolist() == [[False, False, True, True]]
    probs = logits.softmax(-1)[0]  # 0.61, 0.22, 0.14, 0.03
    kept = filter_logits(logits, top_p=float(probs[0] + probs[1]) - 1e-4) != FILTERED_LOGIT
    assert kept.tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, top_p=0.01) != FILTERED_LOGIT).sum() == 1
    conf = torch.tensor([[0.5, 0.1, float("inf"), 0.1], [0.3, 0.2, 0.9, 0.0]])
    assert select_lowest(conf, torch.tensor([2, 1])).tolist() == [[False, True, False, True],
                                                                    [False, False, False, True]]
    assert num_to_mask("linear", 0.5, torch.tensor([10, 3])).tolist() == [5, 1]
    assert num_to_mask("cosine", 1.0, torch.tensor([10])).tolist() == [0]
    cond, uncond = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    assert torch.allclose(guide(cond, uncond, 2.0), 3 * cond - 2 * uncond)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    both = guide(cond, uncond, 2.0, rescale=1.0, valid=valid)
    alone = guide(cond[1:, :4], uncond[1:, :4], 2.0, rescale=1.0)
    assert torch.allclose(both[1, :4], alone[0])  # rescale statistics are per item
    assert both[1, :4].std(unbiased=False) == pytest.approx(float(cond[1, :4].std(unbiased=False)), rel=1e-5)


def test_bad_input():
    model = ToyModel(0)
    init, pinned = batch_inputs([10, 10])
    cfg = MaskPredictConfig(mask_id=MASK, steps=2)
    with pytest.raises(ValueError, match="schedule.*cosine"):
        MaskPredictConfig(mask_id=MASK, schedule="exp")
    with pytest.raises(ValueError, match="unit"):
        MaskPredictConfig(mask_id=MASK, unit="word")
    with pytest.raises(ValueError, match="steps"):
        MaskPredictConfig(mask_id=MASK, steps=0)
    with pytest.raises(ValueError, match="top_p"):
        MaskPredictConfig(mask_id=MASK, top_p=0.0)
    with pytest.raises(ValueError, match="mask_id"):
        MaskPredictConfig(mask_id=-1)
    with pytest.raises(ValueError, match="init_tokens"):
        mask_predict(model.logits, init[0], cfg)
    with pytest.raises(TypeError, match="init_tokens"):
        mask_predict(model.logits, init.float(), cfg)
    with pytest.raises(ValueError, match="empty"):
        mask_predict(model.logits, init[:0], cfg)
    with pytest.raises(ValueError, match="lengths"):
        mask_predict(model.logits, init, cfg, lengths=torch.tensor([11, 3]))
    with pytest.raises(ValueError, match="pinned"):
        mask_predict(model.logits, init, cfg, pinned=pinned[:, :5])
    with pytest.raises(ValueError, match="K = 3"):
        mask_predict(model.logits, torch.zeros(2, 3, 5, dtype=torch.long),
                     MaskPredictConfig(mask_id=MASK, steps=(2, 2)))
    with pytest.raises(ValueError, match="head"):
        mask_predict(model.cfg_hidden, init, MaskPredictConfig(mask_id=MASK, guidance="hidden"))
    with pytest.raises(TypeError, match="cond, uncond"):
        mask_predict(model.logits, init, MaskPredictConfig(mask_id=MASK, guidance="logits"))
    with pytest.raises(ValueError, match="logits must have shape"):
        mask_predict(lambda t, m, s: torch.zeros(2, 3, V), init, cfg)
    with pytest.raises(TypeError, match="config"):
        mask_predict(model.logits, init, {"mask_id": MASK})


def test_padding_may_hold_the_mask_id_outside_the_vocabulary():
    """Padding (and pins) filled with ``mask_id`` >= V are never scored nor changed; the valid
    positions decode as when the padding holds ordinary ids."""
    config, method = CONFIGS["maskgct"]
    model = ToyModel(3)
    lengths = torch.tensor([12, 7])
    init, pinned = batch_inputs([12, 12], seed=4)
    padded = init.clone()
    padded[1, 7:] = MASK
    out = mask_predict(getattr(model, method), padded, config, lengths=lengths, pinned=pinned,
                       head=model.head, generator=per_item_generators(2, 1))
    ref = mask_predict(getattr(model, method), init, config, lengths=lengths, pinned=pinned,
                       head=model.head, generator=per_item_generators(2, 1))
    assert (out[1, 7:] == MASK).all()
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1, :7], ref[1, :7])
