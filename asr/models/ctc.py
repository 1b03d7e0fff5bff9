"""Encoder-only CTC model in the style of OWSM-CTC.

An ESPnet encoder (Conformer, E-Branchformer, …) with one CTC head shared by the final layer
and by intermediate layers. At the intermediate layers listed in the encoder's
``interctc_layer_idx`` the CTC posteriors are computed and, with
``interctc_use_conditioning: true``, projected back to the model dimension and added to the
hidden states (self-conditioned CTC). The loss is
``(1 - interctc_weight) * CTC_final + interctc_weight * mean_l CTC_l``.

Shapes: B batch, N samples, T frames (after subsampling), F feature dim, D model dim,
V vocabulary, L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import editdistance
import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel

from asr.decoding import CTCSearch, DecodeConfig
from asr.models.padding import check_pad_safe, pad_safe_convolutions


@dataclass(frozen=True)
class EncoderOutput:
    """What the encoder stack returns; every NAR decoder reads this once."""

    hidden: torch.Tensor  # (B, T, D)
    lengths: torch.Tensor  # (B,)
    intermediate: tuple[tuple[int, torch.Tensor], ...]  # ((layer, (B, T, D)), ...)


class CTCModel(AbsESPnetModel):
    """Frontend → normalisation → ESPnet encoder (with intermediate CTC) → shared CTC head.

    Constructed by :class:`asr.task.NARASRTask` from a YAML config with ``model: ctc``; the
    keyword arguments it does not set come from ``model_conf``.
    """

    family = "ctc"  # the label Speech2Text reports (never dispatched on)
    parts: tuple[str, ...] = ()  # what asr.task builds besides the encoder stack (`decoder`, `predictor`)

    def __init__(
        self,
        vocab_size: int,
        token_list: list[str],
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: AbsEncoder,
        postencoder: Optional[AbsPostEncoder],
        ctc: CTC,
        interctc_weight: float = 0.0,
        blank_id: int = 0,
        report_cer: bool = True,
        extract_feats_in_collect_stats: bool = True,
    ):
        super().__init__()
        if not 0.0 <= interctc_weight < 1.0:
            raise ValueError(f"model_conf.interctc_weight must be in [0, 1), got {interctc_weight}")
        if len(token_list) != vocab_size:
            raise ValueError(f"token_list has {len(token_list)} entries but vocab_size={vocab_size}")
        check_pad_safe(encoder)
        self.vocab_size = vocab_size
        self.token_list = list(token_list)
        self.blank_id = blank_id
        self.frontend = frontend
        self.specaug = specaug
        self.normalize = normalize
        self.preencoder = preencoder
        self.encoder = encoder
        self.postencoder = postencoder
        self.ctc = ctc
        self.interctc_weight = interctc_weight
        self.report_cer = report_cer
        self.extract_feats_in_collect_stats = extract_feats_in_collect_stats
        layers = tuple(getattr(encoder, "interctc_layer_idx", ()) or ())
        if interctc_weight > 0 and not layers:
            raise ValueError(
                "model_conf.interctc_weight > 0 needs encoder_conf.interctc_layer_idx "
                "(the layers whose outputs get an intermediate CTC loss)"
            )
        self.self_conditioning = bool(getattr(encoder, "interctc_use_conditioning", False))
        if self.self_conditioning:
            # ESPnet encoders call this layer on the intermediate CTC posteriors (B, T, V) -> (B, T, D)
            encoder.conditioning_layer = torch.nn.Linear(vocab_size, encoder.output_size())

    # ---------------------------------------------------------------- features / encoder
    def extract_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """speech (B, N), speech_lengths (B,) -> feats (B, T', F), feats_lengths (B,)."""
        speech = speech[:, : int(speech_lengths.max())]
        if self.frontend is None:
            return speech, speech_lengths
        return self.frontend(speech, speech_lengths)

    def encode_feats(self, feats: torch.Tensor, feats_lengths: torch.Tensor) -> EncoderOutput:
        """Normalised encoder pass from frontend features (B, T', F) with lengths (B,).

        ``feats`` is left as it is: ESPnet's SpecAug and normalisers (GlobalMVN, UtteranceMVN)
        write into a tensor that does not require grad, so they get a copy."""
        augment = self.specaug is not None and self.training
        if augment or self.normalize is not None:
            feats = feats.clone()
        if augment:
            feats, feats_lengths = self.specaug(feats, feats_lengths)
        if self.normalize is not None:
            feats, feats_lengths = self.normalize(feats, feats_lengths)
        if self.preencoder is not None:
            feats, feats_lengths = self.preencoder(feats, feats_lengths)
        with pad_safe_convolutions(self.encoder):
            if self.self_conditioning:
                out, lengths, _ = self.encoder(feats, feats_lengths, ctc=self.ctc)
            else:
                out, lengths, _ = self.encoder(feats, feats_lengths)
        intermediate: tuple = ()
        if isinstance(out, tuple):
            out, inter = out
            intermediate = tuple((int(layer), h) for layer, h in inter)
        if self.postencoder is not None:
            out, lengths = self.postencoder(out, lengths)
        return EncoderOutput(out, lengths, intermediate)

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> EncoderOutput:
        """speech (B, N) raw waveform, speech_lengths (B,) -> :class:`EncoderOutput`."""
        feats, feats_lengths = self.extract_feats(speech, speech_lengths)
        return self.encode_feats(feats, feats_lengths)

    def ctc_log_probs(self, enc: EncoderOutput) -> torch.Tensor:
        """Final-layer CTC log-posteriors (B, T, V)."""
        return self.ctc.log_softmax(enc.hidden)

    def make_decoder(self, config: DecodeConfig) -> CTCSearch:
        """The decode protocol (:mod:`asr.decoding`): greedy or prefix beam search on the CTC head."""
        if self.ctc is None:
            raise ValueError("the model has no CTC head (model_conf.ctc_weight = 0): it cannot be decoded as CTC")
        return CTCSearch(self, config)

    # ---------------------------------------------------------------- training
    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ):
        """speech (B, N), text (B, L) padded with -1 -> (loss, stats, weight)."""
        text = text[:, : int(text_lengths.max())]
        enc = self.encode(speech, speech_lengths)
        stats: dict = {}
        loss = self.ctc_branch_loss(enc, text, text_lengths, stats)
        if self.report_cer and not self.training:
            stats["cer_ctc"] = self._greedy_token_error_rate(enc, text, text_lengths)
        stats["loss"] = loss.detach()
        batch_size = speech.size(0)
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight

    def ctc_branch_loss(self, enc: EncoderOutput, text, text_lengths, stats: dict) -> torch.Tensor:
        """``(1 - w) * CTC_final + w * mean_l CTC_l`` (w = interctc_weight); fills ``stats``."""
        loss_ctc = self.ctc(enc.hidden, enc.lengths, text, text_lengths)
        stats["loss_ctc"] = loss_ctc.detach()
        if self.interctc_weight > 0 and enc.intermediate:
            inter = [self.ctc(h, enc.lengths, text, text_lengths) for _, h in enc.intermediate]
            for (layer, _), value in zip(enc.intermediate, inter):
                stats[f"loss_interctc_layer{layer}"] = value.detach()
            loss_inter = torch.stack(inter).mean()
            stats["loss_interctc"] = loss_inter.detach()
            loss_ctc = (1 - self.interctc_weight) * loss_ctc + self.interctc_weight * loss_inter
        return loss_ctc

    def _greedy_token_error_rate(self, enc: EncoderOutput, text, text_lengths) -> torch.Tensor:
        best = self.ctc.argmax(enc.hidden)  # (B, T)
        errors, total = 0, 0
        for b in range(best.size(0)):
            path = torch.unique_consecutive(best[b, : int(enc.lengths[b])])
            hyp = [int(t) for t in path if int(t) != self.blank_id]
            ref = [int(t) for t in text[b, : int(text_lengths[b])]]
            errors += editdistance.eval(hyp, ref)
            total += len(ref)
        return torch.tensor(errors / max(total, 1))

    def collect_feats(self, speech, speech_lengths, text=None, text_lengths=None, **kwargs):
        """Features for ESPnet's statistics collection (global mean/variance)."""
        feats, feats_lengths = self.extract_feats(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": feats_lengths}
