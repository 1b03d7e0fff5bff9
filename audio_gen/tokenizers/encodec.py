"""Real pretrained EnCodec (Défossez et al., 2022) behind the tokenizer interface, from a local file.

The ``encodec`` package builds the model classes; the weights come from a local copy of the
released state dict (``encodec_24khz-d7cc33bc.th``: a ``torch.save``d ``state_dict``), never
from the network. Only the 24 kHz model is supported: it is mono and causal, so a padded batch
gets exactly the codes of its items (the 48 kHz model is stereo and normalises each 1-s segment).

Bandwidth chooses the number of codebooks: 1.5 / 3 / 6 / 12 / 24 kbps -> 2 / 4 / 8 / 16 / 32
codebooks of 1024 at 75 frames/s.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Union

import torch

from audio_gen.tokenizers.base import AcousticTokenizer, register
from audio_gen.tokenizers.spectral import num_frames
from nar.base.files import save_torch
from nar.base.tensors import length_mask

logger = logging.getLogger(__name__)

CHECKPOINT_24KHZ = "encodec_24khz-d7cc33bc.th"
BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)


def _build_24khz():
    try:
        from encodec import EncodecModel
    except ImportError as e:  # pragma: no cover - encodec is a declared dependency
        raise ImportError("the EnCodec tokenizer needs the 'encodec' package (pip install encodec)") from e
    return EncodecModel.encodec_model_24khz(pretrained=False)


def _find_checkpoint(path: Path) -> Path:
    if path.is_dir():
        hits = sorted(path.glob("encodec_24khz*.th")) or sorted(path.glob("*.th"))
        if not hits:
            raise FileNotFoundError(f"{path}: no EnCodec checkpoint (*.th) in this directory")
        return hits[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such EnCodec checkpoint file or directory")
    return path


@register
class EncodecTokenizer(AcousticTokenizer):
    kind = "encodec"

    def __init__(self, model, bandwidth: float = 6.0, checkpoint: Union[str, Path, None] = None):
        super().__init__()
        if bandwidth not in BANDWIDTHS:
            raise ValueError(f"EnCodec: bandwidth {bandwidth} kbps is not one of {BANDWIDTHS}")
        self.model = model.eval()
        self.model.set_target_bandwidth(bandwidth)
        self.bandwidth = bandwidth
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.sample_rate = model.sample_rate
        self.frame_rate = model.frame_rate
        self.num_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, bandwidth)
        self.codebook_size = model.quantizer.bins
        self._hop = model.encoder.hop_length

    @property
    def samples_per_frame(self) -> int:
        return self._hop

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], bandwidth: float = 6.0) -> "EncodecTokenizer":
        """Load the 24 kHz EnCodec from a local checkpoint file (or a directory holding it)."""
        ckpt = _find_checkpoint(Path(path))
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
            raise ValueError(f"{ckpt}: cannot be read as a torch state dict ({type(e).__name__}: {e})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{ckpt}: expected an EnCodec state dict, found a {type(state).__name__}")
        model = _build_24khz()
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{ckpt}: not an EnCodec 24 kHz checkpoint: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
            )
        return cls(model, bandwidth, ckpt)

    def _encode(self, wav, wav_lens):
        n_frames = num_frames(wav_lens, self._hop)
        x = (wav * length_mask(wav_lens, wav.shape[1]).to(wav.dtype))[:, None, :]
        emb = self.model.encoder(x)
        codes = self.model.quantizer.encode(emb, self.model.frame_rate, self.bandwidth).transpose(0, 1)
        t = int(n_frames.max())
        codes = codes[:, :, :t]
        return codes.masked_fill(~length_mask(n_frames, t)[:, None, :], 0), n_frames

    def _decode(self, codes, code_lens):
        emb = self.model.quantizer.decode(codes.transpose(0, 1))
        wav = self.model.decoder(emb)[:, 0, :]
        lens = code_lens * self._hop
        wav = wav[:, : int(lens.max())]
        return wav * length_mask(lens, wav.shape[1]).to(wav.dtype), lens

    def _save(self, directory: Path) -> dict:
        target = directory / CHECKPOINT_24KHZ
        if self.checkpoint is None or not self.checkpoint.is_file():
            save_torch(self.model.state_dict(), target)
        elif self.checkpoint.resolve() != target.resolve():
            shutil.copyfile(self.checkpoint, target)
        return {"checkpoint": target.name, "bandwidth": self.bandwidth}

    @classmethod
    def _load(cls, directory: Path, config: dict) -> "EncodecTokenizer":
        return cls.from_pretrained(directory / config.get("checkpoint", CHECKPOINT_24KHZ),
                                   float(config.get("bandwidth", 6.0)))
