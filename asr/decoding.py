"""The decode protocol every ASR family implements, and the CTC search family.

A model family plugs into :class:`asr.Speech2Text` through one method, with no change to the
front end::

    decoder = model.make_decoder(config)            # config: DecodeConfig (all decode options)
    nbests = decoder.decode(enc, wavs=..., names=..., spans=True)

* ``config`` (:class:`DecodeConfig`) holds every decode option of every family. A family reads
  the options it uses, rejects the others by name when they differ from their defaults
  (:func:`reject_foreign`), and never writes them onto the ``nn.Module``: ``config.yaml`` stays
  the one description of a model, and model-config values (e.g. Paraformer's ``firing``) are
  only defaults that a ``DecodeConfig`` field given as not-None overrides for this decoder.
* ``decode`` takes the encoder output of one padded batch (:class:`asr.models.ctc.EncoderOutput`,
  the encoder runs once), the waveforms and input names (for a family that needs them, e.g. an
  external ranker, and for warnings), and returns per item its n-best list (best first) of
  :class:`TokenHypothesis`: token ids, a score, and with ``spans=True`` one ``(start, end)`` pair
  of encoder frames per token, **start inclusive, end exclusive** (the convention of
  :class:`nar.align.TokenSpan`). The front end turns frames into seconds and ids into text.

Shapes: B batch, T encoder frames, V vocabulary, L tokens, N samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol, Sequence, Union

import torch

from nar.align import forced_align, token_spans
from nar.base.checks import check_choice, check_int, check_number
from nar.ctc import ctc_greedy_search, ctc_prefix_beam_search

if TYPE_CHECKING:
    from asr.models.ctc import EncoderOutput

#: every search name; each family accepts some of them (its ``searches``)
SEARCHES = ("greedy", "beam", "esa")


@dataclass(frozen=True)
class DecodeConfig:
    """Every decode option of every ASR family (defaults as ESPnet's and the papers').

    Generic: ``search`` (``greedy``, ``beam`` or ``esa``; which a family accepts: its decoder's
    ``searches``), ``beam_size``, ``nbest`` (hypotheses per input; needs ``search="beam"``).

    CTC ``beam``: ``ngram_file`` (ARPA LM, shallow fusion), ``ngram_weight`` (None: 0.5 with a
    file), ``ngram_unit`` (``"token"`` or ``"word"``: a word LM spelled through a lexicon),
    ``oov_penalty`` (word LM: None keeps the vocabulary closed), ``penalty`` (length bonus per
    token; also the AED beam search's).

    AED (the AR baseline): ``ctc_weight`` (CTC prefix score weight), ``penalty``,
    ``maxlenratio`` (maximum output length / encoder frames; 0: frames).

    Paraformer (None: the value in the model's ``config.yaml``): ``firing`` (``"predictor"`` or
    ``"ctc"``), ``length_candidates`` (also decode token counts L-k..L+k), ``rescore_ctc_weight``.

    CASS-NAT ``esa``: ``num_samples`` alignment copies, ``threshold`` (frames whose CTC
    probability is below it are resampled), ``rank`` (``"ar"`` or ``"nar"``; None: ``"ar"`` if the
    model has an AR head), ``seed`` (per-input generators), ``rank_model_dir`` (rank with a
    separately trained AED model instead).
    """

    search: str = "greedy"
    beam_size: int = 10
    nbest: int = 1
    ngram_file: Optional[Union[str, Path]] = None
    ngram_weight: Optional[float] = None
    ngram_unit: str = "token"
    oov_penalty: Optional[float] = None
    penalty: float = 0.0
    ctc_weight: float = 0.3
    maxlenratio: float = 0.0
    firing: Optional[str] = None
    length_candidates: Optional[int] = None
    rescore_ctc_weight: Optional[float] = None
    num_samples: int = 16
    threshold: float = 0.9
    rank: Optional[str] = None
    seed: int = 0
    rank_model_dir: Optional[Union[str, Path]] = None

    def __post_init__(self):
        check_choice(self.search, "search", SEARCHES)
        check_int(self.beam_size, "beam_size", 1)
        check_int(self.nbest, "nbest", 1, self.beam_size)
        if self.nbest > 1 and self.search != "beam":
            raise ValueError(f"nbest={self.nbest} needs search='beam' (got {self.search!r})")
        check_choice(self.ngram_unit, "ngram_unit", ("token", "word"))
        if self.oov_penalty is not None and self.ngram_unit != "word":
            raise ValueError(f"oov_penalty={self.oov_penalty} is an option of ngram_unit='word' (a word LM)")
        check_number(self.penalty, "penalty")
        check_number(self.ctc_weight, "ctc_weight", 0.0, 1.0)
        check_number(self.maxlenratio, "maxlenratio", 0.0)
        check_int(self.seed, "seed")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def changed(self) -> list[str]:
        """Names of the options that differ from their defaults."""
        default = DecodeConfig()
        return [name for name in self.option_names() if getattr(self, name) != getattr(default, name)]


def reject_foreign(config: DecodeConfig, family: str, searches: Sequence[str], accepted: Sequence[str]) -> None:
    """Raise ValueError when ``config`` asks a ``family`` for a search it lacks or sets an
    option it does not read (``accepted``: the option names it reads besides the generic ones)."""
    if config.search not in searches:
        raise ValueError(f"a {family} model decodes with search in {tuple(searches)}, got {config.search!r}")
    generic = ("search", "beam_size", "nbest")
    foreign = [n for n in config.changed() if n not in generic and n not in accepted]
    if foreign:
        raise ValueError(f"decode option(s) {foreign} are not options of a {family} model "
                         f"(its options: {list(generic) + list(accepted)})")


@dataclass(frozen=True)
class TokenHypothesis:
    """One hypothesis of a family's decoder."""

    token_ids: tuple[int, ...]
    score: float  # log-probability scale; families document what it sums
    spans: tuple[tuple[int, int], ...] = ()  # per token (start, end) encoder frames, end exclusive


class BatchDecoder(Protocol):
    """What ``model.make_decoder(config)`` returns."""

    def decode(self, enc: "EncoderOutput", *, wavs: Sequence[torch.Tensor], names: Sequence[str],
               spans: bool) -> list[list[TokenHypothesis]]:
        ...


def warn_empty(names: Sequence[str], b: int, what: str) -> None:
    """The warning every family gives for an input decoded to nothing."""
    warnings.warn(f"{names[b]}: {what}; returning an empty hypothesis", stacklevel=4)


def align_spans(log_probs: torch.Tensor, lengths: torch.Tensor, candidates: Sequence[Sequence[Sequence[int]]],
                blank: int) -> list[list[tuple[tuple[int, int], ...]]]:
    """Token spans of hypotheses by forced alignment on CTC posteriors, all in one batch.

    Args:
        log_probs: (B, T, V) CTC log-probabilities; lengths: (B,).
        candidates: per item b, its hypotheses (token id sequences).

    Returns:
        per item, per hypothesis, one ``(start, end)`` frame pair per token (end exclusive);
        ``()`` for an empty hypothesis.
    """
    result: list[list[tuple]] = [[() for _ in hyps] for hyps in candidates]
    rows = [(b, k, ids) for b, hyps in enumerate(candidates) for k, ids in enumerate(hyps) if len(ids) > 0]
    if not rows:
        return result
    index = torch.tensor([b for b, _, _ in rows])
    targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(list(ids)) for _, _, ids in rows],
                                              batch_first=True, padding_value=blank + 1 if blank == 0 else 0)
    target_lengths = torch.tensor([len(ids) for _, _, ids in rows])
    labels, scores = forced_align(log_probs[index], lengths[index], targets, target_lengths, blank=blank)
    spans = token_spans(labels, lengths[index], scores, blank=blank)
    for (b, k, _), item in zip(rows, spans):
        result[b][k] = tuple((s.start, s.end) for s in item)
    return result


