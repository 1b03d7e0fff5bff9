"""Batched STFT / iSTFT / log-mel / Griffin-Lim with lengths, where a batch equals its items.

``torch.stft(center=True)`` reflect-pads the end of the *batch*, so the last frames of a short
item in a padded batch differ from the same item alone. Here every item is zero-padded (both
ends, ``n_fft // 2`` samples, like a centred STFT with zero padding) and samples past its length
are zeroed, so frame t of an item only ever sees that item's samples and zeros.

Framing: a signal of N samples has ``T = ceil(N / hop)`` frames, frame t centred on sample
``t * hop``; the inverse gives ``T * hop`` samples (N rounded up to whole frames).
Shapes: wav (B, N), lens (B,); spec (B, F, T) with F = n_fft // 2 + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
import torchaudio
from nar.base.tensors import length_mask


def num_frames(num_samples: torch.Tensor, hop: int) -> torch.Tensor:
    """ceil(N / hop) for a tensor of sample counts."""
    return torch.div(num_samples + hop - 1, hop, rounding_mode="floor")


@dataclass
class MelFeatureConfig:
    """The log-mel features a mel tokenizer encodes and a mel vocoder inverts; configurations
    of both extend it (their features must agree)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 100
    f_min: float = 0.0
    f_max: Optional[float] = None
    #: floor of the mel magnitude before the log (silence maps to log(floor))
    log_floor: float = 1e-5
    #: fields that must be >= 1 (subclasses extend it)
    POSITIVE: ClassVar[tuple] = ("sample_rate", "n_fft", "hop_length", "n_mels")

    def __post_init__(self):
        for f in self.POSITIVE:
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{type(self).__name__}.{f} must be >= 1, got {getattr(self, f)}")

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def features(self) -> dict:
        """The feature options alone (what a tokenizer and its vocoder must share)."""
        return {f.name: getattr(self, f.name) for f in fields(MelFeatureConfig)}

    def spectral(self) -> "Spectral":
        return Spectral(self.sample_rate, self.n_fft, self.hop_length, self.n_mels, self.f_min, self.f_max)


class Spectral(torch.nn.Module):
    """STFT analysis/synthesis and the mel filterbank of one configuration."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                 f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        self.sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fb = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, f_min, f_max if f_max is not None else sample_rate / 2, n_mels, sample_rate
        )  # (F, M)
        self.register_buffer("mel_fb", fb, persistent=False)
        # least-squares inverse of the filterbank (mel -> linear magnitude, clamped at 0 later)
        self.register_buffer("mel_pinv", torch.linalg.pinv(fb.T), persistent=False)  # (F, M)

    def stft(self, wav: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, N), lens (B,) -> complex spec (B, F, T), frame lengths (B,)."""
        n_frames = num_frames(lens, self.hop)
        t_max = int(n_frames.max()) if n_frames.numel() else 0
        half = self.n_fft // 2
        wav = wav * length_mask(lens, wav.shape[1]).to(wav.dtype)
        need = (t_max - 1) * self.hop + self.n_fft  # samples covered by t_max frames
        x = F.pad(wav, (half, max(0, need - half - wav.shape[1])))[:, :need]
        frames = x.unfold(1, self.n_fft, self.hop)  # (B, T, n_fft)
        spec = torch.fft.rfft(frames * self.window, dim=-1).transpose(1, 2)
        spec = spec * length_mask(n_frames, t_max)[:, None, :]
        return spec, n_frames

    def istft(self, spec: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """complex spec (B, F, T), frame lengths (B,) -> wav (B, T * hop), lens = frames * hop.

        Windowed overlap-add divided by the summed squared window (the least-squares inverse of
        ``stft``); samples past each item's length are zero.
        """
        b, _, t = spec.shape
        frames = torch.fft.irfft(spec.transpose(1, 2), n=self.n_fft, dim=-1) * self.window  # (B, T, n_fft)
        total = (t - 1) * self.hop + self.n_fft
        y = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, self.n_fft),
                   stride=(1, self.hop)).reshape(b, total)
        # per item: only its own frames count (frames past its length are absent, not silent)
        present = length_mask(n_frames, t).to(frames.dtype)  # (B, T)
        env = F.fold(self.window.pow(2)[None, :, None] * present[:, None, :], output_size=(1, total),
                     kernel_size=(1, self.n_fft), stride=(1, self.hop)).reshape(b, total)
        y = y / env.clamp(min=1e-8)
        half = self.n_fft // 2
        y = y[:, half:half + t * self.hop]
        lens = n_frames * self.hop
        return y * length_mask(lens, y.shape[1]).to(y.dtype), lens

    def log_mel(self, wav: torch.Tensor, lens: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, N), lens (B,) -> natural-log mel (B, M, T) with the magnitude floored at
        ``floor`` (padding frames are log(floor)), frame lengths (B,)."""
        spec, n_frames = self.stft(wav, lens)
        return torch.log(self.mel(spec.abs()).clamp(min=floor)), n_frames

    def mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, F, T) linear magnitude -> (B, M, T) mel magnitude."""
        return torch.einsum("bft,fm->bmt", magnitude, self.mel_fb)

    def mel_to_linear(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, M, T) mel magnitude -> (B, F, T) linear magnitude (pseudo-inverse, >= 0)."""
        return torch.einsum("fm,bmt->bft", self.mel_pinv, mel).clamp(min=0.0)

    def griffin_lim(self, magnitude: torch.Tensor, n_frames: torch.Tensor, n_iter: int = 64,
                    momentum: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast Griffin-Lim (Perraudin et al. 2013) from (B, F, T) magnitude, zero initial phase
        (deterministic) -> wav (B, T * hop), lens."""
        phase = torch.ones_like(magnitude, dtype=torch.complex64)
        prev = torch.zeros_like(phase)
        lens = n_frames * self.hop
        alpha = momentum / (1.0 + momentum)
        for _ in range(n_iter):
            y, _ = self.istft(magnitude * phase, n_frames)
            rebuilt, _ = self.stft(y, lens)
            phase = rebuilt - alpha * prev
            phase = phase / phase.abs().clamp(min=1e-16)
            prev = rebuilt
        return self.istft(magnitude * phase, n_frames)


def clip_ratio(wav: torch.Tensor, lens: torch.Tensor, level: float = 0.999) -> torch.Tensor:
    """Fraction of samples per item with |x| >= ``level`` (clipping detector). (B,)"""
    mask = length_mask(lens, wav.shape[1])
    hits = ((wav.abs() >= level) & mask).sum(1).float()
    return hits / lens.clamp(min=1).float()


__all__ = ["Spectral", "num_frames", "length_mask", "clip_ratio"]
