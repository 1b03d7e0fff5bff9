"""Audio inputs for inference: a path, a numpy array or a tensor, checked and made mono float32.

Every problem is reported with the input's name (the file path, or ``inputs[i]``).
Shapes: N samples.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np
import torch

from asr.data.kaldi import load_audio, resample

logger = logging.getLogger(__name__)

AudioInput = Union[str, Path, np.ndarray, torch.Tensor]


def check_signal(wav: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a 1-D signal (N,): non-empty, finite, not all zero. Returns it as float32."""
    if wav.dim() != 1:
        raise ValueError(f"{name}: expected a mono 1-D signal, got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise ValueError(f"{name}: the signal is empty")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name}: the signal contains NaN or Inf values")
    if not bool((wav != 0).any()):
        raise ValueError(f"{name}: the signal is all zeros (silence): nothing to recognise")
    return wav.float()


def _from_array(x: Union[np.ndarray, torch.Tensor], name: str) -> torch.Tensor:
    wav = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    if not (wav.is_floating_point() or wav.dtype in (torch.int16, torch.int32)):
        raise TypeError(f"{name}: expected float or int16/int32 samples, got dtype {wav.dtype}")
    if wav.dtype == torch.int16:
        wav = wav.float() / 32768.0
    elif wav.dtype == torch.int32:
        wav = wav.float() / 2147483648.0
    if wav.dim() == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    elif wav.dim() != 1:
        raise ValueError(
            f"{name}: expected a mono signal (N,), got shape {tuple(wav.shape)}; "
            "for multi-channel audio pick or average a channel first"
        )
    return wav


def as_waveform(
    x: AudioInput, model_rate: int, sample_rate: int | None = None, name: str = "input"
) -> torch.Tensor:
    """Any supported input -> checked mono float32 tensor (N,) at ``model_rate``.

    Arrays and tensors are taken to be at ``sample_rate`` (default: the model's rate).
    """
    if isinstance(x, (str, Path)):
        # checks the file (missing, unreadable, empty, NaN, silent, stereo) and resamples
        return torch.from_numpy(load_audio(str(x), target_sr=model_rate))
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a path, numpy array or torch tensor, got {type(x).__name__}")
    wav = check_signal(_from_array(x, name), name)
    rate = sample_rate or model_rate
    if rate <= 0:
        raise ValueError(f"{name}: sample_rate must be positive, got {rate}")
    if rate != model_rate:
        logger.warning(f"{name}: resampling from {rate} Hz to the model's {model_rate} Hz")
        wav = torch.from_numpy(resample(wav.numpy(), rate, model_rate, path=name))
    return wav
