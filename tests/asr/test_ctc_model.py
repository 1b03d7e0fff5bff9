"""The CTC model: it learns a tiny task; its encoder ignores padding; config errors are clear."""

import pytest
import torch

from asr.models.padding import pad_safe_convolutions
from asr.task import NARASRTask
from nar.ctc import ctc_greedy_search
from tests.asr.tiny import make_batch, tiny_config


def test_tiny_ctc_model_learns_tiny_task():
    torch.manual_seed(0)
    model = NARASRTask.build_model_from_dict(tiny_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(120):
        feats, feat_lens, text, text_lens = make_batch(16, g)
        loss, stats, _ = model(feats, feat_lens, text, text_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "loss_interctc_layer1" in stats  # the intermediate CTC loss was trained too
    model.eval()
    feats, feat_lens, text, text_lens = make_batch(64, torch.Generator().manual_seed(123))
    with torch.no_grad():
        enc = model.encode_feats(feats, feat_lens)
        res = ctc_greedy_search(model.ctc_log_probs(enc), enc.lengths)
    refs = [t[:n].tolist() for t, n in zip(text, text_lens)]
    correct = sum(h == r for h, r in zip(res.tokens, refs))
    assert correct / len(refs) >= 0.9, f"only {correct}/{len(refs)} sequences recognised"


def test_untrained_model_does_not_pass_the_tiny_task():
    # guards the test above: the task is not solved by an untrained model
    torch.manual_seed(0)
    model = NARASRTask.build_model_from_dict(tiny_config()).eval()
    feats, feat_lens, text, text_lens = make_batch(64, torch.Generator().manual_seed(123))
    with torch.no_grad():
        enc = model.encode_feats(feats, feat_lens)
        res = ctc_greedy_search(model.ctc_log_probs(enc), enc.lengths)
    refs = [t[:n].tolist() for t, n in zip(text, text_lens)]
    assert sum(h == r for h, r in zip(res.tokens, refs)) / len(refs) < 0.5


@pytest.mark.parametrize("encoder", ["conformer", "e_branchformer", "branchformer", "transformer"])
def test_encoder_output_does_not_depend_on_padding(encoder):
    """Every encoder asr.models.padding claims (SUPPORTED_ENCODERS) encodes a padded batch like
    its items."""
    torch.manual_seed(1)
    conf = tiny_config()
    common = dict(output_size=32, attention_heads=2, num_blocks=2, input_layer="conv2d",
                  dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0)
    if encoder == "e_branchformer":
        conf["encoder_conf"] = dict(common, cgmlp_linear_units=64, linear_units=64, cgmlp_conv_kernel=7,
                                    merge_conv_kernel=5, interctc_layer_idx=[1], interctc_use_conditioning=True)
    elif encoder == "branchformer":
        conf["encoder_conf"] = dict(common, cgmlp_linear_units=64, cgmlp_conv_kernel=7)
        conf["model_conf"] = {}
    elif encoder == "transformer":
        conf["encoder_conf"] = dict(common, linear_units=64)
        conf["model_conf"] = {}
    conf["encoder"] = encoder
    model = NARASRTask.build_model_from_dict(conf).eval()
    feats = torch.randn(3, 60, 8)
    lens = torch.tensor([60, 37, 21])
    with torch.no_grad():
        batch = model.encode_feats(feats, lens)
        for b in range(3):
            alone = model.encode_feats(feats[b : b + 1, : lens[b]], lens[b : b + 1])
            n = int(alone.lengths[0])
            assert int(batch.lengths[b]) == n
            torch.testing.assert_close(batch.hidden[b, :n], alone.hidden[0], atol=1e-5, rtol=1e-4)


def test_an_encoder_without_the_padding_guarantee_is_refused():
    conf = tiny_config()
    conf["encoder"] = "rnn"
    conf["encoder_conf"] = dict(num_layers=1, hidden_size=16, output_size=16)
    conf["model_conf"] = {}
    with pytest.raises(ValueError, match="encoder RNNEncoder: .*padding-invariantly only with ConformerEncoder"):
        NARASRTask.build_model_from_dict(conf)


def test_without_pad_safety_padding_leaks():
    # the property above holds because of pad_safe_convolutions: ESPnet's layers alone leak
    torch.manual_seed(1)
    model = NARASRTask.build_model_from_dict(tiny_config()).eval()
    feats, lens = torch.randn(2, 40, 8), torch.tensor([40, 15])
    enc = model.encoder
    with torch.no_grad():
        leaky, _, _ = enc(feats, lens, ctc=model.ctc)
        alone, _, _ = enc(feats[1:, :15], lens[1:], ctc=model.ctc)
        with pad_safe_convolutions(enc):
            safe, _, _ = enc(feats, lens, ctc=model.ctc)
    leaky, alone, safe = leaky[0], alone[0], safe[0]
    assert not torch.allclose(leaky[1, :15], alone[0], atol=1e-4)
    torch.testing.assert_close(safe[1, :15], alone[0], atol=1e-5, rtol=1e-4)


def test_config_errors_name_the_key():
    conf = tiny_config()
    conf["model_conf"] = {"interctc_weight": 0.3}
    conf["encoder_conf"]["interctc_layer_idx"] = []
    with pytest.raises(ValueError, match="interctc_layer_idx"):
        NARASRTask.build_model_from_dict(conf)
    conf = tiny_config()
    conf["decoder"] = "transformer"
    with pytest.raises(ValueError, match="decoder"):
        NARASRTask.build_model_from_dict(conf)
    with pytest.raises(SystemExit):  # argparse rejects an unknown model name, listing choices
        NARASRTask.get_parser().parse_args(["--model", "nonexistent"])


def test_legacy_relative_positions_are_named_as_padding_dependent(caplog):
    """ESPnet's legacy relative positions wrap values across the padded length: a padded batch
    then differs from its items alone (shown here), and building such a model warns so."""
    import logging

    from asr.models.padding import uses_legacy_relative_positions

    latest = NARASRTask.build_model_from_dict(tiny_config())
    assert not uses_legacy_relative_positions(latest.encoder)
    conf = tiny_config(rel_pos_type="legacy", pos_enc_layer_type="legacy_rel_pos",
                       selfattention_layer_type="legacy_rel_selfattn")
    with caplog.at_level(logging.WARNING, logger="asr.models.padding"):
        model = NARASRTask.build_model_from_dict(conf).eval()
    assert uses_legacy_relative_positions(model.encoder)
    assert "legacy relative positions" in caplog.text and "batch_size=1" in caplog.text
    feats, lens, _, _ = make_batch(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = model.encode_feats(feats, lens)
        differs = False
        for b in range(4):
            alone = model.encode_feats(feats[b:b + 1, : int(lens[b])], lens[b:b + 1])
            n = int(alone.lengths[0])
            differs |= not torch.allclose(batch.hidden[b, :n], alone.hidden[0, :n], atol=1e-5)
    assert differs  # the property the warning states (with rel_pos_type latest, test_ctc_model shows equality)
