"""Paraformer: GLM sampling, two-pass gradients, MWER, batched inference, a tiny learned task."""

from __future__ import annotations

import itertools
import math

import editdistance
import pytest
import torch

from asr.models.ctc import EncoderOutput
from asr.models.paraformer import ParaformerModel
from asr.task import NARASRTask
from tests.asr.tiny import TOKENS, make_batch, tiny_config

EOS = len(TOKENS) - 1


def paraformer_config(**model_conf) -> dict:
    cfg = tiny_config()
    conf = {"ctc_weight": 0.3, "interctc_weight": 0.3, "sampling_ratio": 0.5, "predictor_bias": 1}
    conf.update(model_conf)
    cfg.update(
        model="paraformer",
        model_conf=conf,
        decoder="paraformer",
        decoder_conf={"attention_heads": 2, "linear_units": 64, "num_blocks": 2, "dropout_rate": 0.0,
                      "positional_dropout_rate": 0.0},
        predictor="cif",
        predictor_conf={"l_order": 1, "r_order": 1, "tail_threshold": 0.45, "dropout": 0.0},
    )
    return cfg


def build(seed: int = 0, **model_conf) -> ParaformerModel:
    torch.manual_seed(seed)
    model = NARASRTask.build_model_from_dict(paraformer_config(**model_conf))
    assert isinstance(model, ParaformerModel)
    return model


