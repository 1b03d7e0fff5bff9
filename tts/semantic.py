"""Semantic tokens: k-means over an intermediate layer of a speech encoder (MaskGCT's recipe with
our own ASR encoder in place of w2v-BERT 2.0).

    feats = ASREncoderFeatures("egs/synth_en/asr1/exp/asr_train_ctc_char", layer=4)
    tok = SemanticTokenizer.fit(feats, wavs, codebook_size=512)
    codes, code_lens = tok.encode(wav, wav_lens)          # (B, T) int64 at feats.frame_rate
    tok.save("exp/semantic"); tok = SemanticTokenizer.load("exp/semantic")

Features come from a *feature source*: :class:`ASREncoderFeatures` (a model trained by our
``asr1`` recipe; the output of encoder block ``layer``, 1-based; 0 = the subsampled input of the
first block) or :class:`TorchScriptFeatures` (any local TorchScript speech encoder with
``forward(wav (B, N), wav_lens (B,)) -> (feats (B, T, D), feat_lens (B,))``). Features are
standardised per dimension with training statistics before k-means. ``encode`` only: MaskGCT
never decodes semantic tokens to audio.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import torch

from audio_gen.tokenizers.kmeans import kmeans, nearest
from nar.base.files import save_torch, write_json
from nar.base.tensors import length_mask

logger = logging.getLogger(__name__)

CONFIG_FILE = "semantic.json"
WEIGHTS_FILE = "kmeans.pt"


class ASREncoderFeatures:
    """Hidden states of block ``layer`` of a trained nar-speech ASR encoder (any family)."""

    kind = "asr_encoder"

    def __init__(self, model_dir: Union[str, Path], layer: int = -1, device: str = "cpu"):
        from asr.inference import Speech2Text  # tts may import asr (docs/architecture.md)

        self.model_dir = Path(model_dir).resolve()
        self.s2t = Speech2Text(self.model_dir, device=device, max_seconds=None, progress=False)
        blocks = self.s2t.model.encoder.encoders
        n = len(blocks)
        if layer < 0:
            layer = n + 1 + layer
        if not 0 <= layer <= n:
            raise ValueError(f"{model_dir}: layer {layer} is outside 0..{n} (the encoder has {n} blocks)")
        self.layer = layer
        self.num_layers = n
        self.sample_rate = self.s2t.sample_rate
        self.frame_rate = 1.0 / self.s2t.frame_shift

    def describe(self) -> dict:
        return {"type": self.kind, "model_dir": str(self.model_dir), "layer": self.layer}

    @torch.no_grad()
    def __call__(self, wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mono waveforms (N,) at ``sample_rate`` -> features (B, T, D), lengths (B,)."""
        feats, enc = encoder_layer_outputs(self.s2t, wavs, [self.layer])
        return feats[self.layer], enc.lengths


@torch.no_grad()
def encoder_layer_outputs(s2t, wavs: Sequence[torch.Tensor], layers: Sequence[int]):
    """Hidden states of encoder blocks ``layers`` (1-based; 0 = the input of block 1) of a
    ``Speech2Text`` model in one padded pass -> ({layer: (B, T, D)}, the EncoderOutput)."""
    blocks = s2t.model.encoder.encoders
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for layer in sorted(set(layers)):
        if not 0 <= layer <= len(blocks):
            raise ValueError(f"layer {layer} is outside 0..{len(blocks)}")

        def hook(module, args, output, layer=layer):
            # ESPnet blocks return (x, mask); rel-pos blocks carry x as (x, pos_emb)
            x = args[0] if layer == 0 else output[0]
            captured[layer] = x[0] if isinstance(x, tuple) else x

        handles.append(blocks[max(layer - 1, 0)].register_forward_hook(hook))
    try:
        enc = s2t.encode(list(wavs))
    finally:
        for h in handles:
            h.remove()
    return captured, enc


