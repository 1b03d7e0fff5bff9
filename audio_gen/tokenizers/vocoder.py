"""A small trained mel vocoder: ConvNeXt blocks over log-mel frames predict one STFT frame per
mel frame (log magnitude and phase angle), and the inverse STFT gives the waveform.

This is the Vocos idea (Siuzdak, 2023): the network works at the frame rate (50 frames/s for
the mel-RVQ tokenizer's hop of 320 samples) and the iSTFT does the upsampling, so it is cheap
enough to train and run on a CPU, unlike sample-rate vocoders (HiFi-GAN). It replaces the
Griffin-Lim fallback of :class:`audio_gen.tokenizers.mel_rvq.MelRVQTokenizer`, whose phase is
estimated rather than modelled.

Architecture (B batch, M mel bands, T frames, D model width, F = n_fft // 2 + 1):

    log-mel (B, M, T) -> (x - mean) / std -> Conv1d(M, D, k) -> LayerNorm
      -> num_layers x ConvNeXt [depthwise Conv1d(k) -> LayerNorm -> Linear(D, 3D') -> GELU
                                -> Linear -> layer scale -> residual]
      -> LayerNorm -> Linear(D, 2F) -> log |S| (clamped), angle(S)
      -> S = |S| * (cos + i sin) -> iSTFT (the tokenizer's window, n_fft and hop) -> wav (B, T * hop)

Padding frames are zeroed before every convolution and the iSTFT overlap-adds only each
item's own frames, so a batch gives every item the waveform it gets alone.

Training (:mod:`audio_gen.bin.train_vocoder`): random crops of training audio; loss = L1 between
log-mels of output and target + a multi-resolution STFT loss (spectral convergence + L1 of log
magnitudes, :func:`multi_resolution_stft_loss`); optionally adversarial with ESPnet's HiFi-GAN
multi-period discriminator after a warm-up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F

from audio_gen.tokenizers.spectral import MelFeatureConfig
from nar.base.tensors import length_mask

#: largest log magnitude the head may output (|S| <= e^7 ~ 1100; a full-scale sine gives ~256)
MAX_LOG_MAGNITUDE = 7.0


@dataclass
class VocoderConfig(MelFeatureConfig):
    """Feature configuration (:class:`MelFeatureConfig`, must equal the tokenizer's) and
    network size."""

    dim: int = 256
    intermediate_dim: int = 768
    num_layers: int = 8
    kernel_size: int = 7
    POSITIVE: ClassVar[tuple] = MelFeatureConfig.POSITIVE + ("dim", "intermediate_dim", "num_layers")

    def __post_init__(self):
        super().__post_init__()
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"VocoderConfig.kernel_size must be odd, got {self.kernel_size}")


class ConvNeXtBlock(torch.nn.Module):
    """Depthwise conv over time -> LayerNorm -> pointwise MLP (GELU) -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = torch.nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = torch.nn.Linear(dim, intermediate_dim)
        self.pw2 = torch.nn.Linear(intermediate_dim, dim)
        self.gamma = torch.nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, D, T), mask (B, 1, T) float -> (B, D, T), zero on padding."""
        y = self.dwconv(x * mask).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.gamma
        return (x + y.transpose(1, 2)) * mask


class MelVocoder(torch.nn.Module):
    """Log-mel frames -> waveform (see the module docstring)."""

    def __init__(self, config: Optional[VocoderConfig] = None):
        super().__init__()
        self.config = config = config or VocoderConfig()
        self.spectral = config.spectral()
        self.register_buffer("feat_mean", torch.zeros(config.n_mels))
        self.register_buffer("feat_std", torch.ones(config.n_mels))
        k = config.kernel_size
        self.embed = torch.nn.Conv1d(config.n_mels, config.dim, k, padding=k // 2)
        self.norm_in = torch.nn.LayerNorm(config.dim, eps=1e-6)
        self.blocks = torch.nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, k, layer_scale=1.0 / config.num_layers)
            for _ in range(config.num_layers)
        )
        self.norm_out = torch.nn.LayerNorm(config.dim, eps=1e-6)
        self.num_bins = config.n_fft // 2 + 1
        self.head = torch.nn.Linear(config.dim, 2 * self.num_bins)

    # ---- features ----------------------------------------------------------------------------
    def log_mel(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) -> log-mel (B, M, T), frame lengths (B,): the tokenizer's features."""
        return self.spectral.log_mel(wav, wav_lens, self.config.log_floor)

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-band statistics of the training log-mels (fixed before training)."""
        self.feat_mean.copy_(mean.reshape(-1))
        self.feat_std.copy_(std.reshape(-1).clamp(min=1e-3))

    # ---- synthesis ---------------------------------------------------------------------------
    def spectrogram(self, log_mel: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """log-mel (B, M, T), n_frames (B,) -> complex STFT (B, F, T), zero past each length."""
        if log_mel.dim() != 3 or log_mel.shape[1] != self.config.n_mels:
            raise ValueError(f"MelVocoder: log-mel must be (B, {self.config.n_mels}, T), got {tuple(log_mel.shape)}")
        mask = length_mask(n_frames.to(log_mel.device), log_mel.shape[2])[:, None, :].to(log_mel.dtype)
        x = (log_mel - self.feat_mean[:, None]) / self.feat_std[:, None] * mask
        x = self.embed(x) * mask
        x = self.norm_in(x.transpose(1, 2)).transpose(1, 2) * mask
        for block in self.blocks:
            x = block(x, mask)
        out = self.head(self.norm_out(x.transpose(1, 2))).transpose(1, 2)  # (B, 2F, T)
        log_mag, angle = out.split(self.num_bins, dim=1)
        mag = torch.exp(log_mag.clamp(max=MAX_LOG_MAGNITUDE)) * mask
        return torch.polar(mag, angle)

    def forward(self, log_mel: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-mel (B, M, T), n_frames (B,) -> wav (B, T * hop), wav_lens (B,)."""
        return self.spectral.istft(self.spectrogram(log_mel, n_frames), n_frames.to(log_mel.device))

    def vocode_magnitude(self, mel: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel magnitude (B, M, T) (as ``MelRVQTokenizer.decode_mel`` passes it) -> wav, lens."""
        return self(torch.log(mel.clamp(min=self.config.log_floor)), n_frames)

    # ---- persistence -------------------------------------------------------------------------
    def state(self) -> dict:
        return {"config": asdict(self.config), "state_dict": {k: v.cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict, source: str = "vocoder") -> "MelVocoder":
        try:
            cfg = VocoderConfig.from_dict(state["config"])
            model = cls(cfg)
            model.load_state_dict(state["state_dict"])
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: not a MelVocoder checkpoint ({err})") from err
        return model.eval()


# ------------------------------------------------------------------------------ losses
def stft_magnitude(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, N) -> |STFT| (B, F, T), Hann window, centred (training crops are unpadded)."""
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True)
    return spec.abs().clamp(min=1e-7)


