"""Kaldi-compatible log-mel filterbank with low-frame-rate (LFR) stacking.

The features of FunASR's ``WavFrontend`` (the frontend of its Paraformer models), without the
CMVN step: models converted from FunASR normalise with ESPnet's ``GlobalMVN`` instead (see
:mod:`asr.convert.funasr_paraformer`).

Per utterance, on its own valid samples only:

1. optionally scale the waveform from [-1, 1] to the int16 range (``upscale_samples``), as
   Kaldi-trained feature statistics expect;
2. ``torchaudio.compliance.kaldi.fbank`` (pre-emphasis 0.97, DC removal, power spectrum,
   ``energy_floor = 0``); an utterance shorter than one window is analysed with a window as
   long as the utterance (one frame);
3. LFR: output frame i stacks ``lfr_m`` consecutive fbank frames starting at ``i * lfr_n``
   after left-padding the sequence with ``(lfr_m - 1) // 2`` copies of its first frame; frames
   past the end repeat the last frame. ``ceil(T / lfr_n)`` frames result.

Shapes: B batch, N samples, T fbank frames, T' = ceil(T / lfr_n) LFR frames,
F = n_mels * lfr_m feature dim.
"""

from __future__ import annotations

import math

import torch
import torchaudio.compliance.kaldi as kaldi
from espnet2.asr.frontend.abs_frontend import AbsFrontend

#: window types of ``torchaudio.compliance.kaldi.fbank``
WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman")
#: scale of ``upscale_samples``: [-1, 1] floats to the int16 range
INT16_SCALE = float(1 << 15)


def lfr_stack(feats: torch.Tensor, lfr_m: int, lfr_n: int) -> torch.Tensor:
    """Low-frame-rate stacking of one utterance.

    Args:
        feats: (T, D) frames, T >= 1.
        lfr_m: frames stacked per output frame.
        lfr_n: hop between output frames, in input frames.

    Returns:
        (ceil(T / lfr_n), lfr_m * D): row i is the concatenation of input frames
        ``i * lfr_n - (lfr_m - 1) // 2 + j`` for j in [0, lfr_m), the indices clamped to
        [0, T - 1] (edge frames repeated).
    """
    if feats.dim() != 2 or feats.size(0) == 0:
        raise ValueError(f"lfr_stack needs (T, D) features with T >= 1, got shape {tuple(feats.shape)}")
    if lfr_m == 1 and lfr_n == 1:
        return feats
    frames = feats.size(0)
    out_frames = math.ceil(frames / lfr_n)
    start = torch.arange(out_frames, device=feats.device) * lfr_n - (lfr_m - 1) // 2
    index = (start[:, None] + torch.arange(lfr_m, device=feats.device)).clamp(0, frames - 1)
    return feats[index].reshape(out_frames, lfr_m * feats.size(1))  # (T', lfr_m * D)


