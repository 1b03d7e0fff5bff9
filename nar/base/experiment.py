"""Experiment directories: ``exp/<tag>`` as ESPnet's trainer writes them.

An experiment directory holds ``config.yaml`` (the resolved training configuration, the one
truth of a model: inference reads only it) and checkpoints. Every family picks the checkpoint
to use by the same rule, :data:`CHECKPOINT_PREFERENCE`, unless one is named explicitly:

1. averaged checkpoints: ``valid.acc.ave.pth``, ``valid.loss.ave.pth``, then any other
   ``*.ave.pth`` (by name);
2. best checkpoints: ``valid.acc.best.pth``, ``valid.loss.best.pth``, then any other
   ``valid.*.best.pth``, then ``train.*.best.pth`` (by name);
3. ``model.pth`` (a single converted checkpoint, e.g. ``asr.bin.convert_funasr``);
4. ``latest.pth``;
5. the newest ``<N>epoch.pth``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Union

import torch
import yaml

__all__ = ["CHECKPOINT_PREFERENCE", "epoch_checkpoints", "find_checkpoint", "load_weights", "read_config",
           "resolve_path"]

PathLike = Union[str, os.PathLike]

#: the checkpoint preference order (glob patterns, tried in order; a pattern matching several
#: files takes the first by name); the newest ``<N>epoch.pth`` comes last
CHECKPOINT_PREFERENCE = (
    "valid.acc.ave.pth",
    "valid.loss.ave.pth",
    "*.ave.pth",
    "valid.acc.best.pth",
    "valid.loss.best.pth",
    "valid.*.best.pth",
    "train.*.best.pth",
    "model.pth",
    "latest.pth",
)


def epoch_checkpoints(model_dir: PathLike) -> dict[int, Path]:
    """``{epoch: path}`` of the ``<N>epoch.pth`` files in ``model_dir``, by epoch."""
    found = {}
    for p in Path(model_dir).glob("*epoch.pth"):
        m = re.fullmatch(r"(\d+)epoch\.pth", p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def find_checkpoint(model_dir: PathLike) -> Path:
    """The checkpoint of ``model_dir`` by :data:`CHECKPOINT_PREFERENCE`.

    Raises:
        FileNotFoundError: no directory, or no checkpoint in it (the message lists the order).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    for pattern in CHECKPOINT_PREFERENCE:
        hits = sorted(p for p in model_dir.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    epochs = list(epoch_checkpoints(model_dir).values())
    if epochs:
        return epochs[-1]
    raise FileNotFoundError(f"{model_dir}: no checkpoint (looked for {', '.join(CHECKPOINT_PREFERENCE)} "
                            "and <N>epoch.pth); name one explicitly")


def read_config(model_dir: PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``model_dir/config.yaml`` as a mapping, with the ``required`` keys present.

    Raises:
        FileNotFoundError: no directory or no config.yaml; ValueError: not a YAML mapping, or
            a required key is missing (the message names the file and the keys).
    """
    model_dir = Path(model_dir)
    config_file = model_dir / "config.yaml"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: is {model_dir} a training output directory?")
    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{config_file}: not valid YAML ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a YAML mapping, got {type(config).__name__}")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{config_file}: missing key(s) {missing} needed to build the model")
    return config


def resolve_path(path: PathLike, model_dir: PathLike) -> Path:
    """A path recorded in ``model_dir/config.yaml``: as written if it exists (recipes run from
    the recipe directory), else relative to the recipe directory two levels above ``exp/<tag>``,
    to ``exp/``, or to ``model_dir`` itself.

    Raises:
        FileNotFoundError: found nowhere (the message names the config and the path).
    """
    p, model_dir = Path(path), Path(model_dir)
    if p.exists() or p.is_absolute():
        return p
    for base in (model_dir.parent.parent, model_dir.parent, model_dir):
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{model_dir}/config.yaml names {path}, which does not exist here or under "
                            f"{model_dir.parent.parent}")


def load_weights(model: torch.nn.Module, model_file: PathLike, config_file: PathLike) -> None:
    """Load the state dict in ``model_file`` into ``model`` (built from ``config_file``) strictly.

    Raises:
        FileNotFoundError: no such file; ValueError: not a readable torch state dict, or a
            missing or unexpected key (the message names both files and the first keys).
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"checkpoint {model_file} does not exist")
    try:
        state = torch.load(model_file, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{model_file}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{model_file}: expected a state dict, got {type(state).__name__}")
    if {"model", "optimizers", "reporter"} <= set(state):
        raise ValueError(f"{model_file} is ESPnet's trainer checkpoint (model, optimizers, reporter), written to "
                         f"resume training; decode with a model checkpoint instead: an <N>epoch.pth or *.ave.pth "
                         f"of the same directory")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_file} does not match the model of {config_file}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
