"""CASS-NAT: Viterbi alignment in training, trigger masks, TAE batching, ESA, a tiny learned task."""

from __future__ import annotations

import editdistance
import pytest
import torch
import torchaudio

from asr.models.cassnat import CassNATModel
from asr.models.ctc import EncoderOutput
from asr.task import NARASRTask
from nar.align import error_based_sampling, token_spans
from tests.asr.tiny import TOKENS, make_batch, tiny_config

EOS = len(TOKENS) - 1


def cassnat_config(ar: bool = True, **model_conf) -> dict:
    cfg = tiny_config()
    conf = {"ctc_weight": 0.5, "interctc_weight": 0.3, "left_trigger": 1, "right_trigger": 1}
    if ar:
        conf.update(ar_weight=0.3, ar_decoder_conf={"attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                                                    "dropout_rate": 0.0, "positional_dropout_rate": 0.0})
    conf.update(model_conf)
    cfg.update(
        model="cassnat",
        model_conf=conf,
        decoder="cassnat",
        decoder_conf={"attention_heads": 2, "linear_units": 64, "num_self_blocks": 1, "num_mix_blocks": 1,
                      "dropout_rate": 0.0},
    )
    return cfg


def build(seed: int = 0, ar: bool = True, **model_conf) -> CassNATModel:
    torch.manual_seed(seed)
    model = NARASRTask.build_model_from_dict(cassnat_config(ar, **model_conf))
    assert isinstance(model, CassNATModel)
    return model


@pytest.fixture(scope="module")
def trained() -> CassNATModel:
    """A tiny CASS-NAT with AR head trained on the tiny task."""
    model = build()
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


def encode(model, feats, feat_lens) -> EncoderOutput:
    with torch.no_grad():
        return model.encode_feats(feats, feat_lens)


# ---------------------------------------------------------------------------- training alignment
def test_training_alignment_is_a_valid_ctc_path_and_equals_torchaudio(trained):
    feats, feat_lens, text, text_lens = make_batch(8, torch.Generator().manual_seed(3))
    enc = encode(trained, feats, feat_lens)
    labels = trained.viterbi_alignment(enc, text, text_lens)
    log_probs = trained.ctc_log_probs(enc).float()
    for b in range(8):
        t, n = int(enc.lengths[b]), int(text_lens[b])
        path = labels[b, :t]
        collapsed = [int(x) for x in torch.unique_consecutive(path) if int(x) != 0]
        assert collapsed == text[b, :n].tolist()  # the CTC path of the reference
        assert (labels[b, t:] == 0).all()
        ref, _ = torchaudio.functional.forced_align(log_probs[b : b + 1, :t], text[b : b + 1, :n], blank=0)
        assert torch.equal(path, ref[0])


def test_trigger_mask_rows_follow_the_token_spans(trained):
    feats, feat_lens, text, text_lens = make_batch(6, torch.Generator().manual_seed(4))
    enc = encode(trained, feats, feat_lens)
    labels = trained.viterbi_alignment(enc, text, text_lens)
    spans = token_spans(labels, enc.lengths)
    _, counts, mask = trained.decode_alignment(enc.hidden, enc.lengths, labels)
    assert counts.tolist() == text_lens.tolist()
    for b in range(6):
        t, n = int(enc.lengths[b]), int(text_lens[b])
        rows = mask[b, : n + 1, :t]
        assert not mask[b, n + 1 :].any() and not mask[b, :, t:].any()
        for u, span in enumerate(spans[b]):
            # slot u (widened by one frame) holds the first frame of token u and ends one frame
            # after it; its unwidened part starts right after the previous token's first frame
            frames = rows[u].nonzero()[:, 0]
            assert int(frames.max()) == min(span.start + 1, t - 1)
            prev = spans[b][u - 1].start + 1 if u > 0 else 0
            assert int(frames.min()) == max(prev - 1, 0)
            assert rows[u, span.start]
        # the eos slot reaches the last frame; every frame belongs to some slot
        assert rows[n, t - 1] and rows.any(0).all()


# ---------------------------------------------------------------------------- batching
def test_tae_and_decoder_of_a_batch_equal_per_item(trained):
    feats, feat_lens, text, text_lens = make_batch(6, torch.Generator().manual_seed(5))
    enc = encode(trained, feats, feat_lens)
    labels = trained.viterbi_alignment(enc, text, text_lens)
    logp, counts, mask = trained.decode_alignment(enc.hidden, enc.lengths, labels)
    tae = trained.decoder.tae(enc.hidden, mask)
    for b in range(6):
        t, n = int(enc.lengths[b]), int(counts[b])
        one_logp, _, one_mask = trained.decode_alignment(enc.hidden[b : b + 1, :t], enc.lengths[b : b + 1],
                                                         labels[b : b + 1, :t])
        one_tae = trained.decoder.tae(enc.hidden[b : b + 1, :t], one_mask)
        torch.testing.assert_close(one_tae[0, : n + 1], tae[b, : n + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(one_logp[0, : n + 1], logp[b, : n + 1], atol=1e-4, rtol=0)


def test_recognize_batch_equals_items_greedy_and_esa(trained):
    feats, feat_lens, _, _ = make_batch(5, torch.Generator().manual_seed(6))
    enc = encode(trained, feats, feat_lens)
    for num in (1, 8):
        batch = trained.recognize(enc, num_samples=num, threshold=0.99,
                                  generator=[torch.Generator().manual_seed(100 + b) for b in range(5)])
        for b in range(5):
            t = int(enc.lengths[b])
            one_enc = EncoderOutput(enc.hidden[b : b + 1, :t], enc.lengths[b : b + 1], ())
            one = trained.recognize(one_enc, num_samples=num, threshold=0.99,
                                    generator=[torch.Generator().manual_seed(100 + b)])
            assert one.token_ids[0] == batch.token_ids[b] and one.frames[0] == batch.frames[b]
            assert int(one.chosen[0]) == int(batch.chosen[b])
            assert one.scores[0] == pytest.approx(batch.scores[b], abs=1e-4)


# ---------------------------------------------------------------------------- ESA
def test_esa_copy0_is_greedy_and_copies_differ_only_at_uncertain_frames():
    model = build(1).eval()  # untrained: many uncertain frames
    feats, feat_lens, _, _ = make_batch(4, torch.Generator().manual_seed(7))
    enc = encode(model, feats, feat_lens)
    log_probs = model.ctc_log_probs(enc).float()
    labels, counts = error_based_sampling(log_probs, enc.lengths, num=16, threshold=0.9,
                                          generator=torch.Generator().manual_seed(0))
    labels = labels.view(4, 16, -1)
    greedy = log_probs.argmax(-1)
    top2 = log_probs.topk(2, -1).indices
    for b in range(4):
        t = int(enc.lengths[b])
        assert torch.equal(labels[b, 0, :t], greedy[b, :t])
        confident = log_probs[b, :t].max(-1).values.exp() >= 0.9
        changed = (labels[b, :, :t] != greedy[b, :t]).any(0)
        assert not (changed & confident).any()
        assert ((labels[b, :, :t, None] == top2[b, None, :t]).any(-1)).all()
        assert changed.any()  # the untrained model is uncertain somewhere: copies do differ
    # threshold 0: nothing is resampled, so ESA decodes exactly as greedy
    greedy_res = model.recognize(enc, num_samples=1)
    esa0 = model.recognize(enc, num_samples=6, threshold=0.0, rank="nar")
    assert esa0.token_ids == greedy_res.token_ids and esa0.chosen.tolist() == [0] * 4


def test_esa_picks_the_copy_with_the_best_ar_score(trained):
    feats, feat_lens, _, _ = make_batch(3, torch.Generator().manual_seed(8))
    enc = encode(trained, feats, feat_lens)
    res = trained.recognize(enc, num_samples=6, threshold=1.0, rank="ar",
                            generator=torch.Generator().manual_seed(1))
    for b in range(3):  # the chosen hypothesis's own AR score is the reported (maximal) score
        t = int(enc.lengths[b])
        own = trained.ar_scores(enc.hidden[b : b + 1, :t], enc.lengths[b : b + 1], [res.token_ids[b]])
        assert float(own[0]) == pytest.approx(res.scores[b], abs=1e-4)


# ---------------------------------------------------------------------------- learning
def test_tiny_cassnat_learns_the_tiny_task(trained):
    feats, feat_lens, text, text_lens = make_batch(32, torch.Generator().manual_seed(99))
    enc = encode(trained, feats, feat_lens)
    total = int(text_lens.sum())
    for num in (1, 8):
        res = trained.recognize(enc, num_samples=num, generator=torch.Generator().manual_seed(0))
        errors = sum(editdistance.eval(h, text[b, : text_lens[b]].tolist()) for b, h in enumerate(res.token_ids))
        assert errors / total < 0.05, num
        assert all(EOS not in h for h in res.token_ids)
    # the NAR decoder itself learned the task: given the reference alignment it predicts the
    # reference tokens and <eos> in the last slot
    labels = trained.viterbi_alignment(enc, text, text_lens)
    logp, counts, _ = trained.decode_alignment(enc.hidden, enc.lengths, labels)
    pred = logp.argmax(-1)
    for b in range(32):
        n = int(text_lens[b])
        assert pred[b, n] == EOS
    acc = sum(int((pred[b, : int(text_lens[b])] == text[b, : int(text_lens[b])]).sum()) for b in range(32))
    assert acc / total > 0.95


def test_training_step_trains_ctc_nar_and_ar_parts():
    model = build(2).train()
    feats, feat_lens, text, text_lens = make_batch(4, torch.Generator().manual_seed(9))
    loss, stats, _ = model(feats, feat_lens, text, text_lens)
    assert {"loss_ctc", "loss_att", "loss_ar", "acc", "acc_ar"} <= set(stats)
    loss.backward()
    for part in (model.decoder.tae, model.decoder.mix_blocks, model.ar_decoder, model.ctc):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


# ---------------------------------------------------------------------------- bad input
def test_empty_ctc_output_gives_an_empty_hypothesis_not_a_crash():
    model = build(3).eval()
    with torch.no_grad():  # the CTC head always says blank
        model.ctc.ctc_lo.weight.zero_()
        model.ctc.ctc_lo.bias.fill_(-10.0)
        model.ctc.ctc_lo.bias[0] = 10.0
    feats, feat_lens, _, _ = make_batch(3, torch.Generator().manual_seed(10))
    enc = encode(model, feats, feat_lens)
    for num, rank in ((1, None), (4, "ar"), (4, "nar")):
        res = model.recognize(enc, num_samples=num, threshold=1.0, rank=rank)
        assert res.token_counts.tolist() == [0, 0, 0]
        assert res.token_ids == [[], [], []] and res.frames == [[], [], []]


def test_an_early_eos_argmax_does_not_truncate_the_hypothesis(trained):
    """The alignment fixes the token count; a decoder that prefers <eos> in every slot (as the
    demo CASS-NAT did on windows longer than its training utterances) still yields one non-eos
    token per aligned token: the best token other than <eos>."""
    feats, feat_lens, _, _ = make_batch(4, torch.Generator().manual_seed(12))
    enc = encode(trained, feats, feat_lens)
    labels = trained.ctc_log_probs(enc).argmax(-1)
    _, counts, _ = trained.decode_alignment(enc.hidden, enc.lengths, labels)
    plain = trained.recognize(enc)
    assert plain.token_counts.tolist() == counts.tolist()
    try:
        with torch.no_grad():
            trained.decoder.output_layer.bias[EOS] += 1e4
        biased = trained.recognize(enc)
        assert all(EOS not in ids for ids in biased.token_ids)
        assert [len(ids) for ids in biased.token_ids] == counts.tolist()
        assert biased.token_ids == plain.token_ids  # eos lost every slot of the plain decode
    finally:
        with torch.no_grad():
            trained.decoder.output_layer.bias[EOS] -= 1e4


def test_utterances_too_short_for_their_text_are_skipped_in_the_ce():
    model = build(4).train()
    feats, feat_lens, text, text_lens = make_batch(3, torch.Generator().manual_seed(11))
    feat_lens = feat_lens.clone()
    feat_lens[1] = 1  # one frame cannot carry its text: the CE skips it, the rest still trains
    loss, stats, _ = model(feats, feat_lens, text, text_lens)
    assert torch.isfinite(loss) and float(stats["loss_att"]) > 0


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="ctc_weight"):
        build(ctc_weight=0.0)
    with pytest.raises(ValueError, match="left_trigger"):
        build(left_trigger=-1)
    with pytest.raises(ValueError, match="needs the AR head"):
        build(ar=False).recognize(EncoderOutput(torch.zeros(1, 3, 32), torch.tensor([3]), ()), rank="ar")
    with pytest.raises(ValueError, match="num_samples"):
        build(ar=False).recognize(EncoderOutput(torch.zeros(1, 3, 32), torch.tensor([3]), ()), num_samples=0)


def test_external_scorer_ranks_the_esa_copies(trained):
    """An external ranker (as the separately trained AR baseline) replaces the AR head: here a
    scorer preferring the fewest tokens must pick a copy with the fewest tokens."""
    feats, feat_lens, _, _ = make_batch(3, torch.Generator().manual_seed(12))
    enc = encode(trained, feats, feat_lens)
    seen = []

    def fewest_tokens(hyps):
        seen.append([list(h) for h in hyps])
        return -torch.tensor([float(len(h)) for h in hyps])

    res = trained.recognize(enc, num_samples=6, threshold=1.0, scorer=fewest_tokens,
                            generator=torch.Generator().manual_seed(2))
    hyps = seen[0]
    assert len(hyps) == 3 * 6
    for b in range(3):
        copies = hyps[b * 6 : (b + 1) * 6]
        assert len(res.token_ids[b]) == min(len(h) for h in copies)
        assert copies[int(res.chosen[b])] == res.token_ids[b]
