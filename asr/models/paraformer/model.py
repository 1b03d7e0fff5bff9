"""Paraformer: CIF predictor + glancing (GLM) sampler + parallel decoder (Gao et al., 2022).

Encoder (any ESPnet encoder, as for :class:`asr.models.ctc.CTCModel`) → CIF predictor (one
weight per encoder frame) → continuous integrate-and-fire (:func:`nar.cif.cif`) into one
acoustic embedding per token → a non-causal transformer decoder whose queries are those
embeddings and which cross-attends the encoder → one softmax per token. An optional CTC branch
(with intermediate CTC) shares the encoder.

Training, per batch:

1. alphas are scaled so each utterance fires exactly its reference length L (L + 1 with
   ``predictor_bias: 1``, the extra token being ``<sos/eos>``); quantity loss ``|sum(alphas) - L|``;
2. glancing sampling: a first decoder pass on the acoustic embeddings without gradients counts
   the correct tokens; ``round((L - correct) * sampling_ratio)`` random positions get the
   reference token embedding instead (:func:`nar.masking.glancing_mask`); the second pass is
   trained with cross-entropy;
3. ``loss = ctc_weight * CTC + (1 - ctc_weight) * CE + predictor_weight * quantity
   [+ align_weight * alignment] [+ mwer_weight * MWER]``.

Optional CTC-guided firing (``align_weight > 0``, needs the CTC head): the reference is
force-aligned to the (detached) CTC posteriors (:func:`nar.align.forced_align`); with s_i the
last frame of token i's CTC span, the loss is the mean over tokens of
``|sum(alphas[:s_i + 1]) - (i + 1)|``, so the predictor learns to fire token i at its CTC spike
and the CIF segments become the spans between spikes (the quantity loss only fixes the total).

Minimum word error rate (MWER) fine-tuning (``mwer_weight > 0``) uses the paper's negative
sampling: for each utterance the N-best is the first pass's argmax plus ``mwer_nbest - 1``
sequences sampled position by position from the decoder's distribution (the length is fixed by
the predictor). The loss is the expected number of word errors under the N-best-renormalised
sequence probabilities, minus the N-best mean (variance reduction), divided by the number of
reference words. With MWER on, the first pass keeps its gradients (the MWER term is computed on
it); without MWER, only the second pass gets gradients.

Inference: one encoder pass, predictor alphas with the tail weight added after each item's last
frame, ``floor(sum(alphas) + tail)`` tokens, one decoder pass, argmax — for the whole padded
batch at once. Token times come from the CIF firing frames.

Inference option ``firing: ctc`` (needs the CTC head): the CIF segments come from the CTC
greedy path instead of the predictor: token i integrates, with equal weights, the frames after
the previous token's last frame up to its own last frame (with ``predictor_bias``, the frames
after the last token form the end token). The count is the CTC hypothesis's; the decoder gives
the token identities. This is Paraformer-v2's idea (token embeddings from CTC, Tian et al. 2024)
on our CIF; use it when the predictor is undertrained (RESULTS.md of synth_en/asr1). With
``firing: ctc`` in ``model_conf`` the decoder is also trained on such segments (of the reference
force-aligned to the CTC posteriors) instead of the predictor's.

Shapes: B batch, N samples, T encoder frames, D model dim, L tokens, V vocabulary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import editdistance
import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.transformer.label_smoothing_loss import LabelSmoothingLoss
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable

from asr.decoding import DecodeConfig, TokenHypothesis, reject_foreign, warn_empty
from asr.models.ctc import CTCModel, EncoderOutput
from asr.models.paraformer.decoder import ParaformerDecoder
from asr.models.paraformer.predictor import CIFPredictor
from nar.align import fits_ctc, forced_align, token_ends
from nar.base.checks import check_choice, check_int, check_number
from nar.base.tensors import length_mask
from nar.cif import cif, quantity_loss, segment_alphas
from nar.masking import glancing_mask

FIRING_MODES = ("predictor", "ctc")


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ParaformerResult:
    """Batched recognition output of :meth:`ParaformerModel.recognize`.

    Attributes:
        token_ids: per item, the recognised token ids (blank, sos/eos removed).
        scores: per item, the summed log-probability of the chosen tokens.
        frames: per item, ``(first_frame, firing_frame)`` of each kept token (encoder frames).
        token_counts: (B,) number of tokens the predictor fired (before filtering).
        log_probs: (B, L, V) decoder log-probabilities.
    """

    token_ids: list[list[int]]
    scores: list[float]
    frames: list[list[tuple[int, int]]]
    token_counts: torch.Tensor
    log_probs: torch.Tensor


# ------------------------------------------------------------------------------ model
class ParaformerModel(CTCModel):
    """Encoder → CIF predictor → parallel decoder, with GLM sampling and optional CTC / MWER.

    Decoding: :meth:`make_decoder` (the :mod:`asr.decoding` protocol) or :meth:`recognize`.

    Built by :class:`asr.task.NARASRTask` from ``model: paraformer`` with ``decoder:
    paraformer`` and ``predictor: cif``; the remaining keyword arguments come from
    ``model_conf``.

    Args (model_conf):
        ctc_weight: weight of the CTC branch in [0, 1); 0 drops the CTC head.
        interctc_weight: intermediate-CTC share inside the CTC branch (needs ctc_weight > 0).
        predictor_weight: weight of the quantity loss.
        align_weight: weight of the CTC-guided firing loss (see the module docstring; needs
            ``ctc_weight > 0``; 0 = FunASR's Paraformer).
        predictor_bias: 1 = the predictor also fires an end token (``<sos/eos>``), FunASR's
            ``predictor_bias``; the end token is removed from the output.
        sampling_ratio: GLM ratio in [0, 1]; 0 disables glancing (one decoder pass).
        lsm_weight: label smoothing of the cross-entropy.
        length_normalized_loss: normalise CE and quantity loss by tokens instead of utterances.
        share_embedding: GLM takes reference embeddings from the output layer's weights.
        mwer_weight, mwer_nbest, mwer_temperature: MWER fine-tuning (see the module docstring).
        sos, eos: ids of the start/end tokens (default: the last token, ESPnet's ``<sos/eos>``).
        firing: ``"predictor"`` (the CIF predictor, default) or ``"ctc"``: segments from the
            CTC greedy path at inference and, in training, from the reference force-aligned to
            the CTC posteriors (the predictor is still trained by the quantity loss). Set at
            decoding time only, it changes inference alone (see the module docstring).
        length_candidates, rescore_ctc_weight: inference option: also decode token counts
            L - k .. L + k (k = length_candidates) and keep the candidate with the best
            ``(1 - w) * decoder + w * CTC`` log-likelihood (needs the CTC head when w > 0).
    """

    family = "paraformer"
    parts = ("decoder", "predictor")

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
        ctc: Optional[CTC],
        decoder: ParaformerDecoder,
        predictor: CIFPredictor,
        ctc_weight: float = 0.3,
        interctc_weight: float = 0.0,
        predictor_weight: float = 1.0,
        align_weight: float = 0.0,
        predictor_bias: int = 0,
        sampling_ratio: float = 0.4,
        lsm_weight: float = 0.0,
        length_normalized_loss: bool = False,
        share_embedding: bool = False,
        mwer_weight: float = 0.0,
        mwer_nbest: int = 4,
        mwer_temperature: float = 1.0,
        sos: Optional[int] = None,
        eos: Optional[int] = None,
        ignore_id: int = -1,
        blank_id: int = 0,
        length_candidates: int = 0,
        rescore_ctc_weight: float = 0.5,
        firing: str = "predictor",
        report_cer: bool = True,
        extract_feats_in_collect_stats: bool = True,
    ):
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"model_conf.ctc_weight must be in [0, 1), got {ctc_weight}")
        if interctc_weight > 0 and ctc_weight == 0:
            raise ValueError("model_conf.interctc_weight > 0 needs ctc_weight > 0 (the CTC head)")
        if align_weight < 0 or (align_weight > 0 and ctc_weight == 0):
            raise ValueError(f"model_conf.align_weight must be >= 0 and needs ctc_weight > 0 (the CTC head "
                             f"gives the alignment); got align_weight {align_weight}, ctc_weight {ctc_weight}")
        if not 0.0 <= sampling_ratio <= 1.0:
            raise ValueError(f"model_conf.sampling_ratio must be in [0, 1], got {sampling_ratio}")
        if predictor_bias not in (0, 1):
            raise ValueError(f"model_conf.predictor_bias must be 0 or 1, got {predictor_bias}")
        if mwer_weight < 0 or mwer_nbest < 2 or mwer_temperature <= 0:
            raise ValueError(
                f"need mwer_weight >= 0, mwer_nbest >= 2, mwer_temperature > 0; got "
                f"{mwer_weight}, {mwer_nbest}, {mwer_temperature}"
            )
        if length_candidates < 0 or not 0.0 <= rescore_ctc_weight <= 1.0:
            raise ValueError(
                f"need length_candidates >= 0 and rescore_ctc_weight in [0, 1]; got "
                f"{length_candidates}, {rescore_ctc_weight}"
            )
        if not isinstance(decoder, ParaformerDecoder):
            raise ValueError(f"model 'paraformer' needs `decoder: paraformer`, got {type(decoder).__name__}")
        if not isinstance(predictor, CIFPredictor):
            raise ValueError(f"model 'paraformer' needs `predictor: cif`, got {type(predictor).__name__}")
        if ctc_weight == 0 and getattr(encoder, "interctc_use_conditioning", False):
            raise ValueError("encoder self-conditioning needs the CTC head: set model_conf.ctc_weight > 0")
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            ctc=ctc if ctc_weight > 0 else None,
            interctc_weight=interctc_weight,
            blank_id=blank_id,
            report_cer=report_cer,
            extract_feats_in_collect_stats=extract_feats_in_collect_stats,
        )
        self.decoder = decoder
        self.predictor = predictor
        self.ctc_weight = ctc_weight
        self.predictor_weight = predictor_weight
        self.align_weight = align_weight
        self.predictor_bias = predictor_bias
        self.sampling_ratio = sampling_ratio
        self.length_normalized_loss = length_normalized_loss
        self.share_embedding = share_embedding
        self.mwer_weight = mwer_weight
        self.mwer_nbest = mwer_nbest
        self.mwer_temperature = mwer_temperature
        self.sos = vocab_size - 1 if sos is None else sos
        self.eos = vocab_size - 1 if eos is None else eos
        self.ignore_id = ignore_id
        self.length_candidates = length_candidates
        self.firing = firing
        self.rescore_ctc_weight = rescore_ctc_weight
        self.inference_options()
        self.criterion_att = LabelSmoothingLoss(
            size=vocab_size,
            padding_idx=ignore_id,
            smoothing=lsm_weight,
            normalize_length=length_normalized_loss,
        )
        self._special = {self.blank_id, self.sos, self.eos}

    # ---------------------------------------------------------------- building blocks
    def reference_embeddings(self, ys: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids (padding -1 allowed) -> (B, L, D) reference embeddings for GLM."""
        ys = ys.clamp(min=0)
        if self.share_embedding:
            return self.decoder.output_layer.weight[ys]
        return self.decoder.token_embeddings(ys)

    def decode_embeddings(self, enc: EncoderOutput, embeds: torch.Tensor, lengths: torch.Tensor):
        """Decoder log-probs (B, L, V) for query embeddings (B, L, D) with lengths (B,)."""
        logits, _ = self.decoder(enc.hidden, enc.lengths, embeds.to(enc.hidden.dtype), lengths)
        return torch.log_softmax(logits.float(), dim=-1)

    def _targets(self, text: torch.Tensor, text_lengths: torch.Tensor):
        """Targets (B, L[+1]) padded with ignore_id, with ``<eos>`` appended for predictor_bias."""
        if not self.predictor_bias:
            return text, text_lengths
        ys = F.pad(text, (0, 1), value=self.ignore_id)
        ys[torch.arange(ys.size(0), device=ys.device), text_lengths] = self.eos
        return ys, text_lengths + 1

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
        # the reference's CTC forced alignment, computed once for CTC firing and the firing loss
        path = self.forced_path(enc, text, text_lengths) if self.firing == "ctc" or self.align_weight > 0 else None
        loss_att, loss_pre, loss_mwer = self._decoder_losses(enc, text, text_lengths, stats, path)
        loss = (1 - self.ctc_weight) * loss_att + self.predictor_weight * loss_pre
        if self.align_weight > 0:
            loss_align = self.firing_alignment_loss(enc, text, text_lengths, path)
            stats["loss_align"] = loss_align.detach()
            loss = loss + self.align_weight * loss_align
        if self.mwer_weight > 0:
            loss = loss + self.mwer_weight * loss_mwer
        if self.ctc is not None:
            loss = loss + self.ctc_weight * self.ctc_branch_loss(enc, text, text_lengths, stats)
            if self.report_cer and not self.training:
                stats["cer_ctc"] = self._greedy_token_error_rate(enc, text, text_lengths)
        stats["loss"] = loss.detach()
        loss, stats, weight = force_gatherable((loss, stats, speech.size(0)), loss.device)
        return loss, stats, weight

    def _decoder_losses(self, enc: EncoderOutput, text, text_lengths, stats: dict, path=None):
        """Quantity loss, GLM two-pass cross-entropy and (optionally) MWER; ``path``: the
        :meth:`forced_path` of the batch when already computed."""
        ys, ys_lengths = self._targets(text, text_lengths)
        out, alphas = self.predictor(enc.hidden, enc.lengths, target_lengths=ys_lengths)
        if self.firing == "ctc":  # the decoder learns on the segments it will decode from
            fire = self.reference_firing_alphas(enc, text, text_lengths, ys_lengths, alphas.detach(), path)
            out = cif(enc.hidden.float(), fire, enc.lengths, threshold=self.predictor.threshold,
                      target_lengths=ys_lengths)
        embeds = out.embeddings  # (B, L, D), exactly ys_lengths tokens each
        valid = length_mask(ys_lengths, ys.size(1))
        if self.length_normalized_loss:
            loss_pre = quantity_loss(alphas, enc.lengths, ys_lengths, "sum") / ys_lengths.sum()
        else:
            loss_pre = quantity_loss(alphas, enc.lengths, ys_lengths, "mean")
        stats["loss_pre"] = loss_pre.detach()
        counts = torch.floor(alphas.detach().sum(1) + self.predictor.tail_threshold)
        stats["acc_count"] = (counts == ys_lengths).float().mean()

        use_glm = self.training and self.sampling_ratio > 0
        need_first_grad = self.training and self.mwer_weight > 0
        first = None
        if use_glm or need_first_grad or not self.training:
            with torch.set_grad_enabled(need_first_grad):
                first = self.decode_embeddings(enc, embeds, ys_lengths)  # (B, L, V)
        if use_glm:
            embeds, glance = self.glancing_embeddings(embeds, first, ys, ys_lengths)
            stats["glance_ratio"] = glance.sum() / valid.sum()
        if self.training or first is None:
            second = self.decode_embeddings(enc, embeds, ys_lengths)
        else:
            second = first  # validation: no glancing, one pass
        loss_att = self.criterion_att(second, ys)
        stats["loss_att"] = loss_att.detach()
        ref_pass = first if first is not None else second
        with torch.no_grad():
            hit = (ref_pass.argmax(-1) == ys) & valid
            stats["acc"] = hit.sum() / valid.sum()
        loss_mwer = torch.zeros((), device=loss_att.device)
        if need_first_grad:
            loss_mwer = self.mwer_loss(first, ys, ys_lengths)
            stats["loss_mwer"] = loss_mwer.detach()
        return loss_att, loss_pre, loss_mwer

    @torch.no_grad()
    def forced_path(self, enc: EncoderOutput, text, text_lengths):
        """The reference force-aligned to the detached CTC posteriors, for the utterances whose
        reference fits their frames: (ok (B,) bool, labels (B_ok, T), lengths (B_ok,),
        text (B_ok, L_ok), text_lengths (B_ok,)); labels is None when none fits."""
        ok = fits_ctc(enc.lengths, text, text_lengths)
        if not bool(ok.any()):
            return ok, None, None, None, None
        lengths, text_lengths = enc.lengths[ok], text_lengths[ok]
        text = text[ok][:, : int(text_lengths.max())]
        log_probs = self.ctc_log_probs(EncoderOutput(enc.hidden[ok], lengths, ())).float()
        labels, _ = forced_align(log_probs, lengths, text.clamp(min=0), text_lengths, blank=self.blank_id)
        return ok, labels, lengths, text, text_lengths

    def firing_alignment_loss(self, enc: EncoderOutput, text, text_lengths, path=None) -> torch.Tensor:
        """Mean over tokens of ``|cumsum(alphas)[s_i] - (i + 1)|``, s_i = the last frame of token
        i's span in the CTC forced alignment of the reference (utterances whose reference does
        not fit their frames are left out); ``path``: :meth:`forced_path`'s result if known."""
        ok, labels, lengths, text, text_lengths = path or self.forced_path(enc, text, text_lengths)
        if labels is None:
            return enc.hidden.sum() * 0.0
        with torch.no_grad():
            ends = token_ends(labels, lengths, self.blank_id)  # (B, T): L per item
            token_index = (ends.cumsum(1) - 1).clamp(min=0)
            end_frame = torch.zeros_like(text, dtype=torch.long)  # (B, L)
            rows = torch.arange(labels.size(0), device=labels.device)[:, None].expand_as(labels)
            cols = torch.arange(labels.size(1), device=labels.device)[None, :].expand_as(labels)
            end_frame[rows[ends], token_index[ends]] = cols[ends]
        hidden = enc.hidden[ok]
        alphas = self.predictor.alphas(hidden, lengths)
        fired = alphas.cumsum(1).gather(1, end_frame)  # (B, L)
        target = torch.arange(1, text.size(1) + 1, device=alphas.device, dtype=alphas.dtype)[None, :]
        tok_valid = length_mask(text_lengths, text.size(1))
        return ((fired - target).abs() * tok_valid).sum() / tok_valid.sum()

    def glancing_embeddings(self, embeds: torch.Tensor, first_log_probs: torch.Tensor,
                            ys: torch.Tensor, ys_lengths: torch.Tensor,
                            generator: Optional[torch.Generator] = None):
        """GLM sampling: replace ``round((L - correct) * sampling_ratio)`` random positions of the
        acoustic embeddings (B, L, D) by reference embeddings, ``correct`` counted on the
        first pass's argmax (B, L, V). Returns (mixed embeddings (B, L, D), mask (B, L))."""
        with torch.no_grad():
            pred = first_log_probs.argmax(-1)
            glance = glancing_mask(pred, ys.clamp(min=0), ys_lengths, self.sampling_ratio,
                                   generator=generator)
        refs = self.reference_embeddings(ys).to(embeds.dtype)
        valid = length_mask(ys_lengths, ys.size(1))
        mixed = torch.where(glance[..., None], refs, embeds) * valid[..., None]
        return mixed, glance

    # ---------------------------------------------------------------- MWER
    def words(self, ids: Sequence[int]) -> list[str]:
        """Token ids -> words (``<space>`` and BPE's ``▁`` separate words; specials dropped)."""
        pieces = []
        for i in ids:
            if i in self._special:
                continue
            tok = self.token_list[i]
            pieces.append(" " if tok == "<space>" else tok.replace("\u2581", " "))
        return "".join(pieces).split()

    def mwer_loss(self, log_probs: torch.Tensor, ys: torch.Tensor, ys_lengths: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Expected word errors over the argmax + sampled N-best (normalised per reference word).

        Args:
            log_probs: (B, L, V) decoder log-probs on the acoustic embeddings (with gradients).
            ys: (B, L) references (padding ignore_id); ys_lengths (B,).

        Returns:
            Scalar: mean over the batch of
            ``sum_i softmax(log P(y_i))_i * (W_i - mean_j W_j) / max(#ref words, 1)``.
        """
        batch, size, vocab = log_probs.shape
        valid = length_mask(ys_lengths, size)
        with torch.no_grad():
            probs = torch.softmax(log_probs.detach() / self.mwer_temperature, dim=-1)
            samples = torch.multinomial(
                probs.reshape(-1, vocab), self.mwer_nbest - 1, replacement=True, generator=generator
            ).view(batch, size, self.mwer_nbest - 1)
            hyps = torch.cat([log_probs.detach().argmax(-1, keepdim=True), samples], dim=-1)  # (B, L, N)
            errors = torch.zeros(batch, self.mwer_nbest, device=log_probs.device)
            ref_words = torch.zeros(batch, device=log_probs.device)
            hyps_cpu, ys_cpu = hyps.cpu(), ys.cpu()
            for b in range(batch):
                n = int(ys_lengths[b])
                ref = self.words(ys_cpu[b, :n].tolist())
                ref_words[b] = len(ref)
                for i in range(self.mwer_nbest):
                    errors[b, i] = editdistance.eval(self.words(hyps_cpu[b, :n, i].tolist()), ref)
        seq = (log_probs.gather(-1, hyps) * valid[..., None]).sum(1)  # (B, N)
        posterior = torch.softmax(seq, dim=-1)
        relative = errors - errors.mean(-1, keepdim=True)
        return ((posterior * relative).sum(-1) / ref_words.clamp(min=1)).mean()

    # ---------------------------------------------------------------- inference
    def inference_options(self, firing: Optional[str] = None, length_candidates: Optional[int] = None,
                          rescore_ctc_weight: Optional[float] = None) -> tuple[str, int, float]:
        """The effective ``(firing, length_candidates, rescore_ctc_weight)``: each given value,
        else the model config's; checked (the module is not changed)."""
        firing = self.firing if firing is None else firing
        k = self.length_candidates if length_candidates is None else length_candidates
        w = self.rescore_ctc_weight if rescore_ctc_weight is None else rescore_ctc_weight
        check_choice(firing, "firing", FIRING_MODES)
        check_int(k, "length_candidates", 0)
        check_number(w, "rescore_ctc_weight", 0.0, 1.0)
        if firing == "ctc" and self.ctc is None:
            raise ValueError("Paraformer firing 'ctc' needs the CTC head (a model trained with ctc_weight > 0)")
        if firing == "ctc" and k > 0:
            raise ValueError("Paraformer firing 'ctc' takes its token count from the CTC path; "
                             "length_candidates must be 0 with it")
        return firing, k, float(w)

    def make_decoder(self, config: DecodeConfig) -> "ParaformerSearch":
        """The decode protocol (:mod:`asr.decoding`)."""
        return ParaformerSearch(self, config)

    def segment_alphas(self, path: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CIF weights (B, T) and token counts (B,) from a CTC frame path (B, T) (greedy or
        forced), :func:`nar.cif.segment_alphas`; the frames after the last token form the end
        token's segment with ``predictor_bias``."""
        return segment_alphas(token_ends(path, lengths, self.blank_id), lengths, bool(self.predictor_bias))

    def ctc_firing_alphas(self, enc: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`segment_alphas` of the CTC greedy path (inference with ``firing: ctc``)."""
        return self.segment_alphas(self.ctc_log_probs(enc).argmax(-1), enc.lengths)

    def reference_firing_alphas(self, enc: EncoderOutput, text, text_lengths, ys_lengths, fallback, path=None):
        """Training with ``firing: ctc``: :meth:`segment_alphas` of the reference force-aligned
        to the (detached) CTC posteriors; items that cannot be aligned, or whose segments do
        not give ``ys_lengths`` tokens (no frame left for the end token), keep ``fallback``."""
        alphas = fallback.clone()
        ok, labels, lengths, _, _ = path or self.forced_path(enc, text, text_lengths)
        if labels is None:
            return alphas
        seg, counts = self.segment_alphas(labels, lengths)
        good = counts == ys_lengths[ok]
        rows = ok.nonzero().flatten()[good]
        alphas[rows] = seg[good].to(alphas.dtype)
        return alphas

    @torch.no_grad()
    def recognize(self, enc: EncoderOutput, firing: Optional[str] = None, length_candidates: Optional[int] = None,
                  rescore_ctc_weight: Optional[float] = None) -> ParaformerResult:
        """Batched greedy Paraformer decoding of an encoder output (no per-item loop in the
        network passes). Items for which nothing fires get an empty result. Options: see
        :meth:`inference_options` (None: the model config's)."""
        firing, k, w = self.inference_options(firing, length_candidates, rescore_ctc_weight)
        if firing == "ctc":
            alphas, counts = self.ctc_firing_alphas(enc)
            out = cif(enc.hidden.float(), alphas, enc.lengths, threshold=self.predictor.threshold,
                      target_lengths=counts)
        else:
            out, alphas = self.predictor(enc.hidden, enc.lengths)
            counts = out.token_lengths
            if k > 0:
                return self._recognize_candidates(enc, alphas, counts, k, w)
        if int(counts.max()) == 0:
            log_probs = enc.hidden.new_zeros(enc.hidden.size(0), 0, self.vocab_size)
        else:
            log_probs = self.decode_embeddings(enc, out.embeddings, counts)
        return self._result(log_probs, counts, out.token_starts, out.token_ends)

    def _result(self, log_probs, counts, starts, ends) -> ParaformerResult:
        best, ids = log_probs.max(-1) if log_probs.size(1) else (log_probs.new_zeros(log_probs.shape[:2]),) * 2
        ids = ids.long()
        token_ids, scores, frames = [], [], []
        for b in range(log_probs.size(0)):
            n = int(counts[b])
            row = ids[b, :n].tolist()
            keep = [k for k, t in enumerate(row) if t not in self._special]
            token_ids.append([row[k] for k in keep])
            scores.append(float(best[b, :n].sum()))
            s, e = starts[b, :n].tolist(), ends[b, :n].tolist()
            frames.append([(s[k], e[k]) for k in keep])
        return ParaformerResult(token_ids, scores, frames, counts, log_probs)

    def _recognize_candidates(self, enc: EncoderOutput, alphas, counts, k: int, weight: float) -> ParaformerResult:
        """Decode token counts L-k..L+k for every item in one batch and keep the best by
        ``(1 - w) * decoder log-prob + w * CTC log-likelihood``."""
        w = weight if self.ctc is not None else 0.0
        if weight > 0 and self.ctc is None:
            logging.warning("rescore_ctc_weight > 0 but the model has no CTC head; using decoder scores")
        offsets = torch.arange(-k, k + 1, device=counts.device)  # (C,)
        cand = (counts[None, :] + offsets[:, None]).clamp(min=1)  # (C, B)
        num_c, batch = cand.shape
        hidden = enc.hidden.repeat(num_c, 1, 1)
        lengths = enc.lengths.repeat(num_c)
        rep_alphas = alphas.repeat(num_c, 1)
        target = cand.reshape(-1)
        zero = rep_alphas.sum(1) <= 0
        rep_alphas = torch.where(zero[:, None] & length_mask(lengths, hidden.size(1)),
                                 torch.full_like(rep_alphas, 1e-3), rep_alphas)
        out = cif(hidden.float(), rep_alphas, lengths, self.predictor.threshold, target_lengths=target)
        rep_enc = EncoderOutput(hidden, lengths, ())
        log_probs = self.decode_embeddings(rep_enc, out.embeddings, target)  # (C*B, L, V)
        best, ids = log_probs.max(-1)
        valid = length_mask(target, ids.size(1))
        score = (best * valid).sum(1)  # (C*B,)
        if w > 0:
            ctc_lp = self.ctc.log_softmax(hidden).transpose(0, 1).float()  # (T, C*B, V)
            tokens = ids.masked_fill(~valid, 0)
            filtered = [[t for t in row[: int(n)] if t not in self._special]
                        for row, n in zip(tokens.tolist(), target.tolist())]
            flen = torch.tensor([len(f) for f in filtered], device=ids.device)
            flat = torch.zeros(len(filtered), max(1, int(flen.max())), dtype=torch.long, device=ids.device)
            for i, f in enumerate(filtered):
                flat[i, : len(f)] = torch.tensor(f, dtype=torch.long)
            nll = F.ctc_loss(ctc_lp, flat, lengths, flen, blank=self.blank_id,
                             reduction="none", zero_infinity=False)
            nll = torch.nan_to_num(nll, nan=float("inf"))
            score = (1 - w) * score - w * nll
        choice = score.view(num_c, batch).argmax(0)  # (B,)
        pick = choice * batch + torch.arange(batch, device=choice.device)
        orig = counts == 0
        final_counts = torch.where(orig, counts, target[pick])
        return self._result(log_probs[pick], final_counts, out.token_starts[pick], out.token_ends[pick])


class ParaformerSearch:
    """The Paraformer family's decoder (:mod:`asr.decoding` protocol): greedy (predictor or CTC
    firing → CIF → one decoder pass → argmax); spans from the CIF firing frames."""

    family = "paraformer"
    searches = ("greedy",)
    options = ("firing", "length_candidates", "rescore_ctc_weight")

    def __init__(self, model: ParaformerModel, config: DecodeConfig):
        reject_foreign(config, self.family, self.searches, self.options)
        self.model = model
        self.firing, self.length_candidates, self.rescore_ctc_weight = model.inference_options(
            config.firing, config.length_candidates, config.rescore_ctc_weight)

    def decode(self, enc: EncoderOutput, *, wavs=None, names=None, spans: bool = True) -> list[list[TokenHypothesis]]:
        res = self.model.recognize(enc, self.firing, self.length_candidates, self.rescore_ctc_weight)
        names = names or [f"inputs[{b}]" for b in range(len(res.token_ids))]
        out = []
        for b, ids in enumerate(res.token_ids):
            if int(res.token_counts[b]) == 0:
                warn_empty(names, b, f"the Paraformer predictor fired no token ({int(enc.lengths[b])} encoder frames)")
            # CIF frames are (first, firing) inclusive; the protocol's spans end exclusive
            frames = tuple((s, e + 1) for s, e in res.frames[b]) if spans else ()
            out.append([TokenHypothesis(tuple(ids), float(res.scores[b]), frames)])
        return out


__all__ = ["ParaformerModel", "ParaformerResult", "ParaformerSearch"]
