"""ESPnet tasks of the generation families (:mod:`audio_gen`, :mod:`tts`): the task base class
both share, model construction with defaults from the tokenizers, and loading a trained model
back from its experiment directory (``exp/<tag>``; the checkpoint by the one preference order
of :mod:`nar.base.experiment`).
"""

from __future__ import annotations

import argparse
import inspect
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from espnet2.tasks.abs_task import AbsTask
from espnet2.train.trainer import Trainer
from espnet2.utils.types import str_or_none

from nar.base.resume import ResumableTaskMixin
from nar.base.experiment import find_checkpoint, load_weights, read_config, resolve_path
from nar.base.tokens import read_token_list


class TokenModelTask(ResumableTaskMixin, AbsTask):
    """The part of an ESPnet task that every token-generation family shares: one optimizer,
    ESPnet's plain trainer, no preprocessing (the data are token dumps), the ``--token_list``
    argument and ``--init`` (accepted for ESPnet compatibility, unused).

    ``--token_list`` given as a file is read once, when training starts (:meth:`main_worker`),
    and stored inline, so that ``config.yaml`` is self-contained; :meth:`build_model` never
    changes ``args``. Subclasses set ``class_choices_list``, ``token_list_help`` and
    ``token_list_stage`` and add their own arguments in :meth:`add_extra_arguments`.
    """

    num_optimizers: int = 1
    trainer = Trainer
    token_list_help = "token list (one token per line)"
    token_list_stage = "token"

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Task related")
        group.add_argument("--token_list", type=str_or_none, default=None, help=cls.token_list_help)
        cls.add_extra_arguments(group)
        group.add_argument("--init", type=str_or_none, default=None, help="unused (ESPnet compatibility)")
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)
        return parser

    @classmethod
    def add_extra_arguments(cls, group) -> None:
        """Task-specific arguments (tokenizer directories)."""

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool):
        return None

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        if isinstance(args.token_list, str):  # config.yaml keeps the list itself, as ESPnet's ASR does
            args.token_list = read_token_list(args.token_list, cls.token_list_stage)
        super().main_worker(args)


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


def load_trained(task, model_dir: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
                 device: str = "cpu", path_keys: Sequence[str] = ()) -> tuple[torch.nn.Module, dict]:
    """Build the model of an ESPnet ``task`` from ``model_dir/config.yaml`` and a checkpoint.
    ``path_keys``: config entries holding paths, resolved with :func:`nar.base.experiment.resolve_path`."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model_file = Path(model_file) if model_file else find_checkpoint(model_dir)
    for key in path_keys:
        if isinstance(config.get(key), str) and config[key]:
            config[key] = str(resolve_path(config[key], model_dir))
    args = task.get_parser().parse_args([])
    for key, value in config.items():
        setattr(args, key, value)
    model = task.build_model(args)
    load_weights(model, model_file, model_dir / "config.yaml")
    return model.to(device).eval(), config
