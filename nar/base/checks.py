"""Input validators shared by the core and the families.

Every public function of nar-speech validates what it is given and raises ``TypeError`` (wrong
type or dtype) or ``ValueError`` (wrong value or shape) with a message that names the argument
and the offending value; these helpers are the one implementation of those checks.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

__all__ = ["check_choice", "check_int", "check_integer", "check_lengths", "check_number", "check_range",
           "check_seed", "check_tensor", "check_waveform",
           "MAX_FLOAT_AMPLITUDE"]


def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """``value`` as an int (a bool is not an int here), within ``[minimum, maximum]``.

    Raises:
        TypeError: ``value`` is not an int; ValueError: it is out of range. Both name ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(value: Any, name: str, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 strict: bool = False) -> float:
    """``value`` (int or float, not bool, not NaN) as a float within ``[minimum, maximum]``;
    ``strict``: the bounds themselves are excluded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (strict and value == maximum)):
        raise ValueError(f"{name} must be {'<' if strict else '<='} {maximum}, got {value}")
    return float(value)


def check_range(value: Any, name: str, low: float, high: float, low_open: bool = False, note: str = "") -> float:
    """``value`` (a real number, not a bool) as a float in ``[low, high]`` (``low_open``: ``(low, high]``).

    Raises:
        TypeError: not a number (:func:`nar.base.checks.check_number`'s message). ValueError:
            NaN, an infinity or a value outside the range; the message names ``name``, states the
            range (and ``note``, e.g. what the bounds mean) and quotes the value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        check_number(value, name)  # raises its TypeError for every non-number
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
        raise ValueError(f"{name} must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}]{note}, "
                         f"got {value!r}")
    return v


def check_integer(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """:func:`nar.base.checks.check_int` that also takes numpy integers (not bools, not floats)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    return check_int(value, name, minimum, maximum)


def check_seed(value: Any, name: str) -> int:
    """A seed: an int in the range ``torch.Generator.manual_seed`` accepts."""
    return check_integer(value, name, -(2 ** 63), 2 ** 64 - 1)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a ValueError listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_tensor(value, name: str, ndim: int, kind: str, shape_doc: str) -> Tensor:
    """Check that ``value`` is a tensor of rank ``ndim`` and dtype kind ``kind``.

    ``kind`` is ``"float"`` (floating point), ``"int"`` (integer, not bool) or ``"bool"``.
    ``shape_doc`` (e.g. ``"(B, T, V)"``) is used in the error message. Returns ``value``.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(value.shape)}")
    ok = {
        "float": value.is_floating_point(),
        "int": not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool,
        "bool": value.dtype == torch.bool,
    }[kind]
    if not ok:
        raise TypeError(f"{name} must have a {kind} dtype, got {value.dtype}")
    return value


def check_lengths(lengths, batch: int, max_len: int, name: str = "lengths", device=None) -> Tensor:
    """Validate a (B,) integer lengths tensor with values in [0, max_len]; return it as int64.

    Args:
        lengths (Tensor): shape (B,), integer dtype.
        batch (int): expected B.
        max_len (int): largest allowed value (the padded size of the matching tensor).
        name (str): argument name used in error messages.
        device: device to move the result to (default: unchanged).
    """
    check_tensor(lengths, name, 1, "int", "(B,)")
    if lengths.numel() != batch:
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(lengths.shape)}")
    lengths = lengths.to(device=device if device is not None else lengths.device, dtype=torch.long)
    if batch == 0:
        return lengths
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 0:
        item = int(torch.argmin(lengths))
        raise ValueError(f"{name} must be >= 0, got {name}[{item}] = {lo}")
    if hi > max_len:
        item = int(torch.argmax(lengths))
        raise ValueError(f"{name}[{item}] = {hi} is longer than the padded size {max_len}")
    return lengths




#: a float waveform whose peak exceeds this is taken to be integer samples stored as float
MAX_FLOAT_AMPLITUDE = 1.5

_INT_SCALE = {torch.int16: 32768.0, torch.int32: 2147483648.0}


def check_waveform(value: Any, name: str, allow_silence: bool = True) -> Tensor:
    """A mono waveform (numpy array or tensor of shape (N,), (1, N) or (N, 1)) as float32 (N,) in [-1, 1].

    int16 and int32 samples are rescaled to [-1, 1). A float waveform must already be in that range:
    a peak beyond :data:`MAX_FLOAT_AMPLITUDE` (e.g. ``wav.float()`` of int16 samples, peak ~32767) is
    an error that says so, never silently passed on (it saturates every front end).

    Raises:
        TypeError: not an array/tensor, or a dtype that is neither float nor int16/int32.
        ValueError: more than one channel, empty, NaN/Inf samples, the int16/int32 scale in a float
            array, or (``allow_silence=False``) all zeros. Every message names ``name``.
    """
    try:
        import numpy as np
    except ImportError:  # numpy ships with torch wheels; kept optional for the base layer
        np = None
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu" or value.dtype.itemsize > 8:
            raise TypeError(f"{name}: expected float or int16/int32 samples, got dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a waveform (torch tensor or numpy array), got {type(value).__name__}")
    if not value.is_floating_point() and value.dtype not in _INT_SCALE:
        raise TypeError(f"{name}: expected float or int16/int32 samples, got dtype {value.dtype}")
    if value.dim() == 2 and 1 in value.shape:
        value = value.reshape(-1)
    if value.dim() != 1:
        raise ValueError(f"{name}: expected a mono waveform (N,), got shape {tuple(value.shape)}; "
                         "pick or average a channel first")
    if value.numel() == 0:
        raise ValueError(f"{name}: the waveform is empty (0 samples)")
    if value.dtype in _INT_SCALE:
        wav = value.float() / _INT_SCALE[value.dtype]
        if not allow_silence and not bool(value.any()):
            raise ValueError(f"{name}: the waveform is all zeros (silence)")
        return wav
    wav = value.float()
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name}: the waveform contains NaN or Inf samples")
    peak = float(wav.abs().max())
    if peak > MAX_FLOAT_AMPLITUDE:
        hint = "int16" if peak <= 32768 else "int32"
        raise ValueError(f"{name}: float samples peak at {peak:.6g}, far outside [-1, 1]; this looks like "
                         f"{hint} samples stored as float: divide by {_INT_SCALE[getattr(torch, hint)]:.0f} "
                         f"(or pass the {hint} array itself, which is rescaled)")
    if not allow_silence and peak == 0.0:
        raise ValueError(f"{name}: the waveform is all zeros (silence)")
    return wav
