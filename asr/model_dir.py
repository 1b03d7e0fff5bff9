"""ASR experiment directories: the resolved ``config.yaml``, the checkpoint, the model built
from them, and the rates a front end needs (sample rate, seconds per encoder frame).

The checkpoint is chosen by the one preference order of :mod:`nar.base.experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch
from espnet2.asr.espnet_model import ESPnetASRModel

from asr.models.aed import AEDAdapter
from asr.task import NARASRTask
from nar.base.experiment import find_checkpoint, load_weights, read_config

#: keys of config.yaml that building a model reads
REQUIRED_CONFIG_KEYS = ("token_list", "model", "encoder", "encoder_conf", "frontend", "ctc_conf")
#: frames per encoder frame for ESPnet's input layers
SUBSAMPLING = {"conv2d": 4, "conv2d1": 1, "conv2d2": 2, "conv2d6": 6, "conv2d8": 8, "linear": 1, "embed": 1}


def load_model_config(model_dir: Union[str, Path]) -> dict[str, Any]:
    """Read and check ``model_dir/config.yaml`` (the resolved training config)."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.yaml"
    config = read_config(model_dir, REQUIRED_CONFIG_KEYS)
    if not isinstance(config["token_list"], list):
        raise ValueError(f"{config_file}: token_list must be the inline list written by training")
    stats = (config.get("normalize_conf") or {}).get("stats_file")
    if stats and not Path(stats).exists():
        local = model_dir / "feats_stats.npz"
        if not local.exists():
            raise FileNotFoundError(
                f"{config_file}: normalize_conf.stats_file {stats} not found and no "
                f"{local} beside the checkpoint"
            )
        # GlobalMVN's statistics are also stored in the checkpoint; the file only shapes it.
        config["normalize_conf"]["stats_file"] = str(local)
    return config


def training_max_seconds(config: dict[str, Any], model_dir: Path) -> tuple[float | None, Path | None]:
    """Longest training utterance in seconds and the shape file it was read from, or
    ``(None, None)`` when unknown.

    Read from the first ``train_shape_file`` of the training config (``<utt> <samples>`` lines,
    raw-waveform input only). ESPnet writes that path relative to the recipe directory, and a
    recipe's model dir is ``<recipe>/exp/<tag>``, so a relative path is looked up there, then
    under the current directory.
    """
    files = config.get("train_shape_file") or []
    if not files or config.get("input_size") is not None:
        return None, None
    path = Path(files[0])
    candidates = [path] if path.is_absolute() else [model_dir.parent.parent / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            longest = 0
            with candidate.open(encoding="utf-8") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) == 2 and fields[1].isdigit():
                        longest = max(longest, int(fields[1]))
            if longest > 0:
                return longest / sample_rate(config), candidate
    return None, None


def sample_rate(config: dict[str, Any]) -> int:
    """The frontend's sample rate in Hz (``frontend_conf.fs``: 16000 or "16k")."""
    fs = (config.get("frontend_conf") or {}).get("fs", 16000)
    return int(str(fs)[:-1]) * 1000 if str(fs).endswith("k") else int(fs)


def frame_shift_seconds(config: dict[str, Any]) -> float:
    """Seconds per encoder output frame, from the frontend hop and the subsampling layer."""
    fs = sample_rate(config)
    frontend_conf = config.get("frontend_conf") or {}
    if config.get("frontend") == "kaldi_fbank_lfr":  # frame shift in ms, lfr_n frames stacked
        frame = float(frontend_conf.get("frame_shift", 10.0)) / 1000 * int(frontend_conf.get("lfr_n", 1))
    else:
        frame = int(frontend_conf.get("hop_length", 128)) / fs
    layer = (config.get("encoder_conf") or {}).get("input_layer", "conv2d")
    if layer is None:
        return frame
    if layer not in SUBSAMPLING:
        raise ValueError(f"unknown encoder input_layer {layer!r}; known: {sorted(SUBSAMPLING)}")
    return frame * SUBSAMPLING[layer]


def load_asr_model(model_dir: Union[str, Path], model_file: Union[str, Path, None] = None,
                   device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """Build the model of ``model_dir/config.yaml`` and load its checkpoint strictly (a missing
    or unexpected key is an error naming the file). An ESPnet AR model (``model: espnet``) comes
    wrapped in :class:`asr.models.aed.AEDAdapter`. Returns ``(model in eval mode, config,
    checkpoint path)``."""
    model_dir = Path(model_dir)
    config = load_model_config(model_dir)
    model_file = Path(model_file) if model_file else find_checkpoint(model_dir)
    if not model_file.is_file():
        raise FileNotFoundError(f"checkpoint {model_file} does not exist")
    model = NARASRTask.build_model_from_dict(config)
    load_weights(model, model_file, model_dir / "config.yaml")
    if isinstance(model, ESPnetASRModel):
        model = AEDAdapter(model)
    return model.to(device).eval(), config, model_file