class CTCSearch:
    """The CTC family's decoder: greedy best path or prefix beam search (optionally fused with
    an n-gram LM) on the CTC posteriors; spans by forced alignment of each hypothesis."""

    family = "ctc"
    searches = ("greedy", "beam")
    options = ("ngram_file", "ngram_weight", "ngram_unit", "oov_penalty", "penalty")

    def __init__(self, model, config: DecodeConfig):
        reject_foreign(config, self.family, self.searches, self.options)
        self.model, self.config = model, config
        self.blank = model.blank_id
        self.lm_scorer, self.ngram_weight, self.penalty = None, 0.0, float(config.penalty)
        if config.ngram_file is None:
            if config.ngram_weight:
                raise ValueError(f"ngram_weight={config.ngram_weight} needs ngram_file (an ARPA LM over the "
                                 f"model's tokens, python -m asr.bin.train_ngram)")
            if config.penalty:
                raise ValueError("penalty (length bonus) of the CTC beam search needs an n-gram LM (ngram_file)")
            return
        if config.search != "beam":
            raise ValueError(f"ngram_file is used by the CTC prefix beam search only (search='beam'), "
                             f"got search={config.search!r}")
        weight = 0.5 if config.ngram_weight is None else float(config.ngram_weight)
        if weight <= 0:
            raise ValueError(f"ngram_weight must be > 0 with ngram_file, got {weight}")
        from asr.lm import ArpaError, NgramLM

        lm = NgramLM.load(str(config.ngram_file))
        try:
            self.use_ngram(lm, weight, config.penalty, config.ngram_unit, config.oov_penalty)
        except ArpaError as err:
            raise ArpaError(f"ngram_unit {config.ngram_unit!r}: {err}") from None

    def use_ngram(self, lm, weight: float, penalty: float, unit: str = "token",
                  oov_penalty: Optional[float] = None) -> None:
        """Fuse ``lm`` (an :class:`asr.lm.NgramLM`; None: no LM) into the beam search from now on:
        rank by ``acoustic + weight * lm + penalty * tokens`` (``asr.bin.tune_ngram`` sweeps these
        on one set of posteriors). ``unit="word"``: a word LM through the lexicon of
        :class:`asr.wordlm.WordLMScorer`."""
        self.penalty = float(penalty)
        if lm is None:
            self.lm_scorer, self.ngram_weight = None, 0.0
            return
        bonus = self.penalty / weight  # the scorer's per-token bonus is in LM units
        if unit == "word":
            from asr.wordlm import WordLMScorer

            self.lm_scorer = WordLMScorer(lm, self.model.token_list, length_bonus=bonus, oov_penalty=oov_penalty)
        else:
            self.lm_scorer = lm.scorer(self.model.token_list, length_bonus=bonus)
        self.ngram_weight = float(weight)

    def decode(self, enc: "EncoderOutput", *, wavs=None, names=None, spans: bool = True) -> list[list[TokenHypothesis]]:
        return self.decode_log_probs(self.model.ctc_log_probs(enc), enc.lengths, spans)

    def decode_log_probs(self, log_probs: torch.Tensor, lengths: torch.Tensor,
                         spans: bool = True) -> list[list[TokenHypothesis]]:
        """The search on CTC log-probs (B, T, V) with lengths (B,)."""
        log_probs, lengths = log_probs.float().cpu(), lengths.cpu()
        cfg = self.config
        if cfg.search == "greedy":
            res = ctc_greedy_search(log_probs, lengths, blank=self.blank)
            candidates = [[(tuple(t), float(s))] for t, s in zip(res.tokens, res.scores)]
        elif self.lm_scorer is None:
            beams = ctc_prefix_beam_search(log_probs, lengths, beam_size=cfg.beam_size, blank=self.blank,
                                           nbest=cfg.nbest)
            candidates = [[(h.tokens, h.score) for h in hyps] for hyps in beams]
        else:  # the whole final beam, re-ranked with the LM's end-of-sentence term
            beams = ctc_prefix_beam_search(log_probs, lengths, beam_size=cfg.beam_size, blank=self.blank,
                                           nbest=cfg.beam_size, lm_score_fn=self.lm_scorer,
                                           lm_weight=self.ngram_weight)
            candidates = []
            for hyps in beams:
                ended = [(h.tokens, h.score + self.ngram_weight * self.lm_scorer.end_logprob(h.tokens)) for h in hyps]
                ended.sort(key=lambda x: -x[1])
                candidates.append(ended[: cfg.nbest])
        return with_aligned_spans(candidates, log_probs, lengths, self.blank, spans)