def train_tiny(model: ParaformerModel) -> ParaformerModel:
    """150 Adam steps on the tiny task; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        feats, feat_lens, text, text_lens = make_batch(16, gen)
        loss, _, _ = model(feats, feat_lens, text, text_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> ParaformerModel:
    """A tiny Paraformer (predictor_bias 1, GLM 0.5, CTC 0.3) trained on the tiny task."""
    return train_tiny(build())


def decode(model: ParaformerModel, feats, feat_lens):
    return model.recognize(model.encode_feats(feats, feat_lens))


# ---------------------------------------------------------------------------- GLM sampler
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_glm_replaces_exactly_the_computed_number_of_positions(ratio):
    model = build(sampling_ratio=ratio)
    gen = torch.Generator().manual_seed(1)
    for trial in range(20):
        batch, size, dim = 5, 9, 32
        lengths = torch.randint(1, size + 1, (batch,), generator=gen)
        lengths[0] = size
        ys = torch.randint(2, EOS, (batch, size), generator=gen)
        valid = torch.arange(size) < lengths[:, None]
        ys = ys.masked_fill(~valid, -1)
        first = torch.randn(batch, size, len(TOKENS), generator=gen).log_softmax(-1)
        embeds = torch.randn(batch, size, dim, generator=gen) * valid[..., None]
        mixed, mask = model.glancing_embeddings(embeds, first, ys, lengths)
        pred = first.argmax(-1)
        for b in range(batch):
            n = int(lengths[b])
            correct = sum(int(pred[b, i]) == int(ys[b, i]) for i in range(n))
            expected = round((n - correct) * ratio)  # Python's round: halves to even, like torch
            assert int(mask[b].sum()) == expected, (trial, b)
            assert not mask[b, n:].any()
        refs = model.decoder.embed(ys.clamp(min=0))
        torch.testing.assert_close(mixed[mask], refs[mask])
        keep = valid & ~mask
        torch.testing.assert_close(mixed[keep], embeds[keep])
        assert torch.all(mixed[~valid] == 0)


def test_two_pass_training_step_gets_gradients_only_through_the_second_pass(monkeypatch):
    model = build(sampling_ratio=0.5).train()
    calls = []
    original = model.decode_embeddings

    def recording(enc, embeds, lengths):
        out = original(enc, embeds, lengths)
        calls.append((torch.is_grad_enabled(), out.requires_grad, embeds))
        return out

    monkeypatch.setattr(model, "decode_embeddings", recording)
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(0))
    loss, stats, _ = model(feats, feat_lens, text, text_lens)
    assert len(calls) == 2
    (g1, r1, _), (g2, r2, _) = calls
    assert (g1, r1) == (False, False)  # first pass: no graph at all
    assert (g2, r2) == (True, True)
    loss.backward()
    assert model.decoder.output_layer.weight.grad.abs().sum() > 0
    assert model.predictor.cif_output.weight.grad.abs().sum() > 0  # through CIF embeddings + quantity
    assert "glance_ratio" in stats and "loss_pre" in stats



def test_mwer_fine_tuning_keeps_first_pass_gradients(monkeypatch):
    model = build(mwer_weight=1.0, sampling_ratio=0.5).train()
    seen = []
    original = model.decode_embeddings
    monkeypatch.setattr(model, "decode_embeddings",
                        lambda *a: seen.append(original(*a).requires_grad) or original(*a))
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(0))
    _, stats, _ = model(feats, feat_lens, text, text_lens)
    assert seen == [True, True] and "loss_mwer" in stats


# ---------------------------------------------------------------------------- MWER
def test_mwer_loss_matches_a_brute_force_computation():
    model = build(mwer_nbest=3)
    # token 3 is <space>: words are the runs of a/b/c/<unk> between spaces
    model.token_list = ["<blank>", "<unk>", "a", "<space>", "b", "c", "<sos/eos>"]
    gen = torch.Generator().manual_seed(3)
    log_probs = torch.randn(2, 4, 7, generator=gen).log_softmax(-1).requires_grad_()
    ys = torch.tensor([[2, 3, 4, 5], [4, 3, 2, -1]])
    lens = torch.tensor([4, 3])
    loss = model.mwer_loss(log_probs, ys, lens, generator=torch.Generator().manual_seed(7))
    # Re-draw the same samples and compute the loss with plain Python arithmetic.
    g = torch.Generator().manual_seed(7)
    probs = log_probs.detach().softmax(-1).reshape(-1, 7)
    samples = torch.multinomial(probs, 2, replacement=True, generator=g).view(2, 4, 2)
    words = {1: "<unk>", 2: "a", 4: "b", 5: "c"}

    def to_words(ids):
        return "".join(" " if i == 3 else words.get(i, "") for i in ids).split()

    total = 0.0
    for b in range(2):
        n = int(lens[b])
        ref = to_words(ys[b, :n].tolist())
        hyps = [log_probs[b, :n].argmax(-1).tolist()] + [samples[b, :n, k].tolist() for k in range(2)]
        lp = [sum(float(log_probs.detach()[b, i, h[i]]) for i in range(n)) for h in hyps]
        z = max(lp)
        post = [math.exp(v - z) for v in lp]
        post = [p / sum(post) for p in post]
        err = [editdistance.eval(to_words(h), ref) for h in hyps]
        mean = sum(err) / len(err)
        total += sum(p * (e - mean) for p, e in zip(post, err)) / max(len(ref), 1)
    assert float(loss.detach()) == pytest.approx(total / 2, abs=1e-5)


def test_mwer_descent_lowers_the_expected_word_errors():
    model = build(mwer_nbest=8)
    logits = torch.zeros(1, 3, len(TOKENS), requires_grad=True)  # uniform start
    ys = torch.tensor([[2, 3, 4]])
    lens = torch.tensor([3])
    opt = torch.optim.Adam([logits], lr=0.1)

    def expected_errors():  # exact, over all V^3 sequences
        p = logits.detach().log_softmax(-1)[0]
        ref = model.words([2, 3, 4])
        total = 0.0
        for seq in itertools.product(range(len(TOKENS)), repeat=3):
            prob = math.exp(sum(float(p[i, t]) for i, t in enumerate(seq)))
            total += prob * editdistance.eval(model.words(list(seq)), ref)
        return total

    before = expected_errors()
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = model.mwer_loss(logits.log_softmax(-1), ys, lens, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = expected_errors()
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------------------- learning + inference
def test_tiny_paraformer_learns_the_tiny_task(trained):
    feats, feat_lens, text, text_lens = make_batch(32, torch.Generator().manual_seed(99))
    res = decode(trained, feats, feat_lens)
    errors = sum(editdistance.eval(h, text[b, : text_lens[b]].tolist()) for b, h in enumerate(res.token_ids))
    assert errors / int(text_lens.sum()) < 0.05
    # predictor_bias 1: the predictor fires one more token (<sos/eos>), which is not output
    assert all(EOS not in h for h in res.token_ids)
    assert float((res.token_counts == text_lens + 1).float().mean()) > 0.9


def test_batched_inference_equals_per_item(trained):
    feats, feat_lens, _, _ = make_batch(6, torch.Generator().manual_seed(5))
    batch = decode(trained, feats, feat_lens)
    for b in range(6):
        n = int(feat_lens[b])
        one = decode(trained, feats[b : b + 1, :n], feat_lens[b : b + 1])
        assert one.token_ids[0] == batch.token_ids[b]
        assert one.frames[0] == batch.frames[b]
        assert one.scores[0] == pytest.approx(batch.scores[b], abs=1e-4)
        count = int(one.token_counts[0])
        torch.testing.assert_close(one.log_probs[0, :count], batch.log_probs[b, :count], atol=1e-4, rtol=0)


def test_timestamps_are_ordered_frames_inside_the_utterance(trained):
    feats, feat_lens, _, _ = make_batch(8, torch.Generator().manual_seed(6))
    res = decode(trained, feats, feat_lens)
    for b, frames in enumerate(res.frames):
        assert len(frames) == len(res.token_ids[b])
        for (s, e), (s2, _) in zip(frames, frames[1:]):
            assert 0 <= s <= e <= s2
        assert all(e < int(feat_lens[b]) for _, e in frames)


def test_nothing_fires_gives_an_empty_result_not_a_crash():
    model = build().eval()
    torch.nn.init.zeros_(model.predictor.cif_output.weight)
    torch.nn.init.zeros_(model.predictor.cif_output.bias)  # alphas = sigmoid(0) = 0.5 per frame
    feats = torch.randn(2, 10, 8)
    lens = torch.tensor([1, 10])  # 0.5 + 0.45 < 1: nothing fires; 5 + 0.45: five tokens
    res = decode(model, feats, lens)
    assert res.token_counts.tolist() == [0, 5]
    assert res.token_ids[0] == [] and res.frames[0] == []
    alone = decode(model, feats[:1, :1], lens[:1])
    assert alone.token_counts.tolist() == [0] and alone.token_ids == [[]]


def test_length_candidates_zero_is_plain_decoding_and_k1_stays_within_one(trained):
    feats, feat_lens, text, text_lens = make_batch(8, torch.Generator().manual_seed(8))
    plain = decode(trained, feats, feat_lens)
    trained.length_candidates, trained.rescore_ctc_weight = 1, 0.5
    try:
        res = decode(trained, feats, feat_lens)
    finally:
        trained.length_candidates = 0
    assert ((res.token_counts - plain.token_counts).abs() <= 1).all()
    errors = sum(editdistance.eval(h, text[b, : text_lens[b]].tolist()) for b, h in enumerate(res.token_ids))
    assert errors / int(text_lens.sum()) < 0.05


def test_validation_forward_is_one_deterministic_pass(trained):
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = trained(feats, feat_lens, text, text_lens)[1]
        b = trained(feats, feat_lens, text, text_lens)[1]
    assert float(a["loss"]) == float(b["loss"]) and "cer_ctc" in a and "acc" in a


# ---------------------------------------------------------------------------- configuration errors
def test_config_errors_are_clear():
    cfg = paraformer_config()
    del cfg["predictor"]
    with pytest.raises(ValueError, match="needs `predictor:`"):
        NARASRTask.build_model_from_dict(cfg)
    cfg = tiny_config()
    cfg.update(decoder="paraformer", decoder_conf={})
    with pytest.raises(ValueError, match="takes no `decoder:`"):
        NARASRTask.build_model_from_dict(cfg)
    with pytest.raises(ValueError, match="sampling_ratio"):
        NARASRTask.build_model_from_dict(paraformer_config(sampling_ratio=1.5))
    with pytest.raises(ValueError, match="variant"):
        cfg = paraformer_config()
        cfg["predictor_conf"]["variant"] = "v3"
        NARASRTask.build_model_from_dict(cfg)


# ---------------------------------------------------------------------------- decoder token order
def _decoder(**conf):
    from asr.models.paraformer import ParaformerDecoder

    torch.manual_seed(0)
    dec = ParaformerDecoder(len(TOKENS), 16, attention_heads=2, linear_units=32, num_blocks=2,
                            dropout_rate=0.0, positional_dropout_rate=0.0, **conf)
    return dec.eval()


@pytest.mark.parametrize("conf", [{}, {"query_positional": True}, {"fsmn_kernel": 3}])
def test_decoder_sees_query_order_only_with_an_order_option(conf):
    """Plain self/cross-attention is permutation-equivariant over the queries; the positional
    encoding and the FSMN memory break that (their output depends on where a query stands)."""
    dec = _decoder(**conf)
    gen = torch.Generator().manual_seed(1)
    memory, queries = torch.randn(1, 9, 16, generator=gen), torch.randn(1, 6, 16, generator=gen)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        out, _ = dec(memory, torch.tensor([9]), queries, torch.tensor([6]))
        out_p, _ = dec(memory, torch.tensor([9]), queries[:, perm], torch.tensor([6]))
    equivariant = torch.allclose(out[:, perm], out_p, atol=1e-5)
    assert equivariant == (not conf)


@pytest.mark.parametrize("conf", [{"query_positional": True}, {"fsmn_kernel": 5}])
def test_decoder_order_options_ignore_padding(conf):
    dec = _decoder(**conf)
    gen = torch.Generator().manual_seed(2)
    memory, queries = torch.randn(2, 9, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    queries[0, 4:] = 100.0  # padding garbage must not leak into the valid tokens
    with torch.no_grad():
        batch, _ = dec(memory, torch.tensor([9, 9]), queries, torch.tensor([4, 7]))
        alone, _ = dec(memory[:1], torch.tensor([9]), queries[:1, :4], torch.tensor([4]))
    torch.testing.assert_close(batch[0, :4], alone[0], atol=1e-5, rtol=0)


def test_decoder_fsmn_kernel_must_be_odd():
    with pytest.raises(ValueError, match="fsmn_kernel"):
        _decoder(fsmn_kernel=4)


def test_tiny_paraformer_with_fsmn_decoder_learns_the_tiny_task():
    cfg = paraformer_config()
    cfg["decoder_conf"].update(fsmn_kernel=3, query_positional=True)
    torch.manual_seed(0)
    model = train_tiny(NARASRTask.build_model_from_dict(cfg))
    feats, feat_lens, text, text_lens = make_batch(32, torch.Generator().manual_seed(99))
    res = decode(model, feats, feat_lens)
    errors = sum(editdistance.eval(h, text[b, : text_lens[b]].tolist()) for b, h in enumerate(res.token_ids))
    assert errors / int(text_lens.sum()) < 0.05


# ---------------------------------------------------------------------------- CTC-guided firing
def test_firing_alignment_loss_matches_torchaudio_alignment_brute_force(trained):
    """The loss against a per-utterance computation from torchaudio's forced alignment and
    merge_tokens (an independent implementation of the alignment and of the span ends)."""
    import torchaudio.functional as taf

    feats, feat_lens, text, text_lens = make_batch(5, torch.Generator().manual_seed(12))
    with torch.no_grad():
        enc = trained.encode_feats(feats, feat_lens)
        got = float(trained.firing_alignment_loss(enc, text, text_lens))
        log_probs = trained.ctc_log_probs(enc).float()
        alphas = trained.predictor.alphas(enc.hidden, enc.lengths)
    total, count = 0.0, 0
    for b in range(5):
        t, n = int(enc.lengths[b]), int(text_lens[b])
        path, _ = taf.forced_align(log_probs[b : b + 1, :t], text[b : b + 1, :n].int(), blank=0)
        spans = taf.merge_tokens(path[0], torch.zeros(t))
        assert len(spans) == n
        csum = torch.cumsum(alphas[b, :t], 0)
        for i, span in enumerate(spans):
            total += abs(float(csum[span.end - 1]) - (i + 1))
            count += 1
    assert got == pytest.approx(total / count, rel=1e-5)


def test_firing_alignment_loss_trains_and_needs_the_ctc_head():
    model = build(align_weight=1.0).train()
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(13))
    loss, stats, _ = model(feats, feat_lens, text, text_lens)
    loss.backward()
    assert "loss_align" in stats and float(stats["loss_align"]) > 0
    assert model.predictor.cif_output.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="align_weight"):
        build(align_weight=1.0, ctc_weight=0.0, interctc_weight=0.0)


# ---------------------------------------------------------------------------- firing from the CTC path
def _ctc_firing_brute_force(model, enc):
    """Per utterance, in plain Python: segments between the CTC greedy path's token ends."""
    best = model.ctc_log_probs(enc).argmax(-1)
    alphas = torch.zeros(best.shape)
    counts, hyps = [], []
    for b in range(best.size(0)):
        n = int(enc.lengths[b])
        p = best[b, :n].tolist()
        ends = [t for t in range(n) if p[t] != 0 and (t == n - 1 or p[t + 1] != p[t])]
        hyps.append([p[t] for t in ends])
        prev = -1
        for e in ends:
            alphas[b, prev + 1 : e + 1] = 1.0 / (e - prev)
            prev = e
        count = len(ends)
        if model.predictor_bias and prev + 1 < n:
            alphas[b, prev + 1 : n] = 1.0 / (n - prev - 1)
            count += 1
        counts.append(count)
    return alphas, torch.tensor(counts), hyps


