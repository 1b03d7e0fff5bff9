"""The ASR decode protocol (asr.decoding): a new family plugs into Speech2Text without any change
to it; the NAR decoders keep the contract they claim (their own one-pass forward, not ESPnet's
scorer interface); decode options are checked by the family that reads them."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from espnet.nets.beam_search import BeamSearch

import asr.task
from asr import Speech2Text
from asr.decoding import DecodeConfig, TokenHypothesis, reject_foreign
from asr.models.ctc import CTCModel
from asr.models.paraformer import ParaformerDecoder
from asr.models.cassnat import CassNATDecoder
from nar.align import token_spans
from nar.base.kaldi import read_kaldi_map
from nar.base.tensors import length_mask
from tests.asr.tiny import TOKENS, tiny_config


# ---------------------------------------------------------------------------- a toy family
class ReversedSearch:
    """A toy family's decoder: the greedy CTC tokens in reverse order, each with the span of
    the greedy path's token it came from (so spans are the path's own, not a forced alignment)."""

    family = "toy"
    searches = ("greedy",)
    options = ("seed",)

    def __init__(self, model, config):
        reject_foreign(config, self.family, self.searches, self.options)
        self.model = model

    def decode(self, enc, *, wavs, names, spans):
        labels = self.model.ctc_log_probs(enc).argmax(-1)
        out = []
        for item in token_spans(labels.cpu(), enc.lengths.cpu(), blank=self.model.blank_id):
            rev = item[::-1]
            out.append([TokenHypothesis(tuple(s.token for s in rev), -1.0,
                                        tuple((s.start, s.end) for s in rev) if spans else ())])
        return out


class ToyModel(CTCModel):
    family = "toy"

    def make_decoder(self, config):
        return ReversedSearch(self, config)


@pytest.fixture()
def toy_dir(tiny_recipe, tmp_path, monkeypatch):
    """The tiny recipe's CTC model re-labelled ``model: toy``; the family is registered the way
    any family is: one entry in the task's model choices."""
    monkeypatch.setitem(asr.task.model_choices.classes, "toy", ToyModel)
    src = tiny_recipe / "exp/asr_train_tiny_char"
    dst = tmp_path / "exp" / "asr_toy"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*epoch.pth", "*.log", "images", "decode_*"))
    config = yaml.safe_load((dst / "config.yaml").read_text())
    config["model"] = "toy"
    for key in ("train_shape_file", "valid_shape_file"):
        config.pop(key, None)
    (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return dst


def test_a_new_family_plugs_in_without_touching_speech2text(toy_dir, tiny_recipe):
    scp = read_kaldi_map(str(tiny_recipe / "dump/raw/test/wav.scp"))
    wavs = [p for _, p in sorted(scp.items())][:3]
    toy = Speech2Text(toy_dir, max_seconds=None)
    assert isinstance(toy.model, ToyModel) and toy.family == "toy"
    ctc = Speech2Text(tiny_recipe / "exp/asr_train_tiny_char", model_file=toy.model_file, max_seconds=None)
    for got, ref in zip(toy(wavs), ctc(wavs)):
        assert got.token_ids == ref.token_ids[::-1]
        assert got.text == toy.tokens_to_text(ref.token_ids[::-1])
        # spans in frames, end exclusive, became seconds by the front end's frame shift
        assert all(0 <= s < e for s, e in got.timestamps)
        assert list(got.timestamps) == sorted(got.timestamps, reverse=True)
    assert Speech2Text(toy_dir, seed=3, max_seconds=None)(wavs[0]).token_ids == toy(wavs[0]).token_ids
    with pytest.raises(ValueError, match=r"\['ngram_weight'\] are not options of a toy model"):
        Speech2Text(toy_dir, ngram_weight=0.3)
    with pytest.raises(ValueError, match="a toy model decodes with search in \\('greedy',\\)"):
        Speech2Text(toy_dir, search="beam")


def test_speech2text_never_dispatches_on_the_family():
    import asr.inference as inference

    source = open(inference.__file__, encoding="utf-8").read()
    for family_class in ("CTCModel", "ParaformerModel", "CassNATModel", "AEDAdapter", "ESPnetASRModel"):
        assert family_class not in source
    assert ".family ==" not in source and "family !=" not in source


# ---------------------------------------------------------------------------- decoder contracts
def _decoder(name: str):
    cls = asr.task.decoder_choices.get_class(name)
    conf = dict(attention_heads=2, linear_units=32, dropout_rate=0.0)
    conf.update(num_blocks=2) if name == "paraformer" else conf.update(num_self_blocks=1, num_mix_blocks=1)
    return cls(vocab_size=len(TOKENS), encoder_output_size=16, **conf).eval()


@pytest.mark.parametrize("name, cls", [("paraformer", ParaformerDecoder), ("cassnat", CassNATDecoder)])
def test_nar_decoders_do_not_claim_espnets_scorer_contract(name, cls):
    decoder = _decoder(name)
    assert type(decoder) is cls and not hasattr(decoder, "score")
    with pytest.raises(AssertionError, match="does not implement ScorerInterface"):
        BeamSearch(scorers={"decoder": decoder}, weights={"decoder": 1.0}, beam_size=2,
                   vocab_size=len(TOKENS), sos=len(TOKENS) - 1, eos=len(TOKENS) - 1)


def test_paraformer_decoder_contract_batch_equals_items():
    """forward(hs_pad (B,T,D), hlens, queries (B,L,D), query_lens) -> (logits (B,L,V), query_lens),
    padding of both sides (filled with garbage) ignored."""
    torch.manual_seed(0)
    dec = _decoder("paraformer")
    hlens, qlens = torch.tensor([9, 5, 7]), torch.tensor([4, 2, 3])
    hs = torch.randn(3, 9, 16)
    q = torch.randn(3, 4, 16)
    hs = hs.masked_fill(~length_mask(hlens, 9)[..., None], 1e3)
    q = q.masked_fill(~length_mask(qlens, 4)[..., None], -1e3)
    with torch.no_grad():
        logits, lens = dec(hs, hlens, q, qlens)
        assert logits.shape == (3, 4, len(TOKENS)) and torch.equal(lens, qlens)
        for b in range(3):
            one, _ = dec(hs[b:b + 1, :hlens[b]], hlens[b:b + 1], q[b:b + 1, :qlens[b]], qlens[b:b + 1])
            torch.testing.assert_close(logits[b, :qlens[b]], one[0], atol=1e-5, rtol=1e-4)


def test_cassnat_decoder_contract_batch_equals_items():
    """forward(hs_pad (B,T,D), hlens, trigger (B,L+1,T) bool, token_lengths) -> (logits (B,L+1,V),
    slots = token_lengths + 1), padding ignored."""
    torch.manual_seed(0)
    dec = _decoder("cassnat")
    hlens, tlens = torch.tensor([9, 6]), torch.tensor([3, 1])
    hs = torch.randn(2, 9, 16).masked_fill(~length_mask(hlens, 9)[:, :, None], 1e3)
    trigger = torch.zeros(2, 4, 9, dtype=torch.bool)
    for b, bounds in enumerate([[(0, 3), (3, 5), (5, 8), (8, 9)], [(0, 4), (4, 6)]]):
        for u, (s, e) in enumerate(bounds):
            trigger[b, u, s:e] = True
    with torch.no_grad():
        logits, slots = dec(hs, hlens, trigger, tlens)
        assert logits.shape == (2, 4, len(TOKENS)) and torch.equal(slots, tlens + 1)
        for b in range(2):
            n, t = int(tlens[b]) + 1, int(hlens[b])
            one, _ = dec(hs[b:b + 1, :t], hlens[b:b + 1], trigger[b:b + 1, :n, :t], tlens[b:b + 1])
            torch.testing.assert_close(logits[b, :n], one[0], atol=1e-5, rtol=1e-4)


def test_the_task_builds_both_nar_decoders_from_the_config():
    for model, parts in (("paraformer", {"decoder": "paraformer", "predictor": "cif"}),
                         ("cassnat", {"decoder": "cassnat"})):
        conf = tiny_config()
        conf.update(model=model, model_conf={"ctc_weight": 0.5}, **parts)
        conf["decoder_conf"] = ({"num_blocks": 1, "linear_units": 32, "attention_heads": 2} if model == "paraformer"
                                else {"num_self_blocks": 1, "num_mix_blocks": 1, "linear_units": 32,
                                      "attention_heads": 2})
        built = asr.task.NARASRTask.build_model_from_dict(conf)
        assert type(built.decoder).__name__ == {"paraformer": "ParaformerDecoder", "cassnat": "CassNATDecoder"}[model]


# ---------------------------------------------------------------------------- options
def test_decode_config_checks_and_reports_what_changed():
    assert DecodeConfig().changed() == []
    assert DecodeConfig(search="beam", beam_size=4, ngram_weight=0.3).changed() == ["search", "beam_size", "ngram_weight"]
    with pytest.raises(ValueError, match="search must be one of"):
        DecodeConfig(search="viterbi")
    with pytest.raises(ValueError, match="nbest must be <= 10"):
        DecodeConfig(search="beam", nbest=11)
    with pytest.raises(ValueError, match="nbest=2 needs search='beam'"):
        DecodeConfig(nbest=2, beam_size=4)
    with pytest.raises(ValueError, match="ctc_weight must be <= 1.0"):
        DecodeConfig(ctc_weight=1.5)
    with pytest.raises(ValueError, match="oov_penalty"):
        DecodeConfig(oov_penalty=-3.0)
