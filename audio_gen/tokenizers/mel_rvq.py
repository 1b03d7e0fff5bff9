"""Mel-RVQ: the fast offline acoustic tokenizer that needs no GAN training.

Encoding: log-mel frames (``n_mels`` bands, ``hop_length`` samples apart) minus their training
mean, quantised by K residual codebooks learned by k-means on training audio (minutes on a CPU,
``MelRVQTokenizer.fit``). Decoding: the sum of the K codewords is a log-mel frame; a vocoder
turns mel frames back into a waveform. The built-in vocoder is Griffin-Lim (64 fast iterations
from zero phase, deterministic): intelligible but phasey/metallic, since phase is estimated, not
modelled. A trained :class:`audio_gen.tokenizers.vocoder.MelVocoder` (``python -m
audio_gen.bin.train_vocoder``) can be attached (``tokenizer.vocoder``); it is saved with the
tokenizer and used by ``decode`` from then on (``decode_mel(..., vocoder="griffin_lim")`` still
gives the fallback).

Defaults: 16 kHz, n_fft 1024, hop 320 (50 frames/s, the frame rate of MaskGCT's and MAGNeT's
codecs), 100 mel bands, 8 codebooks x 1024. Codebook k refines what codebooks < k left, so the
first codebooks are the coarse ones (decode with K' < K codebooks for a coarser signal).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Optional

import torch

from audio_gen.tokenizers.base import AcousticTokenizer, register
from audio_gen.tokenizers.kmeans import residual_kmeans, rvq_decode, rvq_encode
from audio_gen.tokenizers.spectral import MelFeatureConfig
from audio_gen.tokenizers.vocoder import MelVocoder
from nar.base.files import save_torch
from nar.base.tensors import length_mask

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "codebooks.pt"
VOCODER_FILE = "vocoder.pt"


@dataclass
class MelRVQConfig(MelFeatureConfig):
    """The log-mel features (:class:`MelFeatureConfig`) plus the codebooks and Griffin-Lim."""

    num_codebooks: int = 8
    codebook_size: int = 1024
    #: Griffin-Lim iterations of the built-in vocoder
    griffin_lim_iters: int = 64
    POSITIVE: ClassVar[tuple] = MelFeatureConfig.POSITIVE + ("num_codebooks", "codebook_size")


@register
class MelRVQTokenizer(AcousticTokenizer):
    kind = "mel_rvq"

    def __init__(self, config: MelRVQConfig, codebooks: Optional[torch.Tensor] = None,
                 mean: Optional[torch.Tensor] = None, vocoder: Optional[MelVocoder] = None):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.frame_rate = config.sample_rate / config.hop_length
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        self.spectral = config.spectral()
        shape = (config.num_codebooks, config.codebook_size, config.n_mels)
        if codebooks is not None and tuple(codebooks.shape) != shape:
            raise ValueError(f"MelRVQTokenizer: codebooks of shape {tuple(codebooks.shape)}, config wants {shape}")
        self.register_buffer("codebooks", codebooks.float() if codebooks is not None else torch.zeros(shape))
        self.register_buffer("mean", mean.float() if mean is not None else torch.zeros(config.n_mels))
        self.fitted = codebooks is not None
        self.vocoder: Optional[MelVocoder] = None
        if vocoder is not None:
            self.attach_vocoder(vocoder)

    def attach_vocoder(self, vocoder: MelVocoder) -> None:
        """Use a trained vocoder for ``decode`` (its features must be this tokenizer's)."""
        if vocoder.config.features() != self.config.features():
            raise ValueError(f"MelRVQTokenizer: the vocoder's features {vocoder.config.features()} differ "
                             f"from the tokenizer's {self.config.features()}")
        self.vocoder = vocoder.eval()

    def describe(self) -> str:
        voc = "trained vocoder" if self.vocoder is not None else "Griffin-Lim"
        return f"{super().describe()}, {voc}"

    @property
    def samples_per_frame(self) -> int:
        return self.config.hop_length

    # ---- features --------------------------------------------------------------------------
    def log_mel(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) -> log-mel (B, n_mels, T), frame lengths (B,). Padding frames are log(floor)."""
        return self.spectral.log_mel(wav, wav_lens, self.config.log_floor)

    def _frames(self, log_mel: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """(B, M, T) -> the valid frames (N_valid, M), mean removed."""
        mask = length_mask(n_frames, log_mel.shape[2])
        return log_mel.transpose(1, 2)[mask] - self.mean

    # ---- training --------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        wavs: Iterable[torch.Tensor],
        config: Optional[MelRVQConfig] = None,
        max_frames: int = 150_000,
        iters: int = 15,
        refine_rounds: int = 1,
        seed: int = 0,
        progress: Optional[Callable[[str], None]] = None,
    ) -> "MelRVQTokenizer":
        """Learn the mean and the K codebooks from mono waveforms (N,) at ``config.sample_rate``.

        At most ``max_frames`` frames are used (a seeded random subset of all frames).
        """
        config = config or MelRVQConfig()
        tok = cls(config)
        frames = []
        for w in wavs:
            w = torch.as_tensor(w, dtype=torch.float32).reshape(1, -1)
            if w.shape[1] < config.hop_length:
                continue
            lm, n = tok.log_mel(w, torch.tensor([w.shape[1]]))
            frames.append(lm[0, :, : int(n[0])].T)
        if not frames:
            raise ValueError("MelRVQTokenizer.fit: no training audio (every clip shorter than one frame?)")
        x = torch.cat(frames)
        if x.shape[0] > max_frames:
            gen = torch.Generator().manual_seed(seed)
            x = x[torch.randperm(x.shape[0], generator=gen)[:max_frames]]
        if progress:
            progress(f"fitting {config.num_codebooks} x {config.codebook_size} codebooks on {x.shape[0]} frames")
        mean = x.mean(0)
        books = residual_kmeans(x - mean, config.num_codebooks, config.codebook_size, iters=iters,
                                refine_rounds=refine_rounds, seed=seed, progress=progress)
        return cls(config, books, mean)

    # ---- codec -------------------------------------------------------------------------------
    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError("MelRVQTokenizer: the codebooks are not trained; use MelRVQTokenizer.fit "
                               "or load_tokenizer(<dir>)")

    def _encode(self, wav, wav_lens):
        self._check_fitted()
        lm, n_frames = self.log_mel(wav, wav_lens)
        b, m, t = lm.shape
        x = lm.transpose(1, 2).reshape(b * t, m) - self.mean
        codes = rvq_encode(x, self.codebooks).reshape(b, t, self.num_codebooks).transpose(1, 2)
        codes = codes.masked_fill(~length_mask(n_frames, t)[:, None, :], 0)
        return codes, n_frames

    def codes_to_log_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K', T) -> log-mel (B, n_mels, T) from the first K' codebooks."""
        b, k, t = codes.shape
        flat = codes.transpose(1, 2).reshape(b * t, k)
        x = rvq_decode(flat, self.codebooks[:k]) + self.mean
        return x.reshape(b, t, -1).transpose(1, 2)

    def decode_mel(self, log_mel: torch.Tensor, n_frames: torch.Tensor, vocoder=None):
        """log-mel (B, n_mels, T) -> wav (B, T * hop), wav_lens.

        ``vocoder``: ``None`` = the attached trained vocoder if there is one, else Griffin-Lim;
        ``"griffin_lim"`` = Griffin-Lim; or a callable (mel magnitude, n_frames) -> (wav, lens).
        """
        if vocoder is None and self.vocoder is not None:
            return self.vocoder(log_mel, n_frames)
        mag = torch.exp(log_mel) * length_mask(n_frames, log_mel.shape[2])[:, None, :]
        if callable(vocoder):
            return vocoder(mag, n_frames)
        if vocoder not in (None, "griffin_lim"):
            raise ValueError(f"decode_mel: vocoder must be None, 'griffin_lim' or a callable, got {vocoder!r}")
        lin = self.spectral.mel_to_linear(mag)
        return self.spectral.griffin_lim(lin, n_frames, n_iter=self.config.griffin_lim_iters)

    def _decode(self, codes, code_lens):
        self._check_fitted()
        return self.decode_mel(self.codes_to_log_mel(codes), code_lens)

    # ---- persistence ---------------------------------------------------------------------------
    def _save(self, directory: Path) -> dict:
        self._check_fitted()
        save_torch({"codebooks": self.codebooks.cpu(), "mean": self.mean.cpu()}, directory / WEIGHTS_FILE)
        meta = {"config": asdict(self.config), "weights": WEIGHTS_FILE}
        if self.vocoder is not None:
            save_torch(self.vocoder.state(), directory / VOCODER_FILE)
            meta["vocoder"] = VOCODER_FILE
        return meta

    @classmethod
    def _load(cls, directory: Path, config: dict) -> "MelRVQTokenizer":
        cfg = MelRVQConfig.from_dict(config.get("config", {}))
        wfile = directory / config.get("weights", WEIGHTS_FILE)
        if not wfile.is_file():
            raise FileNotFoundError(f"{directory}: the weights file {wfile.name} is missing")
        state = torch.load(wfile, map_location="cpu", weights_only=True)
        vocoder = None
        if config.get("vocoder"):
            vfile = directory / config["vocoder"]
            if not vfile.is_file():
                raise FileNotFoundError(f"{directory}: tokenizer.json names the vocoder {vfile.name}, which is missing")
            vocoder = MelVocoder.from_state(torch.load(vfile, map_location="cpu", weights_only=True), str(vfile))
        return cls(cfg, state["codebooks"], state["mean"], vocoder=vocoder)