def with_aligned_spans(candidates, log_probs, lengths, blank: int, spans: bool) -> list[list[TokenHypothesis]]:
    """``candidates`` (per item, ``(token_ids, score)`` pairs) as hypotheses, with spans from
    :func:`align_spans` when ``spans``."""
    frames = align_spans(log_probs, lengths, [[ids for ids, _ in hyps] for hyps in candidates], blank) if spans \
        else [[() for _ in hyps] for hyps in candidates]
    return [[TokenHypothesis(tuple(int(i) for i in ids), float(score), frames[b][k])
             for k, (ids, score) in enumerate(hyps)] for b, hyps in enumerate(candidates)]


def encode_waveforms(model, wavs: Sequence[torch.Tensor], device) -> "EncoderOutput":
    """Mono waveforms at the model rate -> the model's :class:`EncoderOutput` (padded batch).

    Features are computed per item (an STFT's edge frames depend on what follows the signal),
    then padded; the encoder ignores padding, so each item's result does not depend on the
    batch it is in.
    """
    feats, lens = [], []
    for wav in wavs:
        x = wav.to(device)[None]
        f, n = model.extract_feats(x, torch.tensor([x.size(1)], device=device))
        feats.append(f[0, : int(n[0])])
        lens.append(int(n[0]))
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return model.encode_feats(padded, torch.tensor(lens, device=device))
