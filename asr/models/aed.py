"""The autoregressive (AR) baseline: ESPnet's hybrid CTC/attention encoder–decoder, served.

Training uses ESPnet's own ``ESPnetASRModel`` unchanged (``model: espnet`` in the YAML,
e.g. ``egs/synth_en/asr1/conf/train_aed.yaml``). This module only adapts a trained model to the
interface :class:`asr.inference.Speech2Text` uses for every family (``extract_feats``,
``encode_feats`` → :class:`asr.models.ctc.EncoderOutput`, ``ctc_log_probs``) and runs ESPnet's
batch beam search (``espnet.nets.batch_beam_search.BatchBeamSearch``: attention decoder +
CTC prefix scorer + length bonus, as ``espnet2.bin.asr_inference``) on each utterance.

Beam search defaults: beam 10, CTC weight 0.3, no length bonus, ``maxlenratio`` 0 (the
maximum output length is the number of encoder frames).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.asr.espnet_model import ESPnetASRModel

from asr.decoding import DecodeConfig, TokenHypothesis, reject_foreign, with_aligned_spans
from asr.models.ctc import EncoderOutput
from asr.models.padding import check_pad_safe, pad_safe_convolutions


@dataclass(frozen=True)
class AEDHypothesis:
    token_ids: list[int]  # without <sos>/<eos>
    score: float  # the beam search's total weighted score


class AEDAdapter(torch.nn.Module):
    """Wrap a trained ``ESPnetASRModel`` for batched encoding and per-utterance beam search."""

    family = "aed"

    def __init__(self, model: ESPnetASRModel):
        super().__init__()
        if not isinstance(model, ESPnetASRModel):
            raise TypeError(f"AEDAdapter needs an ESPnetASRModel, got {type(model).__name__}")
        if model.decoder is None:
            raise ValueError("the ESPnet model has no attention decoder (ctc_weight 1.0): decode it as CTC")
        check_pad_safe(model.encoder)
        self.model = model
        self.ctc = model.ctc
        self.blank_id = model.blank_id
        self.sos, self.eos = model.sos, model.eos
        self.token_list = list(model.token_list)
        self._search: dict = {}

    def extract_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        return self.model._extract_feats(speech, speech_lengths)

    def encode_feats(self, feats: torch.Tensor, feats_lengths: torch.Tensor) -> EncoderOutput:
        """The inference part of ``ESPnetASRModel.encode`` from features (no SpecAugment).

        ``feats`` is left as it is: ESPnet's normalisers (GlobalMVN, UtteranceMVN) write into a
        tensor that does not require grad, so they get a copy."""
        m = self.model
        if m.normalize is not None:
            feats, feats_lengths = m.normalize(feats.clone(), feats_lengths)
        if m.preencoder is not None:
            feats, feats_lengths = m.preencoder(feats, feats_lengths)
        with pad_safe_convolutions(m.encoder):
            if getattr(m.encoder, "interctc_use_conditioning", False):
                out, lengths, _ = m.encoder(feats, feats_lengths, ctc=m.ctc)
            else:
                out, lengths, _ = m.encoder(feats, feats_lengths)
        if isinstance(out, tuple):
            out = out[0]
        if m.postencoder is not None:
            out, lengths = m.postencoder(out, lengths)
        return EncoderOutput(out, lengths, ())

    def ctc_log_probs(self, enc: EncoderOutput) -> torch.Tensor:
        return self.ctc.log_softmax(enc.hidden)

    def beam_search(self, beam_size: int, ctc_weight: float, penalty: float) -> BatchBeamSearch:
        """ESPnet's batch beam search over decoder + CTC prefix + length bonus (cached)."""
        key = (beam_size, ctc_weight, penalty)
        if key not in self._search:
            vocab = len(self.token_list)
            scorers = dict(
                decoder=self.model.decoder,
                ctc=CTCPrefixScorer(ctc=self.ctc, eos=self.eos),
                length_bonus=LengthBonus(vocab),
            )
            weights = dict(decoder=1.0 - ctc_weight, ctc=ctc_weight, length_bonus=penalty)
            search = BatchBeamSearch(
                scorers=scorers,
                weights=weights,
                beam_size=beam_size,
                vocab_size=vocab,
                sos=self.sos,
                eos=self.eos,
                token_list=self.token_list,
                pre_beam_score_key="full",
            )
            search.to(device=self.model.ctc.ctc_lo.weight.device).eval()
            self._search[key] = search
        return self._search[key]

    @torch.no_grad()
    def recognize(self, enc: EncoderOutput, beam_size: int = 10, ctc_weight: float = 0.3,
                  penalty: float = 0.0, maxlenratio: float = 0.0, nbest: int = 1
                  ) -> list[list[AEDHypothesis]]:
        """Beam search on each item of a padded encoder batch; n-best per item, best first."""
        search = self.beam_search(beam_size, ctc_weight, penalty)
        out = []
        level = logging.getLogger().level
        logging.getLogger().setLevel(max(level, logging.WARNING))  # beam search logs every hypothesis
        try:
            for b in range(enc.hidden.size(0)):
                x = enc.hidden[b, : int(enc.lengths[b])]
                if x.size(0) == 0:
                    out.append([AEDHypothesis([], float("-inf"))])
                    continue
                hyps = search(x=x, maxlenratio=maxlenratio, minlenratio=0.0)
                items = []
                for h in hyps[:nbest]:
                    ids = [int(t) for t in h.yseq.tolist()[1:] if int(t) not in (self.sos, self.eos)]
                    items.append(AEDHypothesis(ids, float(h.score)))
                out.append(items or [AEDHypothesis([], float("-inf"))])
        finally:
            logging.getLogger().setLevel(level)
        return out

    def make_decoder(self, config: DecodeConfig) -> "AEDSearch":
        """The decode protocol (:mod:`asr.decoding`)."""
        return AEDSearch(self, config)


class AEDSearch:
    """The AR baseline's decoder (:mod:`asr.decoding` protocol): ESPnet's batch beam search per
    input (``beam``: ``beam_size``; ``greedy``: beam 1); spans by forced alignment of each
    hypothesis on the CTC posteriors."""

    family = "aed"
    searches = ("greedy", "beam")
    options = ("ctc_weight", "penalty", "maxlenratio")

    def __init__(self, model: AEDAdapter, config: DecodeConfig):
        reject_foreign(config, self.family, self.searches, self.options)
        self.model, self.config = model, config

    def decode(self, enc: EncoderOutput, *, wavs=None, names=None, spans: bool = True) -> list[list[TokenHypothesis]]:
        cfg = self.config
        nbest = self.model.recognize(enc, beam_size=cfg.beam_size if cfg.search == "beam" else 1,
                                     ctc_weight=cfg.ctc_weight, penalty=cfg.penalty,
                                     maxlenratio=cfg.maxlenratio, nbest=cfg.nbest)
        candidates = [[(tuple(h.token_ids), h.score) for h in hyps] for hyps in nbest]
        log_probs = self.model.ctc_log_probs(enc).float().cpu() if spans else None
        return with_aligned_spans(candidates, log_probs, enc.lengths.cpu(), self.model.blank_id, spans)

