"""A codec trained by ESPnet's GAN codec task (``espnet2.bin.gan_codec_train``: SoundStream,
EnCodec, DAC, ...) behind the tokenizer interface.

    tok = EspnetCodecTokenizer.from_exp("egs/synth_en/codec1/exp/codec_train_codec_smoke")

ESPnet's codecs pad with reflection at the end of the padded batch (non-causal convolutions), so
a padded batch would not give each item its own codes; items are therefore encoded and decoded
one at a time (the batch API is kept; batch == items holds exactly).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional, Union

import torch

from audio_gen.tokenizers.base import AcousticTokenizer, register
from audio_gen.tokenizers.spectral import num_frames
from nar.base.tensors import length_mask
from nar.base.experiment import find_checkpoint

logger = logging.getLogger(__name__)

@register
class EspnetCodecTokenizer(AcousticTokenizer):
    kind = "espnet_codec"

    def __init__(self, codec, config_file: Path, model_file: Path, target_bw: Optional[float] = None):
        super().__init__()
        self.codec = codec.eval()
        self.config_file, self.model_file = Path(config_file), Path(model_file)
        info = codec.meta_info()
        gen = codec.generator
        self.target_bw = target_bw if target_bw is not None else gen.target_bandwidths[-1]
        self.sample_rate = int(info["fs"])
        self._hop = int(info["frame_shift"])
        self.frame_rate = self.sample_rate / self._hop
        self.codebook_size = int(gen.quantizer.bins)
        self.num_codebooks = int(gen.quantizer.get_num_quantizers_for_bandwidth(gen.frame_rate, self.target_bw))

    @property
    def samples_per_frame(self) -> int:
        return self._hop

    @classmethod
    def from_exp(cls, exp_dir: Union[str, Path], model_file: Union[str, Path, None] = None,
                 target_bw: Optional[float] = None) -> "EspnetCodecTokenizer":
        """Load ``<exp_dir>/config.yaml`` and a checkpoint (default: best mel loss, else latest)."""
        from espnet2.tasks.gan_codec import GANCodecTask

        exp = Path(exp_dir)
        config = exp / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{exp}: no config.yaml; is this an ESPnet gan_codec training dir?")
        ckpt = Path(model_file) if model_file else find_checkpoint(exp)
        model, _ = GANCodecTask.build_model_from_file(config, ckpt, "cpu")
        return cls(model.codec, config, ckpt, target_bw)

    def _encode(self, wav, wav_lens):
        n_frames = num_frames(wav_lens, self._hop)
        t = int(n_frames.max())
        out = torch.zeros(wav.shape[0], self.num_codebooks, t, dtype=torch.long, device=wav.device)
        for i in range(wav.shape[0]):
            n = int(wav_lens[i])
            x = torch.nn.functional.pad(wav[i, :n], (0, int(n_frames[i]) * self._hop - n))
            codes = self.codec.generator.encode(x[None, None], target_bw=self.target_bw)  # (K, 1, T)
            out[i, :, : int(n_frames[i])] = codes[:, 0, : int(n_frames[i])]
        return out, n_frames

    def _decode(self, codes, code_lens):
        lens = code_lens * self._hop
        out = torch.zeros(codes.shape[0], int(lens.max()), device=codes.device)
        for i in range(codes.shape[0]):
            y = self.codec.generator.decode(codes[i:i + 1, :, : int(code_lens[i])].transpose(0, 1))
            y = y.reshape(-1)[: int(lens[i])]
            out[i, : y.numel()] = y
        return out * length_mask(lens, out.shape[1]).to(out.dtype), lens

    def _save(self, directory: Path) -> dict:
        for f in (self.config_file, self.model_file):
            if f.resolve().parent != directory.resolve():
                shutil.copyfile(f, directory / f.name)
        return {"config": self.config_file.name, "model_file": self.model_file.name, "target_bw": self.target_bw}

    @classmethod
    def _load(cls, directory: Path, config: dict) -> "EspnetCodecTokenizer":
        from espnet2.tasks.gan_codec import GANCodecTask

        model, _ = GANCodecTask.build_model_from_file(directory / config["config"], directory / config["model_file"], "cpu")
        return cls(model.codec, directory / config["config"], directory / config["model_file"], config.get("target_bw"))
