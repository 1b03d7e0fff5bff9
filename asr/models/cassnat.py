"""CASS-NAT: CTC alignment-based single-step non-autoregressive transformer (Fan et al.).

The CTC head's frame alignment cuts the encoder output into one segment per token; a
source-attention layer turns each segment into a **token-level acoustic embedding** (TAE) and a
bidirectional decoder predicts every token in one pass.

Training (``forward``):

1. encoder → CTC branch loss (final + intermediate CTC, as :class:`asr.models.ctc.CTCModel`);
2. batched Viterbi alignment of the (detached) CTC posteriors to the reference
   (:func:`nar.align.forced_align`), so the alignment has exactly L tokens;
3. trigger mask (:func:`nar.align.trigger_mask`, widened by ``left_trigger`` / ``right_trigger``
   frames): token u may attend the frames of its segment, slot L is the end of sentence;
4. TAE extractor: queries are sinusoidal encodings of the token positions 0..L, keys/values the
   encoder frames, masked by the trigger mask;
5. ``num_self_blocks`` bidirectional self-attention blocks, then ``num_mix_blocks``
   mixed-attention blocks (self-attention + encoder cross-attention), per-token softmax;
   the targets are ``y_1 .. y_L <eos>``.

Loss = ``ctc_weight * CTC + (1 - ctc_weight) * CE + ar_weight * CE_AR`` where CE_AR is the
optional autoregressive head (ESPnet's ``TransformerDecoder`` on the same encoder, teacher
forced), used at inference to rank the alignment samples.

Inference (:meth:`CassNATModel.recognize`): the greedy CTC path (``num_samples=1``), or
``num_samples`` error-based alignment samples (:func:`nar.align.error_based_sampling`, copy 0
greedy) decoded as one batch, the best copy per utterance chosen by the AR head's
teacher-forced mean token log-likelihood (``rank="ar"``) or by the NAR decoder's own mean
log-probability (``rank="nar"``). Token timestamps are the alignment's token segments.

Shapes: B batch, T encoder frames, D model dim, V vocabulary, L tokens, N samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from espnet.nets.pytorch_backend.nets_utils import th_accuracy
from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.decoder_layer import DecoderLayer
from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer
from espnet.nets.pytorch_backend.transformer.label_smoothing_loss import LabelSmoothingLoss
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable

from asr.decoding import DecodeConfig, TokenHypothesis, encode_waveforms, reject_foreign, warn_empty
from asr.models.ctc import CTCModel, EncoderOutput
from asr.models.layers import sinusoidal_positions
from nar.align import error_based_sampling, fits_ctc, forced_align, token_spans, trigger_mask
from nar.base.checks import check_int, check_number
from nar.base.tensors import length_mask

RANKERS = ("ar", "nar")


@torch.no_grad()
def teacher_forced_scores(decoder, enc_hidden: torch.Tensor, enc_lengths: torch.Tensor,
                          hyps: list[list[int]], sos: int, eos: int) -> torch.Tensor:
    """Mean per-token log-likelihood of each ``hyp + <eos>`` under an autoregressive decoder
    (ESPnet ``TransformerDecoder`` interface: ``decoder(hs, hlens, ys_in, ys_in_lens)``), one
    teacher-forced pass for all rows. enc_hidden (R, T, D), enc_lengths (R,), R = len(hyps)."""
    device = enc_hidden.device
    lengths = torch.tensor([len(h) for h in hyps], device=device)
    width = int(lengths.max()) + 1
    ys_in = torch.full((len(hyps), width), eos, dtype=torch.long, device=device)
    ys_out = torch.full((len(hyps), width), -1, dtype=torch.long, device=device)
    ys_in[:, 0] = sos
    for i, h in enumerate(hyps):
        if h:
            t = torch.tensor(h, dtype=torch.long, device=device)
            ys_in[i, 1 : len(h) + 1] = t
            ys_out[i, : len(h)] = t
        ys_out[i, len(h)] = eos
    logits, _ = decoder(enc_hidden, enc_lengths, ys_in, lengths + 1)
    logp = torch.log_softmax(logits.float(), -1)
    tok = logp.gather(-1, ys_out.clamp(min=0)[..., None])[..., 0].masked_fill(ys_out < 0, 0.0)
    return tok.sum(1) / (lengths + 1)


class TAEExtractor(torch.nn.Module):
    """Token-level acoustic embeddings: source attention from token-position queries to the
    encoder frames of each token's trigger segment, then a feed-forward block (pre-norm)."""

    def __init__(self, dim: int, attention_heads: int, linear_units: int, dropout_rate: float,
                 src_attention_dropout_rate: float):
        super().__init__()
        self.dim = dim
        self.norm_q = LayerNorm(dim)
        self.src_attn = MultiHeadedAttention(attention_heads, dim, src_attention_dropout_rate)
        self.norm_ff = LayerNorm(dim)
        self.feed_forward = PositionwiseFeedForward(dim, linear_units, dropout_rate)
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D), mask (B, L + 1, T) bool -> TAE (B, L + 1, D).

        Rows whose mask is all False (padding slots) give the positional query alone plus the
        feed-forward of it; they are masked out downstream.
        """
        slots = mask.size(1)
        query = sinusoidal_positions(slots, self.dim, hidden.device, hidden.dtype)
        query = query[None].expand(hidden.size(0), -1, -1)
        x = query + self.dropout(self.src_attn(self.norm_q(query), hidden, hidden, mask))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


class CassNATDecoder(torch.nn.Module):
    """TAE extractor → self-attention blocks → mixed-attention blocks → output layer.

    Its contract is its own, not ESPnet's ``AbsDecoder``/``ScorerInterface`` (autoregressive
    scorers for a beam search): :meth:`forward` maps a trigger mask to per-slot logits in one
    pass. Registered as ``decoder: cassnat`` in :class:`asr.task.NARASRTask`.

    Args (``decoder_conf``):
        num_self_blocks: bidirectional self-attention blocks over the TAEs (reference: 5).
        num_mix_blocks: blocks of self-attention + encoder cross-attention (reference: 2).
        src_trigger: restrict the mixed blocks' cross-attention to the trigger mask (default:
            the whole utterance).
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_self_blocks: int = 5,
        num_mix_blocks: int = 2,
        dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
        src_trigger: bool = False,
    ):
        super().__init__()
        if num_self_blocks < 0 or num_mix_blocks < 0 or num_self_blocks + num_mix_blocks < 1:
            raise ValueError(
                f"decoder_conf: need num_self_blocks, num_mix_blocks >= 0 and at least one block, "
                f"got {num_self_blocks}, {num_mix_blocks}"
            )
        dim = encoder_output_size
        self.tae = TAEExtractor(dim, attention_heads, linear_units, dropout_rate, src_attention_dropout_rate)
        self.self_blocks = torch.nn.ModuleList(
            EncoderLayer(
                dim,
                MultiHeadedAttention(attention_heads, dim, self_attention_dropout_rate),
                PositionwiseFeedForward(dim, linear_units, dropout_rate),
                dropout_rate,
                normalize_before=True,
            )
            for _ in range(num_self_blocks)
        )
        self.mix_blocks = torch.nn.ModuleList(
            DecoderLayer(
                dim,
                MultiHeadedAttention(attention_heads, dim, self_attention_dropout_rate),
                MultiHeadedAttention(attention_heads, dim, src_attention_dropout_rate),
                PositionwiseFeedForward(dim, linear_units, dropout_rate),
                dropout_rate,
                normalize_before=True,
            )
            for _ in range(num_mix_blocks)
        )
        self.src_trigger = src_trigger
        self.after_norm = LayerNorm(dim)
        self.output_layer = torch.nn.Linear(dim, vocab_size)

    def forward(self, hs_pad: torch.Tensor, hlens: torch.Tensor, trigger: torch.Tensor,
                token_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hs_pad (B, T, D), hlens (B,), trigger (B, L + 1, T) bool, token_lengths (B,) (L_b)
        -> logits (B, L + 1, V) and slot counts (B,) = L_b + 1."""
        slots = token_lengths + 1
        x = self.tae(hs_pad, trigger)
        tgt_mask = length_mask(slots, x.size(1))[:, None, :]  # (B, 1, L + 1)
        for layer in self.self_blocks:
            x, _ = layer(x, tgt_mask)
        if self.src_trigger:
            memory_mask = trigger
        else:
            memory_mask = length_mask(hlens, hs_pad.size(1))[:, None, :]  # (B, 1, T)
        for layer in self.mix_blocks:
            x, _, _, _ = layer(x, tgt_mask, hs_pad, memory_mask)
        return self.output_layer(self.after_norm(x)), slots


@dataclass(frozen=True)
class CassNATResult:
    """Batched output of :meth:`CassNATModel.recognize`.

    Attributes:
        token_ids: per item, the recognised tokens, one per token of the chosen alignment
            (``<eos>`` is never chosen before the last slot; blank and ``<sos>`` removed).
        scores: per item, the chosen copy's ranking score (mean token log-likelihood).
        frames: per item, ``(start, end)`` encoder frames (end exclusive) of each kept token's
            run of frames in the chosen alignment.
        token_counts: (B,) tokens of the chosen alignment (0: the CTC output was empty).
        chosen: (B,) index of the chosen alignment copy (0 = greedy path).
    """

    token_ids: list[list[int]]
    scores: list[float]
    frames: list[list[tuple[int, int]]]
    token_counts: torch.Tensor
    chosen: torch.Tensor


class CassNATModel(CTCModel):
    """Encoder + CTC head + CTC-alignment-based parallel decoder (+ optional AR head).

    Decoding: :meth:`make_decoder` (the :mod:`asr.decoding` protocol) or :meth:`recognize`.

    Built by :class:`asr.task.NARASRTask` from ``model: cassnat`` with ``decoder: cassnat``;
    the remaining keyword arguments come from ``model_conf``.

    Args (model_conf):
        ctc_weight: weight of the CTC branch in (0, 1) (the alignment needs the CTC head).
        interctc_weight: intermediate-CTC share inside the CTC branch.
        left_trigger, right_trigger: widening of each token's trigger segment in frames
            (Improved CASS-NAT: 1 and 1).
        lsm_weight: label smoothing of both cross-entropies.
        length_normalized_loss: normalise the CE losses by tokens instead of utterances.
        ar_weight: weight of the jointly trained AR head (0: no AR head).
        ar_decoder_conf: keyword arguments of ESPnet's ``TransformerDecoder`` for the AR head.
        num_samples, threshold, rank: inference defaults (ESA copies, ESA threshold, ranker).
    """

    family = "cassnat"
    parts = ("decoder",)

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
        decoder: CassNATDecoder,
        ctc_weight: float = 0.5,
        interctc_weight: float = 0.0,
        left_trigger: int = 1,
        right_trigger: int = 1,
        lsm_weight: float = 0.0,
        length_normalized_loss: bool = False,
        ar_weight: float = 0.0,
        ar_decoder_conf: Optional[dict] = None,
        num_samples: int = 1,
        threshold: float = 0.9,
        rank: Optional[str] = None,
        sos: Optional[int] = None,
        eos: Optional[int] = None,
        ignore_id: int = -1,
        blank_id: int = 0,
        report_cer: bool = True,
        extract_feats_in_collect_stats: bool = True,
    ):
        if not 0.0 < ctc_weight < 1.0:
            raise ValueError(f"model_conf.ctc_weight must be in (0, 1) (CASS-NAT aligns with CTC), got {ctc_weight}")
        if not isinstance(decoder, CassNATDecoder):
            raise ValueError(f"model 'cassnat' needs `decoder: cassnat`, got {type(decoder).__name__}")
        for name, value in (("left_trigger", left_trigger), ("right_trigger", right_trigger)):
            check_int(value, f"model_conf.{name}", 0)
        if ar_weight < 0:
            raise ValueError(f"model_conf.ar_weight must be >= 0, got {ar_weight}")
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            ctc=ctc,
            interctc_weight=interctc_weight,
            blank_id=blank_id,
            report_cer=report_cer,
            extract_feats_in_collect_stats=extract_feats_in_collect_stats,
        )
        self.decoder = decoder
        self.ctc_weight = ctc_weight
        self.left_trigger, self.right_trigger = left_trigger, right_trigger
        self.ar_weight = ar_weight
        out_size = encoder.output_size() if postencoder is None else postencoder.output_size()
        self.ar_decoder = None
        if ar_weight > 0:
            self.ar_decoder = TransformerDecoder(
                vocab_size=vocab_size, encoder_output_size=out_size, **(ar_decoder_conf or {})
            )
        elif ar_decoder_conf:
            raise ValueError("model_conf.ar_decoder_conf is given but ar_weight is 0 (no AR head)")
        self.sos = vocab_size - 1 if sos is None else sos
        self.eos = vocab_size - 1 if eos is None else eos
        self.ignore_id = ignore_id
        self.length_normalized_loss = length_normalized_loss
        self.criterion = LabelSmoothingLoss(vocab_size, ignore_id, lsm_weight, length_normalized_loss)
        self.num_samples = num_samples
        self.threshold = threshold
        self.rank = rank
        self.check_inference_options(num_samples, threshold, rank)

    # ---------------------------------------------------------------- options
    def check_inference_options(self, num_samples: int, threshold: float, rank: Optional[str]) -> str:
        """Validate ESA options; return the effective ranker (``None`` → "ar" if there is an AR
        head, else "nar")."""
        check_int(num_samples, "num_samples", 1)
        check_number(threshold, "threshold", 0.0, 1.0)
        if rank is None:
            return "ar" if self.ar_decoder is not None else "nar"
        if rank not in RANKERS:
            raise ValueError(f"rank must be one of {RANKERS}, got {rank!r}")
        if rank == "ar" and self.ar_decoder is None:
            raise ValueError("rank='ar' needs the AR head (model_conf.ar_weight > 0 in training)")
        return rank

    def make_decoder(self, config: DecodeConfig) -> "CassNATSearch":
        """The decode protocol (:mod:`asr.decoding`)."""
        return CassNATSearch(self, config)

    # ---------------------------------------------------------------- building blocks
    def decode_alignment(self, enc_hidden: torch.Tensor, enc_lengths: torch.Tensor,
                         labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frame alignments (B, T) -> NAR log-probs (B, L + 1, V), token counts (B,), trigger
        mask (B, L + 1, T)."""
        mask, counts = trigger_mask(labels, enc_lengths, self.left_trigger, self.right_trigger, self.blank_id)
        logits, _ = self.decoder(enc_hidden, enc_lengths, mask, counts)
        return torch.log_softmax(logits.float(), dim=-1), counts, mask

    def _nar_targets(self, text: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) text padded with -1 -> (B, L + 1) ``y_1 .. y_L <eos>`` padded with ignore_id."""
        ys = torch.nn.functional.pad(text, (0, 1), value=self.ignore_id)
        ys = ys.masked_fill(ys < 0, self.ignore_id)
        ys[torch.arange(ys.size(0), device=ys.device), text_lengths] = self.eos
        return ys

    # ---------------------------------------------------------------- training
    def forward(self, speech, speech_lengths, text, text_lengths, **kwargs):
        """speech (B, N), text (B, L) padded with -1 -> (loss, stats, weight)."""
        text = text[:, : int(text_lengths.max())]
        enc = self.encode(speech, speech_lengths)
        stats: dict = {}
        loss_ctc = self.ctc_branch_loss(enc, text, text_lengths, stats)
        loss_att, acc = self._nar_loss(enc, text, text_lengths)
        stats["loss_att"], stats["acc"] = loss_att.detach(), acc
        loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
        if self.ar_decoder is not None:
            loss_ar, acc_ar = self._ar_loss(enc, text, text_lengths)
            stats["loss_ar"], stats["acc_ar"] = loss_ar.detach(), acc_ar
            loss = loss + self.ar_weight * loss_ar
        if self.report_cer and not self.training:
            stats["cer_ctc"] = self._greedy_token_error_rate(enc, text, text_lengths)
        stats["loss"] = loss.detach()
        return force_gatherable((loss, stats, speech.size(0)), loss.device)

    def viterbi_alignment(self, enc: EncoderOutput, text, text_lengths) -> torch.Tensor:
        """Batched Viterbi alignment (B, T) of the detached CTC posteriors to the reference."""
        with torch.no_grad():
            log_probs = self.ctc_log_probs(enc).float()
            return forced_align(log_probs, enc.lengths, text.clamp(min=0), text_lengths, blank=self.blank_id)[0]

    def _nar_loss(self, enc: EncoderOutput, text, text_lengths):
        ok = fits_ctc(enc.lengths, text, text_lengths)
        if not bool(ok.any()):
            logging.warning("CASS-NAT: no utterance of the batch fits a CTC alignment; CE skipped")
            zero = enc.hidden.sum() * 0.0
            return zero, None
        if not bool(ok.all()):
            logging.warning(f"CASS-NAT: {int((~ok).sum())} utterance(s) longer than their frames; CE skips them")
            enc = EncoderOutput(enc.hidden[ok], enc.lengths[ok], ())
            text, text_lengths = text[ok], text_lengths[ok]
            text = text[:, : int(text_lengths.max())]
        labels = self.viterbi_alignment(enc, text, text_lengths)
        log_probs, counts, _ = self.decode_alignment(enc.hidden, enc.lengths, labels)
        if not torch.equal(counts, text_lengths):  # the Viterbi path has exactly L tokens
            raise RuntimeError(f"CASS-NAT: alignment token counts {counts.tolist()} != {text_lengths.tolist()}")
        ys = self._nar_targets(text, text_lengths)
        loss = self.criterion(log_probs, ys)
        acc = th_accuracy(log_probs.reshape(-1, self.vocab_size), ys, ignore_label=self.ignore_id)
        return loss, torch.tensor(acc)

    def _ar_loss(self, enc: EncoderOutput, text, text_lengths):
        ys_in, ys_out = add_sos_eos(text, self.sos, self.eos, self.ignore_id)
        logits, _ = self.ar_decoder(enc.hidden, enc.lengths, ys_in, text_lengths + 1)
        loss = self.criterion(logits, ys_out)
        acc = th_accuracy(logits.reshape(-1, self.vocab_size), ys_out, ignore_label=self.ignore_id)
        return loss, torch.tensor(acc)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def ar_scores(self, enc_hidden, enc_lengths, hyps: list[list[int]]) -> torch.Tensor:
        """Teacher-forced mean log-likelihood per token of ``hyps + <eos>`` under the AR head."""
        return teacher_forced_scores(self.ar_decoder, enc_hidden, enc_lengths, hyps, self.sos, self.eos)

    @torch.no_grad()
    def recognize(self, enc: EncoderOutput, num_samples: Optional[int] = None,
                  threshold: Optional[float] = None, rank: Optional[str] = None,
                  generator=None, scorer=None) -> CassNATResult:
        """Greedy (``num_samples=1``) or ESA decoding of a padded batch; see the module docstring.

        ``scorer``: optional external ranker for ESA (e.g. a separately trained AR model): called
        with the B * N hypotheses (item-major) and returning (B * N,) scores, higher is better;
        it replaces ``rank``.

        Items whose alignment has no token (empty CTC output) get an empty hypothesis and
        ``token_counts == 0``; items with no encoder frame too.
        """
        num = self.num_samples if num_samples is None else num_samples
        threshold = self.threshold if threshold is None else threshold
        rank = self.check_inference_options(num, threshold, self.rank if rank is None else rank)
        batch = enc.hidden.size(0)
        log_probs = self.ctc_log_probs(enc).float()
        lengths = enc.lengths.clamp(min=1)  # an item with no frame decodes its padding frame, then is emptied
        if num == 1:
            labels = log_probs.argmax(-1)
            labels = labels.masked_fill(~length_mask(lengths, labels.size(1)), self.blank_id)
        else:
            labels, _ = error_based_sampling(log_probs, lengths, num, threshold, self.blank_id, generator)
        hidden = enc.hidden.repeat_interleave(num, 0)
        rep_lengths = lengths.repeat_interleave(num)
        dec_logp, counts, _ = self.decode_alignment(hidden, rep_lengths, labels)
        # The alignment fixes the token count: slots 0 .. L-1 are tokens, slot L is <eos>. An
        # <eos> argmax before slot L would silently drop the rest of the utterance (seen on
        # inputs longer than the training utterances), so <eos> is excluded from those slots.
        token_slot = length_mask(counts, dec_logp.size(1))  # (B * N, L + 1)
        eos_col = torch.zeros(dec_logp.size(-1), dtype=torch.bool, device=dec_logp.device)
        eos_col[self.eos] = True
        dec_logp = dec_logp.masked_fill(token_slot[:, :, None] & eos_col, float("-inf"))
        best_logp, best = dec_logp.max(-1)  # (B * N, L + 1)
        hyps = [best[i, : int(counts[i])].tolist() for i in range(batch * num)]
        slots = counts + 1
        nar = best_logp.masked_fill(~length_mask(slots, best_logp.size(1)), 0.0).sum(1) / slots
        if scorer is not None and num > 1:
            scores = scorer(hyps).to(nar.device).float()
        elif rank == "ar" and num > 1:
            scores = self.ar_scores(hidden, rep_lengths, hyps)
        else:
            scores = nar
        scores = scores.view(batch, num)
        empty = (counts == 0).view(batch, num)
        scores = scores.masked_fill(empty & ~empty.all(1, keepdim=True), float("-inf"))
        if num > 1:  # a copy equal to an earlier one is dropped (its score could differ by rounding)
            copies = labels.view(batch, num, -1)
            same = (copies[:, :, None, :] == copies[:, None, :, :]).all(-1)  # (B, N, N)
            earlier = torch.ones(num, num, dtype=torch.bool, device=same.device).tril(-1)
            scores = scores.masked_fill((same & earlier).any(-1), float("-inf"))
        chosen = scores.argmax(1)  # first maximum: copy 0 (greedy) wins ties
        rows = torch.arange(batch, device=chosen.device) * num + chosen
        segments = token_spans(labels[rows], lengths, blank=self.blank_id)
        special = (self.blank_id, self.sos, self.eos)
        token_ids, out_scores, frames, out_counts = [], [], [], []
        for b in range(batch):
            i = int(rows[b])
            keep = [u for u, t in enumerate(hyps[i]) if t not in special]
            if int(enc.lengths[b]) == 0:
                keep = []
            token_ids.append([hyps[i][u] for u in keep])
            frames.append([(segments[b][u].start, segments[b][u].end) for u in keep])
            out_scores.append(float(scores[b, chosen[b]]))
            out_counts.append(int(counts[i]) if int(enc.lengths[b]) > 0 else 0)
        return CassNATResult(token_ids, out_scores, frames, torch.tensor(out_counts), chosen.cpu())


class CassNATSearch:
    """The CASS-NAT family's decoder (:mod:`asr.decoding` protocol): ``greedy`` (the greedy CTC
    alignment → TAE → one decoder pass) or ``esa`` (``num_samples`` error-based alignment samples
    decoded as one batch, ranked by the AR head, the NAR decoder, or a separately trained AED
    model given as ``rank_model_dir``); spans are the chosen alignment's token segments. Every
    input's samples come from its own generator seeded with ``seed``, so a result does not
    depend on the batch it was decoded in."""

    family = "cassnat"
    searches = ("greedy", "esa")
    options = ("num_samples", "threshold", "rank", "seed", "rank_model_dir")

    def __init__(self, model: CassNATModel, config: DecodeConfig):
        reject_foreign(config, self.family, self.searches, self.options)
        self.model, self.config = model, config
        self.num = config.num_samples if config.search == "esa" else 1
        self.rank = model.check_inference_options(config.num_samples, config.threshold, config.rank)
        self.ranker = None
        if config.rank_model_dir is not None:
            from asr.model_dir import load_asr_model

            device = next(model.parameters()).device
            ranker, _, _ = load_asr_model(config.rank_model_dir, device=str(device))
            if getattr(ranker, "family", None) != "aed":
                raise ValueError(f"rank_model_dir {config.rank_model_dir} must be an AED (model: espnet) dir, "
                                 f"got a {getattr(ranker, 'family', type(ranker).__name__)} model")
            if ranker.token_list != model.token_list:
                raise ValueError(f"rank_model_dir {config.rank_model_dir}: its token list differs from the model's")
            self.ranker = ranker

    def _scorer(self, wavs):
        if self.ranker is None or self.num == 1:
            return None
        if wavs is None:
            raise ValueError("ranking with rank_model_dir needs the waveforms")
        aed = self.ranker
        enc = encode_waveforms(aed, wavs, next(aed.parameters()).device)

        def scorer(hyps):
            return teacher_forced_scores(aed.model.decoder, enc.hidden.repeat_interleave(self.num, 0),
                                         enc.lengths.repeat_interleave(self.num), hyps, aed.sos, aed.eos)
        return scorer

    def decode(self, enc: EncoderOutput, *, wavs=None, names=None, spans: bool = True) -> list[list[TokenHypothesis]]:
        batch = enc.hidden.size(0)
        gens = [torch.Generator(device=enc.hidden.device).manual_seed(self.config.seed) for _ in range(batch)]
        res = self.model.recognize(enc, num_samples=self.num, threshold=self.config.threshold, rank=self.rank,
                                   generator=gens, scorer=self._scorer(wavs))
        names = names or [f"inputs[{b}]" for b in range(batch)]
        out = []
        for b, ids in enumerate(res.token_ids):
            if int(res.token_counts[b]) == 0:
                warn_empty(names, b, f"the CTC alignment has no token ({int(enc.lengths[b])} encoder frames)")
            out.append([TokenHypothesis(tuple(ids), float(res.scores[b]), tuple(res.frames[b]) if spans else ())])
        return out