class TorchScriptFeatures:
    """Any local TorchScript encoder: ``forward(wav (B, N), wav_lens (B,)) -> (feats (B, T, D),
    feat_lens (B,))`` at ``sample_rate`` Hz in and ``frame_rate`` frames/s out."""

    kind = "torchscript"

    def __init__(self, path: Union[str, Path], sample_rate: int, frame_rate: float, device: str = "cpu"):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"{path}: no such TorchScript encoder file")
        try:
            self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - report any loading failure with the path
            raise ValueError(f"{path}: cannot be loaded as a TorchScript module ({type(e).__name__}: {e})") from None
        self.sample_rate, self.frame_rate, self.device = int(sample_rate), float(frame_rate), device

    def describe(self) -> dict:
        return {"type": self.kind, "path": str(self.path), "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate}

    @torch.no_grad()
    def __call__(self, wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lens = torch.tensor([w.numel() for w in wavs])
        x = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True).to(self.device)
        feats, flens = self.module(x, lens.to(self.device))
        if feats.dim() != 3 or flens.shape != lens.shape:
            raise ValueError(f"{self.path}: expected (feats (B, T, D), lens (B,)), got shapes "
                             f"{tuple(feats.shape)} and {tuple(flens.shape)}")
        return feats, flens


def feature_source(desc: dict, device: str = "cpu"):
    kind = desc.get("type")
    if kind == ASREncoderFeatures.kind:
        return ASREncoderFeatures(desc["model_dir"], int(desc["layer"]), device)
    if kind == TorchScriptFeatures.kind:
        return TorchScriptFeatures(desc["path"], desc["sample_rate"], desc["frame_rate"], device)
    raise ValueError(f"unknown semantic feature source {kind!r}")


class SemanticTokenizer:
    """Speech -> one stream of k-means ids (B, T) over a feature source's frames."""

    def __init__(self, features, codebook: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.features = features
        self.codebook, self.mean, self.std = codebook.float(), mean.float(), std.float()
        self.codebook_size = codebook.shape[0]
        # features=None: a tokenizer of precomputed frames only (quantize, not encode)
        self.sample_rate = getattr(features, "sample_rate", None)
        self.frame_rate = getattr(features, "frame_rate", None)

    @classmethod
    def fit(cls, features, wavs: Iterable[torch.Tensor], codebook_size: int = 512,
            max_frames: int = 200_000, iters: int = 20, batch_size: int = 16, seed: int = 0,
            progress: Optional[Callable[[str], None]] = None) -> "SemanticTokenizer":
        """k-means on the features of ``wavs`` (mono, at ``features.sample_rate``)."""
        frames, batch = [], []

        def flush():
            f, n = features(batch)
            for i in range(f.shape[0]):
                frames.append(f[i, : int(n[i])].float().cpu())
            batch.clear()

        for w in wavs:
            batch.append(torch.as_tensor(w, dtype=torch.float32).reshape(-1))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if not frames:
            raise ValueError("SemanticTokenizer.fit: no training audio")
        return cls.from_frames(features, torch.cat(frames), codebook_size, max_frames, iters, seed, progress)

    @classmethod
    def from_frames(cls, features, frames: torch.Tensor, codebook_size: int = 512, max_frames: int = 200_000,
                    iters: int = 20, seed: int = 0, progress: Optional[Callable[[str], None]] = None,
                    ) -> "SemanticTokenizer":
        """k-means on precomputed feature frames (N, D) (at most ``max_frames``, drawn at random);
        features are standardised per dimension with these frames' statistics first."""
        x = frames.float()
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"SemanticTokenizer.from_frames: frames must be (N, D) with N > 0, got {tuple(x.shape)}")
        if x.shape[0] > max_frames:
            x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]]
        mean, std = x.mean(0), x.std(0).clamp(min=1e-5)
        if progress:
            progress(f"k-means with {codebook_size} clusters on {x.shape[0]} frames of dimension {x.shape[1]}")
        codebook = kmeans((x - mean) / std, codebook_size, iters=iters, seed=seed)
        return cls(features, codebook, mean, std)

    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """Feature frames (..., D) -> nearest codeword ids (...) int64."""
        shape = frames.shape[:-1]
        x = (frames.reshape(-1, frames.shape[-1]).float().cpu() - self.mean) / self.std
        return nearest(x, self.codebook).reshape(shape)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """wav (B, N) or (N,) at ``sample_rate`` -> codes (B, T) int64 (0 past each length), lengths."""
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or not wav.is_floating_point():
            raise ValueError(f"SemanticTokenizer.encode: wav must be float (B, N), got {wav.dtype} {tuple(wav.shape)}")
        if wav_lens is None:
            wav_lens = torch.full((wav.shape[0],), wav.shape[1])
        items = [wav[i, : int(wav_lens[i])] for i in range(wav.shape[0])]
        return self.encode_list(items)

    @torch.no_grad()
    def encode_list(self, wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        f, n = self.features(list(wavs))
        b, t, d = f.shape
        codes = self.quantize(f)  # (B, T)
        valid = length_mask(n.cpu(), t)
        return codes.masked_fill(~valid, 0), n.cpu().long()

    def save(self, directory: Union[str, Path]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_torch({"codebook": self.codebook, "mean": self.mean, "std": self.std}, directory / WEIGHTS_FILE)
        meta = {"type": "kmeans", "codebook_size": self.codebook_size, "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate, "features": self.features.describe(), "weights": WEIGHTS_FILE}
        write_json(directory / CONFIG_FILE, meta, indent=2)
        return directory

    @classmethod
    def load(cls, directory: Union[str, Path], device: str = "cpu", features=None) -> "SemanticTokenizer":
        """Load a saved tokenizer; ``features`` overrides the saved feature source (e.g. when the
        ASR model directory moved)."""
        directory = Path(directory)
        cfg = directory / CONFIG_FILE
        if not cfg.is_file():
            raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; is this a saved semantic tokenizer?")
        meta = json.loads(cfg.read_text())
        state = torch.load(directory / meta.get("weights", WEIGHTS_FILE), map_location="cpu", weights_only=True)
        if features is None:
            try:
                features = feature_source(meta["features"], device)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{cfg}: its feature source is missing ({e}); pass features=") from None
        return cls(features, state["codebook"], state["mean"], state["std"])


def purity(codes: torch.Tensor, labels: torch.Tensor, num_codes: int, num_labels: int) -> float:
    """Cluster purity: the fraction of frames whose label is the most frequent label of their code.

    codes, labels: (N,) int64 over the same frames. 1.0 = every code maps to one label.
    """
    if codes.shape != labels.shape:
        raise ValueError(f"purity: codes {tuple(codes.shape)} and labels {tuple(labels.shape)} differ")
    if codes.numel() == 0:
        raise ValueError("purity: no frames")
    joint = torch.zeros(num_codes * num_labels, dtype=torch.long)
    joint.index_add_(0, codes * num_labels + labels, torch.ones_like(codes))
    return float(joint.reshape(num_codes, num_labels).max(1).values.sum()) / codes.numel()


def label_purity(codes: torch.Tensor, labels: torch.Tensor, num_codes: int, num_labels: int,
                 ) -> float:
    """Label purity (the other direction): the fraction of frames whose code is the most
    frequent code of their label."""
    return purity(labels, codes, num_labels, num_codes)


__all__ = ["SemanticTokenizer", "ASREncoderFeatures", "TorchScriptFeatures", "purity", "label_purity"]