class KaldiFbankLFR(AbsFrontend):
    """Kaldi fbank + LFR frontend (FunASR ``WavFrontend`` features, without CMVN).

    Args:
        fs: sample rate in Hz.
        window: window type (``hamming``, ``hanning``, ``povey``, ``rectangular``, ``blackman``).
        n_mels: mel bins.
        frame_length: window length in ms.
        frame_shift: hop in ms.
        lfr_m: fbank frames stacked per output frame (1: no stacking).
        lfr_n: output hop in fbank frames (1: no decimation).
        dither: Kaldi dithering amount; applied in training mode only (inference is
            deterministic).
        snip_edges: Kaldi ``snip-edges`` (True: only frames that fit entirely in the signal).
        upscale_samples: multiply the waveform by 2**15 first (inputs in [-1, 1]).

    ``forward(input (B, N), input_lengths (B,)) -> (feats (B, T', F), lengths (B,))``; each
    utterance is computed on its first ``input_lengths[b]`` samples, the batch is zero-padded.
    """

    def __init__(
        self,
        fs: int = 16000,
        window: str = "hamming",
        n_mels: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        lfr_m: int = 1,
        lfr_n: int = 1,
        dither: float = 0.0,
        snip_edges: bool = True,
        upscale_samples: bool = True,
    ):
        super().__init__()
        if isinstance(fs, bool) or not isinstance(fs, int) or fs <= 0:
            raise ValueError(f"frontend_conf.fs must be a positive integer (Hz), got {fs!r}")
        if window not in WINDOWS:
            raise ValueError(f"frontend_conf.window must be one of {WINDOWS}, got {window!r}")
        if n_mels < 1 or lfr_m < 1 or lfr_n < 1:
            raise ValueError(f"need n_mels, lfr_m, lfr_n >= 1; got {n_mels}, {lfr_m}, {lfr_n}")
        if frame_length <= 0 or frame_shift <= 0:
            raise ValueError(
                f"need frame_length > 0 and frame_shift > 0 (ms); got {frame_length}, {frame_shift}"
            )
        if dither < 0:
            raise ValueError(f"frontend_conf.dither must be >= 0, got {dither}")
        self.fs = fs
        self.window = window
        self.n_mels = n_mels
        self.frame_length = float(frame_length)
        self.frame_shift = float(frame_shift)
        self.lfr_m = lfr_m
        self.lfr_n = lfr_n
        self.dither = float(dither)
        self.snip_edges = bool(snip_edges)
        self.upscale_samples = bool(upscale_samples)

    def output_size(self) -> int:
        """Feature dim F = n_mels * lfr_m."""
        return self.n_mels * self.lfr_m

    def extra_repr(self) -> str:
        return (
            f"fs={self.fs}, window={self.window}, n_mels={self.n_mels}, "
            f"frame_length={self.frame_length}, frame_shift={self.frame_shift}, "
            f"lfr_m={self.lfr_m}, lfr_n={self.lfr_n}"
        )

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """One utterance (N,) with N >= 1 -> log-mel fbank (T, n_mels), before LFR."""
        num = waveform.numel()
        if self.upscale_samples:
            waveform = waveform * INT16_SCALE
        # An utterance shorter than one window is analysed with a window of its own length.
        frame_length = min(self.frame_length, num / self.fs * 1000.0)
        try:
            return kaldi.fbank(
                waveform[None].float(),
                num_mel_bins=self.n_mels,
                frame_length=frame_length,
                frame_shift=self.frame_shift,
                dither=self.dither if self.training else 0.0,
                energy_floor=0.0,
                window_type=self.window,
                sample_frequency=self.fs,
                snip_edges=self.snip_edges,
            )
        except (AssertionError, RuntimeError) as err:  # torchaudio's checks on tiny inputs
            raise ValueError(f"cannot compute fbank features of {num} samples: {err}") from err

    def forward(
        self, input: torch.Tensor, input_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input (B, N) waveforms, input_lengths (B,) -> feats (B, T', F), lengths (B,) int64."""
        if input.dim() != 2:
            raise ValueError(f"KaldiFbankLFR expects input (B, N), got shape {tuple(input.shape)}")
        if input_lengths.dim() != 1 or input_lengths.numel() != input.size(0):
            raise ValueError(
                f"input_lengths must have shape ({input.size(0)},), got {tuple(input_lengths.shape)}"
            )
        feats = []
        for b, n in enumerate(input_lengths.tolist()):
            n = int(n)
            if not 0 < n <= input.size(1):
                raise ValueError(f"input_lengths[{b}] = {n} must be in [1, {input.size(1)}]")
            mat = self.fbank(input[b, :n])
            if mat.size(0) == 0:
                raise ValueError(f"utterance {b} ({n} samples) gives no fbank frame")
            feats.append(lfr_stack(mat, self.lfr_m, self.lfr_n))
        lengths = torch.tensor([f.size(0) for f in feats], dtype=torch.long, device=input.device)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (B, T', F)
        return padded, lengths


__all__ = ["KaldiFbankLFR", "lfr_stack"]
