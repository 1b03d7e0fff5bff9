"""Total-duration prediction for zero-shot TTS: how many frames should the target take?

MaskGCT's text-to-semantic model generates a sequence of a length fixed in advance. Amphion's
MaskGCT sets it from the prompt's speaking rate::

    target_frames = prompt_frames * n_target / n_prompt          (:func:`rule_frames`)

with ``n`` the number of phone tokens. Frames are in any unit (semantic frames, codec frames,
seconds): the result is in the unit of ``prompt_frames``. We count phone symbols and **not**
the word-boundary token ``"|"`` (Amphion counts whatever its G2P emits, spaces and punctuation
included): a boundary is often no time at all, and excluding it keeps the rule a pure phone rate.

:class:`PhoneDurationModel` refines the rule with one relative weight per phone (``ˈaɪ`` takes
longer than ``ə``; ``|`` gets its own weight, since pauses between words are real time)::

    target_frames = prompt_frames / W(prompt) * W(target),   W(seq) = sum of w_p over seq

Unknown phones weigh 1. The weights are fitted on training utterances ``u`` of speakers ``s``
by minimising ``sum_u (frames_u - r_s(u) * sum_p w_p n_{u,p})^2`` (``n_{u,p}``: count of phone
``p`` in ``u``; ``r_s``: a speaker's rate in frames per unit weight) by alternating least
squares: rates in closed form given the weights, then the weights by a (lightly ridge-
regularised towards 1) linear least-squares solve given the rates, clipped at a floor, then
rescaled so that the mean weight over the training phone tokens (``|`` excluded) is 1.

Shapes: a phone sequence is a list of L symbols; frames are positive floats.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nar.base.files import write_json
from tts.text import BOUNDARY

FORMAT = "nar-speech phone duration model"
FORMAT_VERSION = 1


def _check_phones(name: str, phones: Sequence[str]) -> None:
    if isinstance(phones, str) or not isinstance(phones, Sequence):
        raise TypeError(f"{name} must be a list of phone symbols, got {type(phones).__name__}")
    if len(phones) == 0:
        raise ValueError(f"{name} is empty")


def _check_frames(name: str, frames: float) -> float:
    value = float(frames)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of frames, got {frames!r}")
    return value


def count_phones(phones: Sequence[str]) -> int:
    """Number of phone symbols in ``phones``, the boundary token ``|`` not counted."""
    return sum(1 for p in phones if p != BOUNDARY)


def rule_frames(prompt_phones: Sequence[str], prompt_frames: float, target_phones: Sequence[str]) -> float:
    """Amphion MaskGCT's total-duration rule: ``prompt_frames * n_target / n_prompt``.

    Args:
        prompt_phones: the prompt's phones (L_p,), ``|`` allowed and not counted.
        prompt_frames: the prompt's length (> 0), in any unit.
        target_phones: the target text's phones (L_t,).

    Returns:
        The target length in the unit of ``prompt_frames`` (a float; round it as you need).

    Raises:
        ValueError: an empty phone list (or one with only ``|``), or ``prompt_frames <= 0``.
    """
    _check_phones("prompt_phones", prompt_phones)
    _check_phones("target_phones", target_phones)
    frames = _check_frames("prompt_frames", prompt_frames)
    n_prompt, n_target = count_phones(prompt_phones), count_phones(target_phones)
    if n_prompt == 0:
        raise ValueError(f"prompt_phones has no phone besides {BOUNDARY!r}: {list(prompt_phones)}")
    if n_target == 0:
        raise ValueError(f"target_phones has no phone besides {BOUNDARY!r}: {list(target_phones)}")
    return frames * n_target / n_prompt


@dataclass(frozen=True)
class DurationEval:
    """Mean absolute relative error |predicted - true| / true over ``n`` (prompt, target) pairs."""

    n: int
    rule_mare: float
    model_mare: float


class PhoneDurationModel:
    """Per-phone relative weights for total-duration prediction (see the module docstring).

    Args:
        weights: phone → weight (> 0); ``|`` should have one. Unknown phones weigh 1.
        speaker_rates: speaker → frames per unit weight, as fitted (informative only).
        info: fit statistics, stored with the model.
    """

    def __init__(self, weights: Mapping[str, float], speaker_rates: Mapping[str, float] | None = None,
                 info: Mapping[str, object] | None = None) -> None:
        for p, w in weights.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise ValueError(f"weights[{p!r}] must be a positive number, got {w!r}")
        self.weights = dict(weights)
        self.speaker_rates = dict(speaker_rates or {})
        self.info = dict(info or {})

    def weight(self, phones: Sequence[str]) -> float:
        """W(phones): the sum of the phones' weights (1 for a phone without one)."""
        return float(sum(self.weights.get(p, 1.0) for p in phones))

    def predict(self, prompt_phones: Sequence[str], prompt_frames: float, target_phones: Sequence[str]) -> float:
        """``prompt_frames / W(prompt) * W(target)``, in the unit of ``prompt_frames``.

        Raises:
            ValueError: an empty phone list or ``prompt_frames <= 0``.
        """
        _check_phones("prompt_phones", prompt_phones)
        _check_phones("target_phones", target_phones)
        frames = _check_frames("prompt_frames", prompt_frames)
        return frames / self.weight(prompt_phones) * self.weight(target_phones)

    def evaluate(self, pairs: Iterable[tuple[Sequence[str], float, Sequence[str], float]]) -> DurationEval:
        """Mean absolute relative error of :meth:`predict` and of :func:`rule_frames`.

        Args:
            pairs: ``(prompt_phones, prompt_frames, target_phones, target_frames)`` tuples.
        """
        rule_err, model_err = [], []
        for i, (pp, pf, tp, tf) in enumerate(pairs):
            true = _check_frames(f"pairs[{i}] target_frames", tf)
            rule_err.append(abs(rule_frames(pp, pf, tp) - true) / true)
            model_err.append(abs(self.predict(pp, pf, tp) - true) / true)
        if not rule_err:
            raise ValueError("pairs is empty")
        return DurationEval(len(rule_err), float(np.mean(rule_err)), float(np.mean(model_err)))

    @classmethod
    def fit(cls, phone_seqs: Sequence[Sequence[str]], frames: Sequence[float], speakers: Sequence[str],
            rounds: int = 10, floor: float = 0.05, ridge: float = 1.0) -> PhoneDurationModel:
        """Fit weights and speaker rates by alternating least squares.

        Args:
            phone_seqs: U phone sequences, each with at least one phone besides ``|``.
            frames: U utterance lengths (> 0), any unit.
            speakers: U speaker ids.
            rounds: alternations (rates, then weights).
            floor: weights are clipped to at least this before each rescaling to mean 1.
            ridge: strength of the pull of every weight towards 1, in "observations of one phone";
                it keeps rare phones near 1 and does not move frequent ones.

        Raises:
            ValueError: mismatched lengths, no utterances, a bad sequence or length (named by index).
        """
        if not len(phone_seqs) == len(frames) == len(speakers):
            raise ValueError(f"phone_seqs, frames and speakers differ in length: "
                             f"{len(phone_seqs)}, {len(frames)}, {len(speakers)}")
        if len(phone_seqs) == 0:
            raise ValueError("phone_seqs is empty: nothing to fit")
        if rounds < 1 or floor <= 0 or ridge < 0:
            raise ValueError(f"need rounds >= 1, floor > 0, ridge >= 0; got {rounds}, {floor}, {ridge}")
        for i, seq in enumerate(phone_seqs):
            _check_phones(f"phone_seqs[{i}]", seq)
            if count_phones(seq) == 0:
                raise ValueError(f"phone_seqs[{i}] has no phone besides {BOUNDARY!r}")
        f = np.array([_check_frames(f"frames[{i}]", x) for i, x in enumerate(frames)])  # (U,)
        vocab = sorted({p for seq in phone_seqs for p in seq})
        col = {p: j for j, p in enumerate(vocab)}
        counts = np.zeros((len(phone_seqs), len(vocab)))  # (U, P): n_{u,p}
        for u, seq in enumerate(phone_seqs):
            for p in seq:
                counts[u, col[p]] += 1
        spk_names = sorted(set(speakers))
        spk_index = {s: k for k, s in enumerate(spk_names)}
        spk = np.array([spk_index[s] for s in speakers])  # (U,)
        phone_mass = counts.sum(0) * np.array([p != BOUNDARY for p in vocab])  # (P,) tokens per phone

        w = np.ones(len(vocab))
        for _ in range(rounds):
            r = _speaker_rates(counts @ w, f, spk, len(spk_names))  # (S,)
            w = _solve_weights(counts * r[spk][:, None], f, ridge * float(np.mean(r)) ** 2)
            w = np.maximum(w, floor)
            w = w / (w @ phone_mass / phone_mass.sum())  # mean weight 1 over phone tokens
        r = _speaker_rates(counts @ w, f, spk, len(spk_names))
        pred = r[spk] * (counts @ w)
        info = {"rounds": rounds, "floor": floor, "ridge": ridge, "utterances": len(f),
                "speakers": len(spk_names),
                "fit_mare": float(np.mean(np.abs(pred - f) / f))}
        return cls({p: float(x) for p, x in zip(vocab, w)},
                   {s: float(x) for s, x in zip(spk_names, r)}, info)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as JSON, atomically (temp file + rename)."""
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "boundary": BOUNDARY, "weights": self.weights,
               "speaker_rates": self.speaker_rates, "info": self.info}
        write_json(path, doc, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhoneDurationModel:
        """Read a model written by :meth:`save`; a bad file raises ValueError naming it."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a duration model: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("weights"), dict):
            raise ValueError(f"{path}: not a {FORMAT!r} JSON file")
        if doc.get("boundary", BOUNDARY) != BOUNDARY:
            raise ValueError(f"{path}: boundary token {doc['boundary']!r}, expected {BOUNDARY!r}")
        try:
            return cls(doc["weights"], doc.get("speaker_rates"), doc.get("info"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _speaker_rates(weight_sums: np.ndarray, frames: np.ndarray, spk: np.ndarray, n_spk: int) -> np.ndarray:
    """Least-squares rate per speaker: r_s = sum f_u W_u / sum W_u^2 over the speaker's utterances.
    weight_sums, frames, spk: (U,) -> (S,)."""
    num = np.bincount(spk, weights=frames * weight_sums, minlength=n_spk)
    den = np.bincount(spk, weights=weight_sums ** 2, minlength=n_spk)
    return num / den


def _solve_weights(design: np.ndarray, frames: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_w |design @ w - frames|^2 + ridge |w - 1|^2. design: (U, P), frames: (U,) -> (P,)."""
    n_phones = design.shape[1]
    gram = design.T @ design + ridge * np.eye(n_phones)  # (P, P)
    rhs = design.T @ frames + ridge  # (P,)
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def same_speaker_pairs(utts: Sequence[str], utt2spk: Mapping[str, str]) -> list[tuple[str, str]]:
    """(target, prompt) utterance pairs: each utterance is prompted by the next utterance of the
    same speaker (in sorted order, wrapping around). Speakers with one utterance give no pair.

    Raises:
        ValueError: an utterance missing from ``utt2spk``.
    """
    by_spk: dict[str, list[str]] = {}
    for u in utts:
        if u not in utt2spk:
            raise ValueError(f"utterance {u!r} is not in utt2spk")
        by_spk.setdefault(utt2spk[u], []).append(u)
    pairs = []
    for spk in sorted(by_spk):
        group = sorted(by_spk[spk])
        if len(group) > 1:
            pairs.extend((u, group[(i + 1) % len(group)]) for i, u in enumerate(group))
    return pairs


__all__ = ["DurationEval", "PhoneDurationModel", "count_phones", "rule_frames", "same_speaker_pairs"]