def multi_resolution_stft_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    resolutions: Sequence[tuple[int, int]] = ((256, 64), (512, 128), (1024, 256), (2048, 512)),
) -> torch.Tensor:
    """Mean over resolutions (n_fft, hop) of spectral convergence ``||S - S'||_F / ||S||_F`` plus
    the mean L1 distance of log magnitudes. output, target (B, N) with equal shapes."""
    if output.shape != target.shape:
        raise ValueError(f"multi_resolution_stft_loss: shapes differ {tuple(output.shape)} vs {tuple(target.shape)}")
    total = output.new_zeros(())
    for n_fft, hop in resolutions:
        s_out, s_ref = stft_magnitude(output, n_fft, hop), stft_magnitude(target, n_fft, hop)
        convergence = torch.linalg.norm(s_ref - s_out, dim=(1, 2)) / torch.linalg.norm(s_ref, dim=(1, 2))
        total = total + convergence.mean() + (s_ref.log() - s_out.log()).abs().mean()
    return total / len(resolutions)


def mel_l1(vocoder: MelVocoder, output: torch.Tensor, target: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance of the vocoder's log-mels of output and target over the valid frames."""
    lm_out, n = vocoder.log_mel(output, lens)
    lm_ref, _ = vocoder.log_mel(target, lens)
    mask = length_mask(n, lm_ref.shape[2])[:, None, :].to(lm_ref.dtype)
    return ((lm_out - lm_ref).abs() * mask).sum() / (mask.sum() * lm_ref.shape[1]).clamp(min=1)


def log_mel_statistics(log_mels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and standard deviation of (M, T_i) log-mels."""
    x = torch.cat([lm.transpose(0, 1) for lm in log_mels])
    if x.shape[0] < 2:
        raise ValueError("log_mel_statistics: need at least two frames")
    return x.mean(0), x.std(0)


def num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["VocoderConfig", "MelVocoder", "multi_resolution_stft_loss", "mel_l1", "log_mel_statistics",
           "num_parameters", "MAX_LOG_MAGNITUDE"]