def test_ctc_firing_alphas_match_a_brute_force_segmentation(trained):
    feats, feat_lens, _, _ = make_batch(8, torch.Generator().manual_seed(21))
    with torch.no_grad():
        enc = trained.encode_feats(feats, feat_lens)
        alphas, counts = trained.ctc_firing_alphas(enc)
    ref_alphas, ref_counts, _ = _ctc_firing_brute_force(trained, enc)
    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(alphas, ref_alphas)


def test_ctc_firing_decodes_the_ctc_token_count_batched_like_per_item(trained):
    feats, feat_lens, text, text_lens = make_batch(8, torch.Generator().manual_seed(22))
    trained.firing = "ctc"
    try:
        res = decode(trained, feats, feat_lens)
        with torch.no_grad():
            _, _, hyps = _ctc_firing_brute_force(trained, trained.encode_feats(feats, feat_lens))
        for b in range(8):
            assert len(res.token_ids[b]) == len(hyps[b])  # the count is the CTC path's
            n = int(feat_lens[b])
            one = decode(trained, feats[b : b + 1, :n], feat_lens[b : b + 1])
            assert one.token_ids[0] == res.token_ids[b] and one.frames[0] == res.frames[b]
        errors = sum(editdistance.eval(h, text[b, : text_lens[b]].tolist()) for b, h in enumerate(res.token_ids))
        assert errors / int(text_lens.sum()) < 0.05
    finally:
        trained.firing = "predictor"


