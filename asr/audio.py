"""Audio for recognition: files read as mono float32 at the model rate (:func:`load_audio`), and
inference inputs (a path, a numpy array or a tensor) checked and made mono float32.

Every problem is reported with the input's name (the file path, or ``inputs[i]``).
Shapes: N samples.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch

from nar.base.checks import check_int, check_waveform

logger = logging.getLogger(__name__)

AudioInput = Union[str, Path, np.ndarray, torch.Tensor]


class AudioFileError(ValueError):
    """An audio file is missing, unreadable or unusable; the message names the file."""


def load_audio(path: str, target_sr: int | None = 16000,
               allow_multichannel: bool = False) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1], resampled to ``target_sr``.

    Args:
        path: audio file (any format libsndfile reads).
        target_sr: output sample rate; another rate is resampled with a warning naming
            the file (torchaudio, else soxr, else scipy); ``None`` keeps the file's rate.
        allow_multichannel: average the channels of a multichannel file instead of
            raising.

    Returns:
        samples: shape (T,), float32.

    Raises:
        AudioFileError: the file is missing, unreadable, empty, all zeros, contains
            NaN/Inf, is multichannel (unless allowed) or cannot be resampled.
    """
    if not os.path.isfile(path):
        raise AudioFileError(f"{path}: audio file missing")
    check_not_truncated(path)
    try:
        declared = sf.info(path).frames
        audio, sr = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    except Exception as e:  # libsndfile raises its own error types
        raise AudioFileError(f"{path}: cannot read audio ({e}); a truncated or corrupt file?") from e
    if audio.shape[0] == 0:
        raise AudioFileError(f"{path}: audio is empty (0 samples)")
    if 0 < audio.shape[0] < declared:
        raise AudioFileError(f"{path}: truncated: its header declares {declared} samples but only "
                             f"{audio.shape[0]} could be read (an interrupted copy or download?)")
    if not np.isfinite(audio).all():
        raise AudioFileError(f"{path}: audio contains NaN or Inf samples")
    if audio.shape[1] > 1:
        if not allow_multichannel:
            raise AudioFileError(
                f"{path}: audio has {audio.shape[1]} channels, expected mono; downmix it "
                f"(sox {path} -c 1 out.wav) or pass allow_multichannel=True to average them")
        audio = audio.mean(axis=1, keepdims=True)
    audio = audio[:, 0]  # (T,)
    if not np.any(audio):
        raise AudioFileError(f"{path}: audio is all zeros (silent)")
    if target_sr is not None and sr != target_sr:
        logger.warning("%s: sample rate %d Hz, resampling to %d Hz", path, sr, target_sr)
        audio = resample(audio, sr, target_sr, path=path)
    return np.ascontiguousarray(audio, dtype=np.float32)


#: RIFF data sizes that mean "unknown length" (streamed WAV writers), never a truncation
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


def check_not_truncated(path: str) -> None:
    """Raise :class:`AudioFileError` if ``path`` is a WAV file whose ``data`` chunk declares more
    bytes than the file holds (libsndfile reads what is there without a word: a wav cut in the
    middle would be decoded as its first half). Other formats are checked by decoding
    (:func:`load_audio` compares the frames read with the header's count)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            size = os.fstat(f.fileno()).st_size
            block = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return  # no data chunk: libsndfile reports that itself
                cid, csize = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = f.read(min(csize, 16))
                    block = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
                    f.seek(csize - len(fmt) + (csize & 1), os.SEEK_CUR)
                    continue
                if cid == b"data":
                    if csize in _UNKNOWN_SIZES:
                        return
                    held = size - f.tell()
                    if held < csize:
                        unit = block if block > 0 else 1
                        raise AudioFileError(
                            f"{path}: truncated: the WAV header declares {csize // unit} samples ({csize} bytes of "
                            f"audio) but the file holds {held // unit} ({held} bytes); it was cut short (an "
                            f"interrupted copy or download?)")
                    return
                f.seek(csize + (csize & 1), os.SEEK_CUR)
    except OSError as e:
        raise AudioFileError(f"{path}: cannot read audio ({e})") from e


def resample(audio: np.ndarray, orig_sr: int, target_sr: int, path: str = "<array>") -> np.ndarray:
    """Resample ``audio`` (shape (T,)) with torchaudio, soxr or scipy, whichever imports."""
    try:
        import torch
        import torchaudio.functional as taf
    except Exception:  # torchaudio missing or broken (e.g. a CPU wheel without its libs)
        pass
    else:
        return taf.resample(torch.from_numpy(audio), orig_sr, target_sr).numpy()
    try:
        import soxr
    except ImportError:
        pass
    else:
        return soxr.resample(audio, orig_sr, target_sr).astype(np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:
        raise AudioFileError(f"{path}: sample rate {orig_sr} Hz needs resampling to "
                             f"{target_sr} Hz but none of torchaudio, soxr, scipy imports; "
                             f"convert it: sox {path} -r {target_sr} out.wav") from None
    g = gcd(orig_sr, target_sr)
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def check_signal(wav, name: str) -> torch.Tensor:
    """A mono float32 signal (N,) from a tensor or array: int16/int32 rescaled, float checked to be in
    [-1, 1] (a peak beyond 1.5 "looks like int16"), non-empty, finite, not all zero."""
    try:
        return check_waveform(wav, name, allow_silence=False)
    except ValueError as err:
        if "all zeros" in str(err):
            raise ValueError(f"{name}: the signal is all zeros (silence): nothing to recognise") from None
        raise


def as_waveform(
    x: AudioInput, model_rate: int, sample_rate: int | None = None, name: str = "input"
) -> torch.Tensor:
    """Any supported input -> checked mono float32 tensor (N,) at ``model_rate``.

    Arrays and tensors are taken to be at ``sample_rate`` (default: the model's rate), which
    must be a positive integer.
    """
    if isinstance(x, (str, Path)):
        # checks the file (missing, unreadable, empty, NaN, silent, stereo) and resamples
        return torch.from_numpy(load_audio(str(x), target_sr=model_rate))
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a path, numpy array or torch tensor, got {type(x).__name__}")
    if sample_rate is not None:
        try:
            check_int(sample_rate, "sample_rate", 1)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name}: {err} (samples per second, e.g. 16000)") from None
    wav = check_signal(x, name)
    rate = model_rate if sample_rate is None else sample_rate
    if rate != model_rate:
        logger.warning(f"{name}: resampling from {rate} Hz to the model's {model_rate} Hz")
        wav = torch.from_numpy(resample(wav.numpy(), rate, model_rate, path=name))
    return wav
