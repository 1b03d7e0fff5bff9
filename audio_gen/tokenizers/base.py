"""One interface for acoustic tokenizers (codecs) shared by MAGNeT and MaskGCT.

    codes, code_lens = tok.encode(wav, wav_lens)     # wav (B, N) float, codes (B, K, T) int64
    wav, wav_lens = tok.decode(codes, code_lens)     # wav (B, T * samples_per_frame)

Every tokenizer has ``sample_rate``, ``frame_rate`` (frames per second), ``num_codebooks`` (K),
``codebook_size``; is deterministic; gives a batch the same codes as its items one by one; and
saves to / loads from a directory (``tokenizer.json`` + weights; ``load_tokenizer(dir)``).

Input handling (documented, tested):
- ``sample_rate=`` other than the tokenizer's: resampled, with a log line saying so;
- stereo / (B, C, N) input: rejected (mix down first) — a tokenizer never guesses channels;
- silence: encoded like any signal (codecs must represent pauses);
- clipping (|x| >= 0.999 on more than 0.1 % of an item's samples): encoded, with a warning;
- shorter than one frame, NaN/Inf, lengths out of range: ``ValueError`` naming the item;
- ``decode`` codes out of ``[0, codebook_size)``, more codebooks than the tokenizer has, or a
  non-integer dtype: ``ValueError`` naming the offending value and position.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Union

import torch
import torchaudio

from audio_gen.tokenizers.spectral import clip_ratio
from nar.base.files import write_json
from nar.base.tensors import length_mask

logger = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer.json"
CLIP_WARN_FRACTION = 1e-3


class AcousticTokenizer(torch.nn.Module, ABC):
    """Waveform <-> (B, K, T) discrete codes."""

    #: registry name written to tokenizer.json
    kind: str = ""
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def min_samples(self) -> int:
        """The shortest input (samples) that ``encode`` accepts."""
        return self.samples_per_frame

    # ---- to implement ------------------------------------------------------------------
    @abstractmethod
    def _encode(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked (B, N) float32 at ``sample_rate`` -> codes (B, K, T), code_lens (B,)."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor, code_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked codes (B, K', T), K' <= K -> wav (B, N), wav_lens (B,)."""

    @abstractmethod
    def _save(self, directory: Path) -> dict:
        """Write weights into ``directory``; return the JSON config that ``_load`` reads."""

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, config: dict) -> "AcousticTokenizer":
        """Rebuild from ``directory`` and the JSON config written by ``_save``."""

    # ---- public API ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        wav: torch.Tensor,
        wav_lens: Optional[torch.Tensor] = None,
        sample_rate: Optional[int] = None,
        names: Optional[list[str]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, N) or (N,) float -> codes (B, K, T) int64, code_lens (B,) int64.

        ``T = ceil(N / samples_per_frame)`` per item. ``names`` (one per item, e.g. file paths or
        utterance ids) are used in error messages.
        """
        wav, wav_lens = self.check_audio(wav, wav_lens, sample_rate, names)
        dev = self.device
        codes, code_lens = self._encode(wav.to(dev), wav_lens.to(dev))
        return codes.long(), code_lens.long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, code_lens: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """codes (B, K', T) or (K', T) with K' <= num_codebooks (the first K' codebooks: a
        coarser reconstruction) -> wav (B, N), wav_lens (B,) at ``sample_rate``."""
        codes, code_lens = self.check_codes(codes, code_lens)
        dev = self.device
        return self._decode(codes.to(dev), code_lens.to(dev))

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def save(self, directory: Union[str, Path]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self._save(directory)
        meta = {"type": self.kind, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "num_codebooks": self.num_codebooks, "codebook_size": self.codebook_size, **config}
        write_json(directory / CONFIG_FILE, meta, indent=2)  # last: a directory with a config is complete
        return directory

    def describe(self) -> str:
        return (f"{self.kind}: {self.num_codebooks} codebooks x {self.codebook_size} at "
                f"{self.frame_rate:g} Hz, {self.sample_rate} Hz audio")

    # ---- checks --------------------------------------------------------------------------
    def check_audio(self, wav, wav_lens=None, sample_rate=None, names=None):
        """Validate and normalise encoder input; see the module docs for the rules."""
        if not isinstance(wav, torch.Tensor):
            raise TypeError(f"encode: wav must be a torch.Tensor (B, N), got {type(wav).__name__}")
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2:
            raise ValueError(
                f"encode: wav must be mono (B, N) or (N,), got shape {tuple(wav.shape)}; "
                "mix multi-channel audio down to mono first"
            )
        if not wav.is_floating_point():
            raise ValueError(f"encode: wav must be float samples in [-1, 1], got dtype {wav.dtype}")
        b, n = wav.shape
        names = names or [f"wav[{i}]" for i in range(b)]
        if len(names) != b:
            raise ValueError(f"encode: {len(names)} names for a batch of {b}")
        if wav_lens is None:
            wav_lens = torch.full((b,), n, dtype=torch.long)
        wav_lens = torch.as_tensor(wav_lens).long().cpu()
        if wav_lens.shape != (b,):
            raise ValueError(f"encode: wav_lens must be ({b},), got shape {tuple(wav_lens.shape)}")
        for i in range(b):
            if wav_lens[i] > n or wav_lens[i] < 0:
                raise ValueError(f"encode: {names[i]}: length {int(wav_lens[i])} is outside [0, {n}]")
        wav = wav.float().cpu()
        for i in range(b):
            if not torch.isfinite(wav[i, : wav_lens[i]]).all():
                raise ValueError(f"encode: {names[i]}: the signal contains NaN or Inf")
        if sample_rate is not None and sample_rate != self.sample_rate:
            if sample_rate <= 0:
                raise ValueError(f"encode: sample_rate must be positive, got {sample_rate}")
            logger.warning(f"encode: resampling the input from {sample_rate} Hz to the tokenizer's "
                           f"{self.sample_rate} Hz")
            wav = torchaudio.functional.resample(wav, sample_rate, self.sample_rate)
            wav_lens = torch.div(wav_lens * self.sample_rate + sample_rate - 1, sample_rate, rounding_mode="floor")
            wav_lens = wav_lens.clamp(max=wav.shape[1])
        for i in range(b):
            if wav_lens[i] < self.min_samples:
                raise ValueError(
                    f"encode: {names[i]}: {int(wav_lens[i])} samples is shorter than one frame "
                    f"({self.min_samples} samples = {1000 * self.min_samples / self.sample_rate:.0f} ms "
                    f"at {self.sample_rate} Hz)"
                )
        ratios = clip_ratio(wav, wav_lens)
        for i in torch.nonzero(ratios > CLIP_WARN_FRACTION).flatten().tolist():
            logger.warning(f"encode: {names[i]}: {100 * float(ratios[i]):.2f} % of the samples are "
                           "clipped (|x| >= 0.999); the codes will reproduce the distortion")
        return wav, wav_lens

    def check_codes(self, codes, code_lens=None):
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"decode: codes must be a torch.Tensor (B, K, T), got {type(codes).__name__}")
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3:
            raise ValueError(f"decode: codes must be (B, K, T), got shape {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"decode: codes must be integers, got dtype {codes.dtype}")
        b, k, t = codes.shape
        if not 1 <= k <= self.num_codebooks:
            raise ValueError(f"decode: codes have {k} codebooks; this tokenizer has {self.num_codebooks}")
        if code_lens is None:
            code_lens = torch.full((b,), t, dtype=torch.long)
        code_lens = torch.as_tensor(code_lens).long().cpu()
        if code_lens.shape != (b,) or bool((code_lens < 1).any()) or bool((code_lens > t).any()):
            raise ValueError(f"decode: code_lens must be ({b},) with values in [1, {t}], got {code_lens.tolist()}")
        codes = codes.long().cpu()
        valid = length_mask(code_lens, t)[:, None, :]  # (B, 1, T)
        bad = valid & ((codes < 0) | (codes >= self.codebook_size))
        if bad.any():
            i, kk, tt = torch.nonzero(bad)[0].tolist()
            raise ValueError(
                f"decode: code {int(codes[i, kk, tt])} at item {i}, codebook {kk}, frame {tt} is out of "
                f"range [0, {self.codebook_size}) ({int(bad.sum())} codes out of range in all)"
            )
        # padding past code_lens may hold anything (e.g. a mask id): replace it by 0, and drop
        # frames that no item uses
        codes = codes.masked_fill(~valid, 0)[:, :, : int(code_lens.max())]
        return codes, code_lens


_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make ``cls`` loadable by ``load_tokenizer`` under ``cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def load_tokenizer(directory: Union[str, Path], device: str = "cpu") -> AcousticTokenizer:
    """Load any saved acoustic tokenizer from its directory."""
    directory = Path(directory)
    cfg_file = directory / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; is this a saved tokenizer directory?")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from None
    kind = config.get("type")
    if kind not in _REGISTRY:
        # import the built-in tokenizers so they register
        import audio_gen.tokenizers  # noqa: F401
    if kind not in _REGISTRY:
        raise ValueError(f"{cfg_file}: unknown tokenizer type {kind!r}; known: {sorted(_REGISTRY)}")
    tok = _REGISTRY[kind]._load(directory, config)
    return tok.to(device).eval()