def test_firing_option_errors():
    with pytest.raises(ValueError, match="firing must be one of"):
        build(firing="spikes")
    with pytest.raises(ValueError, match="length_candidates must be 0"):
        build(firing="ctc", length_candidates=1)
    cfg = paraformer_config(ctc_weight=0.0, interctc_weight=0.0, firing="ctc")
    cfg["encoder_conf"]["interctc_use_conditioning"] = False
    with pytest.raises(ValueError, match="needs the CTC head"):
        NARASRTask.build_model_from_dict(cfg)


def test_training_with_ctc_firing_uses_the_forced_alignment_segments(trained):
    """model_conf firing: ctc trains the decoder on the reference's CTC segments: the
    embeddings of the first pass equal CIF over the brute-force segmentation of the forced
    alignment (torchaudio's), and the step trains."""
    import torchaudio.functional as taf

    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(23))
    with torch.no_grad():
        enc = trained.encode_feats(feats, feat_lens)
        ys, ys_lengths = trained._targets(text, text_lens)
        fallback = torch.zeros(enc.hidden.shape[:2])
        got = trained.reference_firing_alphas(enc, text, text_lens, ys_lengths, fallback)
        log_probs = trained.ctc_log_probs(enc).float()
    for b in range(4):
        t, n = int(enc.lengths[b]), int(text_lens[b])
        path, _ = taf.forced_align(log_probs[b : b + 1, :t], text[b : b + 1, :n].int(), blank=0)
        spans = taf.merge_tokens(path[0], torch.zeros(t))
        ref = torch.zeros(enc.hidden.size(1))
        prev = -1
        for span in spans:
            ref[prev + 1 : span.end] = 1.0 / (span.end - 1 - prev)
            prev = span.end - 1
        if prev + 1 < t:  # predictor_bias: the frames after the last token are the end token's
            ref[prev + 1 : t] = 1.0 / (t - prev - 1)
            torch.testing.assert_close(got[b], ref)
        else:  # no frame left for the end token: the fallback stays
            assert torch.equal(got[b], fallback[b])
    model = build(firing="ctc").train()
    loss, stats, _ = model(feats, feat_lens, text, text_lens)
    loss.backward()
    assert torch.isfinite(loss) and model.decoder.output_layer.weight.grad.abs().sum() > 0


def test_ctc_firing_with_the_alignment_loss_shares_one_forced_alignment():
    # forward aligns the reference once for both; the result equals each computed on its own
    model = build(firing="ctc", align_weight=1.0).eval()
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(21))
    calls = []
    original = model.forced_path
    model.forced_path = lambda *a: calls.append(1) or original(*a)
    with torch.no_grad():
        _, stats, _ = model(feats, feat_lens, text, text_lens)
        assert len(calls) == 1
        enc = model.encode(feats, feat_lens)
        alone = model.firing_alignment_loss(enc, text[:, : int(text_lens.max())], text_lens)
    assert float(stats["loss_align"]) == pytest.approx(float(alone), rel=1e-5)
