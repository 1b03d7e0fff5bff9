"""Building models for ESPnet tasks and loading them back from training directories
(``exp/<tag>``): token lists, model construction with defaults from the tokenizers, the
checkpoint to use, paths recorded in ``config.yaml``, and the model itself. Shared by
:mod:`audio_gen` and :mod:`tts` (tasks and inference).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import yaml

#: checkpoints looked for in a training directory, in this order
CHECKPOINT_ORDER = ("valid.acc.ave.pth", "valid.loss.ave.pth", "valid.acc.best.pth", "valid.loss.best.pth",
                    "latest.pth")


def read_token_list(path: Union[str, Path], stage: str) -> list[str]:
    """The tokens of a token-list file, one per line (empty lines skipped); a missing file says
    which recipe ``stage`` writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--token_list {path} does not exist (run the {stage} stage)")
    with path.open(encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def construct_model(name: str, model_class, conf: dict, defaults: dict, hint: str):
    """``model_class(**conf)`` with ``defaults`` (e.g. codebook sizes read from a tokenizer) filled
    in for the keyword arguments the class accepts and ``conf`` leaves out. Bad keywords become a
    ValueError naming the model, the keys given and ``hint`` (what to pass instead)."""
    accepted = set(inspect.signature(model_class.__init__).parameters)
    conf = dict(conf)
    for key, value in defaults.items():
        if key in accepted:
            conf.setdefault(key, value)
    try:
        model = model_class(**conf)
    except TypeError as e:
        raise ValueError(f"model {name}: bad model_conf {sorted(conf)} ({e}); {hint}") from e
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.info(f"{name}: {total / 1e6:.2f} M parameters ({trained / 1e6:.2f} M trained)")
    return model


def find_checkpoint(model_dir: Union[str, Path], order: Sequence[str] = CHECKPOINT_ORDER) -> Path:
    """The first of ``order`` in ``model_dir``, else the newest ``<N>epoch.pth``."""
    model_dir = Path(model_dir)
    for name in order:
        if (model_dir / name).is_file():
            return model_dir / name
    epochs = sorted(model_dir.glob("*epoch.pth"), key=lambda p: int(p.name.split("epoch")[0]))
    if epochs:
        return epochs[-1]
    raise FileNotFoundError(f"{model_dir}: no checkpoint ({', '.join(order)} or N epoch.pth)")


def resolve_path(path: str, model_dir: Union[str, Path]) -> Path:
    """A path from config.yaml: as written (relative to the working directory, as in the recipe),
    else relative to the recipe directory two levels above ``exp/<tag>``."""
    p, model_dir = Path(path), Path(model_dir)
    if p.exists() or p.is_absolute():
        return p
    for base in (model_dir.parent.parent, model_dir.parent, model_dir):
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{model_dir}/config.yaml names {path}, which does not exist here or under "
                            f"{model_dir.parent.parent}")


def load_trained(task, model_dir: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
                 device: str = "cpu", path_keys: Sequence[str] = ()) -> tuple[torch.nn.Module, dict]:
    """Build the model of an ESPnet ``task`` from ``model_dir/config.yaml`` and a checkpoint.
    ``path_keys``: config entries holding paths, resolved with :func:`resolve_path`."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: is {model_dir} a training directory?")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    model_file = Path(model_file) if model_file else find_checkpoint(model_dir)
    for key in path_keys:
        if isinstance(config.get(key), str) and config[key]:
            config[key] = str(resolve_path(config[key], model_dir))
    args = task.get_parser().parse_args([])
    for key, value in config.items():
        setattr(args, key, value)
    model = task.build_model(args)
    state = torch.load(model_file, map_location="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_file} does not match {config_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval(), config
