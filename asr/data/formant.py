"""Formant warping: a new vocal tract for an existing voice, its pitch left alone.

Speed perturbation (resampling) scales pitch, formants and tempo together, as if the same
speaker talked faster and higher. A different speaker differs in vocal-tract length (formant
positions) independently of pitch. :func:`warp_formants` moves the spectral envelope along the
frequency axis by a factor ``alpha`` and keeps the excitation (harmonics, hence f0), the phase
and the timing: ``alpha < 1`` lengthens the vocal tract (formants down), ``alpha > 1`` shortens it.

Method (source-filter split per STFT frame): the smooth envelope ``E(f)`` is the "true
envelope" of the log-magnitude spectrum, cepstral smoothing to the first ``lifter`` coefficients
iterated until the curve rests on the harmonic peaks (for a 16 kHz signal and the default 30
coefficients, structure finer than ~530 Hz, i.e. the harmonics of any f0 below that, is left
out); the frame is multiplied by ``E(f / alpha) / E(f)`` and resynthesised by overlap-add.

Used twice: the synthetic corpus (``asr.data.synth_en --formant_warps``) makes voice variants of
its few flite and festival voices, and :func:`formant_warp_effect` is an ESPnet data-augmentation
effect (``formant_warp`` in ``preprocessor_conf.data_aug_effects``) that warps training audio
online by a random factor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["warp_formants", "formant_warp_effect"]


def _smooth(log_mag: np.ndarray, lifter: int) -> np.ndarray:
    """Each column of ``log_mag`` (bins × frames) liftered to its first ``lifter`` cepstral terms."""
    n_fft = 2 * (log_mag.shape[0] - 1)
    cep = np.fft.irfft(log_mag, n=n_fft, axis=0)
    window = np.zeros(n_fft)
    window[:lifter] = 1.0
    window[n_fft - lifter + 1:] = 1.0  # the real cepstrum is symmetric
    return np.fft.rfft(cep * window[:, None], n=n_fft, axis=0).real


def _frames_envelope(log_mag: np.ndarray, lifter: int, iterations: int = 24) -> np.ndarray:
    """The "true envelope" of each column: the smooth curve through the harmonic peaks.

    Plain cepstral smoothing averages peaks and the deep valleys between harmonics, and loses a
    formant that falls between two (seen on a 110 Hz vowel: F2 vanished). Iterating ``A <- max(A,
    smooth(A))`` lifts the valleys until the smooth curve rests on the peaks (Röbel and Rodet,
    "Efficient spectral envelope estimation and its application to pitch shifting", DAFx 2005).
    """
    target = log_mag
    for _ in range(iterations):
        env = _smooth(target, lifter)
        target = np.maximum(target, env)
    return _smooth(target, lifter)


def warp_formants(audio: np.ndarray, alpha: float, n_fft: int = 1024, hop_length: int = 256,
                  lifter: int = 30, iterations: int = 24) -> np.ndarray:
    """``audio`` (1-D float) with its spectral envelope scaled in frequency by ``alpha``.

    The output has the input's length, dtype and peak level. ``alpha == 1`` returns a copy.
    ``iterations`` of the true-envelope estimate: 12 cost half of 24 and move a synthetic vowel's
    F2 to within 1.5 % of 24's (the online augmentation effect uses 12).

    Raises:
        ValueError: ``alpha`` outside (0.5, 2), a non-1-D or non-finite signal, or a lifter that
            does not fit ``n_fft``.
    """
    import librosa

    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"warp_formants needs a 1-D signal, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("warp_formants: the signal has NaN or infinite samples")
    if not 0.5 < alpha < 2.0:
        raise ValueError(f"formant warp factor {alpha} outside (0.5, 2)")
    if not 1 <= lifter < n_fft // 2:
        raise ValueError(f"lifter {lifter} must be in [1, {n_fft // 2})")
    if alpha == 1.0 or x.size == 0:
        return x.copy()
    xf = x.astype(np.float64)
    pad = max(0, n_fft - xf.size)  # librosa needs at least one full frame
    spec = librosa.stft(np.pad(xf, (0, pad)), n_fft=n_fft, hop_length=hop_length, window="hann")
    env = _frames_envelope(np.log(np.abs(spec) + 1e-8), lifter, iterations)
    bins = np.arange(env.shape[0], dtype=np.float64)
    source = np.minimum(bins / alpha, bins[-1])  # E'(f) = E(f / alpha); past Nyquist: the edge
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, bins.size - 1)
    frac = (source - lo)[:, None]
    warped = (1.0 - frac) * env[lo] + frac * env[hi]
    gain = np.exp(np.clip(warped - env, -20.0, 20.0))
    y = librosa.istft(spec * gain, hop_length=hop_length, window="hann", length=xf.size + pad)
    y = y[:xf.size]
    peak_in, peak_out = float(np.abs(xf).max()), float(np.abs(y).max())
    if peak_out > 0:
        y *= peak_in / peak_out
    return y.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)


def formant_warp_effect(waveform, sample_rate: int, alpha: float | None = None,
                        min_alpha: float = 0.85, max_alpha: float = 1.15, iterations: int = 12):
    """ESPnet data-augmentation effect ``formant_warp`` (registered by :mod:`asr.task`).

    ``alpha`` fixed, or drawn uniformly from ``[min_alpha, max_alpha]`` per call with numpy's
    global RNG (the one ESPnet's ``DataAugmentation`` draws its effects with). Takes and returns
    a 1-D ``torch.Tensor`` like ESPnet's own effects; ``sample_rate`` is unused (the warp is
    relative to Nyquist).
    """
    import torch

    if alpha is None:
        if not 0.5 < min_alpha <= max_alpha < 2.0:
            raise ValueError(f"formant_warp: need 0.5 < min_alpha <= max_alpha < 2, got "
                             f"{min_alpha}, {max_alpha}")
        alpha = float(np.random.uniform(min_alpha, max_alpha))
    x = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    y = warp_formants(x.astype(np.float32, copy=False), alpha, iterations=iterations)
    out = torch.from_numpy(np.ascontiguousarray(y))
    return out.to(waveform.dtype) if isinstance(waveform, torch.Tensor) else out
