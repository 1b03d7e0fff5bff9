"""Test-time vocal-tract normalisation: one formant-warp factor per speaker, chosen unsupervised.

A voice the model never heard often differs from the training voices mostly in vocal-tract
length (where its formants sit). Maximum-likelihood VTLN (Lee & Rose, 1996; Kaldi's ``lvtln``,
HTK's ``WARPFREQ``) picks, per test speaker, the frequency-warp factor under which the model
finds that speaker's speech most probable, and decodes the speaker's audio warped by it. Here
the warp is :func:`asr.data.formant.warp_formants` (the spectral envelope moved by ``alpha``,
pitch and timing kept, the same warp the corpus uses for voice variants), and "most probable"
is the decoder's own score: every utterance of the speaker is decoded at every candidate factor
and the factor with the highest mean best-hypothesis score per second of audio wins (greedy:
the best path's log-probability; beam search with an LM: the fused ranking score). No
transcript is used; the choice depends only on the speaker's own audio, and a speaker's result
does not depend on other speakers.

The default grid, 0.85 to 1.25 in steps of 0.05, is the warp range Kaldi's linear-VTLN
recipes search. Cost: one decoding pass per factor (``len(factors)`` times plain decoding) plus
the warps.

Recipes use it through the decode config key ``speaker_warps`` (``asr.bin.decode`` groups the
utterances by ``utt2spk`` and writes the chosen factors to ``spk2warp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from asr.data.formant import warp_formants

#: Kaldi's linear-VTLN search range (0.85-1.25), step 0.05
DEFAULT_WARPS = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25)


def check_warps(factors, name: str = "speaker_warps") -> tuple[float, ...]:
    """Validated candidate factors (a non-empty list of numbers in (0.5, 2))."""
    if isinstance(factors, (int, float)) or not factors:
        raise ValueError(f"{name} must be a non-empty list of warp factors (e.g. {list(DEFAULT_WARPS)}), "
                         f"got {factors!r}")
    out = []
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.5 < float(f) < 2.0:
            raise ValueError(f"{name}: every factor must be a number in (0.5, 2), got {f!r}")
        out.append(float(f))
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: factors repeat: {factors}")
    return tuple(out)


@dataclass
class WarpChoice:
    """The outcome for one speaker: the chosen factor, its hypotheses (n-best lists, input order),
    the positions of its utterances in the input, and the criterion (mean score per second) at
    every factor tried."""

    alpha: float
    hyps: list
    indices: list = field(default_factory=list)
    criterion: dict = field(default_factory=dict)


def warp_waveform(wav: torch.Tensor, alpha: float) -> torch.Tensor:
    """A 1-D float waveform with its formants warped by ``alpha`` (1.0: returned as is)."""
    if alpha == 1.0:
        return wav
    out = warp_formants(wav.detach().cpu().numpy().astype(np.float32, copy=False), alpha)
    return torch.from_numpy(np.ascontiguousarray(out)).to(wav.dtype)


def choose_warps(
    recognize_nbest: Callable[[list], list],
    wavs: Sequence[torch.Tensor],
    speakers: Sequence,
    sample_rate: int,
    factors: Sequence[float] = DEFAULT_WARPS,
    warp: Callable[[torch.Tensor, float], torch.Tensor] = warp_waveform,
    progress: Optional[Callable[[float], None]] = None,
) -> dict:
    """Per speaker, the factor whose decoding of that speaker's waveforms scores best.

    Every factor is one decoding pass over all waveforms (batched across speakers, which leaves
    each result unchanged: a batch decodes as its items); the choice for a speaker looks only at
    its own utterances. Returns ``{speaker: WarpChoice}`` with the hypotheses in input order.

    Args:
        recognize_nbest: decodes a list of waveforms to n-best lists of hypotheses with a
            ``score`` (:meth:`asr.Speech2Text.recognize_nbest`).
        wavs: 1-D waveforms at ``sample_rate``; ``speakers``: the speaker of each.
        factors: candidate warp factors; ties go to the one closest to 1 (no warp), then the
            first listed.
        warp: the warp function (``warp_waveform``; replaceable for tests).
        progress: called with each factor before it is decoded.
    """
    factors = check_warps(list(factors))
    if not wavs:
        raise ValueError("choose_warps: no utterances")
    if len(speakers) != len(wavs):
        raise ValueError(f"choose_warps: {len(wavs)} waveforms but {len(speakers)} speakers")
    groups: dict = {}
    for i, spk in enumerate(speakers):
        groups.setdefault(spk, []).append(i)
    seconds = [max(w.numel() / sample_rate, 1e-3) for w in wavs]
    criterion = {spk: {} for spk in groups}
    best: dict = {}
    for alpha in factors:
        if progress is not None:
            progress(alpha)
        hyps = recognize_nbest([warp(w, alpha) for w in wavs])
        for spk, idx in groups.items():
            value = float(np.mean([hyps[i][0].score / seconds[i] for i in idx]))
            criterion[spk][alpha] = value
            old = best.get(spk)
            if old is None or (value, -abs(alpha - 1.0)) > (criterion[spk][old.alpha], -abs(old.alpha - 1.0)):
                best[spk] = WarpChoice(alpha, [hyps[i] for i in idx], idx)
    for spk, choice in best.items():
        choice.criterion = criterion[spk]
    return best


def choose_speaker_warp(
    recognize_nbest: Callable[[list], list],
    wavs: Sequence[torch.Tensor],
    sample_rate: int,
    factors: Sequence[float] = DEFAULT_WARPS,
    warp: Callable[[torch.Tensor, float], torch.Tensor] = warp_waveform,
    progress: Optional[Callable[[float], None]] = None,
) -> WarpChoice:
    """:func:`choose_warps` for the waveforms of one speaker."""
    if not wavs:
        raise ValueError("choose_speaker_warp: the speaker has no utterances")
    return choose_warps(recognize_nbest, wavs, [0] * len(wavs), sample_rate, factors, warp, progress)[0]


__all__ = ["DEFAULT_WARPS", "WarpChoice", "check_warps", "choose_speaker_warp", "choose_warps", "warp_waveform"]
