"""The nar-speech MaskGCT task: ESPnet's ``AbsTask`` training the T2S and S2A models.

Everything ESPnet's trainers do (YAML configs, ``exp/`` layout, ``--ngpu`` and multi-node DDP,
resume after a kill, checkpoint averaging) works unchanged. ``--model`` chooses:

=======  ======================================================================================
``t2s``  text-to-semantic: data ``phones`` (``text_int``, ids of ``--token_list``) and
         ``semantic`` (``npy``, (T,) tokens)
``s2a``  semantic-to-acoustic: data ``semantic`` (``npy``) and ``codes`` (``npy``, (K, T) codes)
=======  ======================================================================================

Vocabulary sizes and frame rates come from the tokenizers named by ``--semantic_tokenizer``
(a saved :class:`tts.semantic.SemanticTokenizer` directory) and ``--acoustic_tokenizer`` (a saved
:mod:`audio_gen.tokenizers` directory); their paths are stored in ``config.yaml`` so that
:class:`tts.inference.Text2Speech` finds them again.

    python -m tts.bin.train --model t2s --config conf/train_t2s.yaml --token_list dump/phones/tokens.txt \
        --semantic_tokenizer ../codec1/exp/semantic_l-1_k512 \
        --train_data_path_and_name_and_type dump/phones/train/phones_int,phones,text_int \
        --train_data_path_and_name_and_type dump/semantic/train/semantic.scp,semantic,npy \
        --train_shape_file dump/phones/train/phones_shape --train_shape_file dump/semantic/train/semantic_shape \
        ... --output_dir exp/t2s
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Collection, Optional

import numpy as np
import torch
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.utils.types import str_or_none

from audio_gen.data import pad_collate
from audio_gen.experiment import TokenModelTask, construct_model
from audio_gen.task import acoustic_info
from nar.base.tokens import read_token_list
from tts.models.maskgct import S2AModel, T2SModel

model_choices = ClassChoices("model", classes=dict(t2s=T2SModel, s2a=S2AModel), type_check=AbsESPnetModel,
                             default="t2s")

#: padding value of each data name (phones: the phone padding id 0; tokens: 0, masked by lengths)
PAD = {"phones": 0, "semantic": 0, "codes": 0}


def collate(batch: Collection[tuple[str, dict[str, np.ndarray]]]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """ESPnet collate function (:func:`audio_gen.data.pad_collate` with :data:`PAD`): pads each
    data name along its last (time) axis and adds ``<name>_lengths``; ``codes`` are (K, T)."""
    return pad_collate(batch, PAD)


def tokenizer_info(semantic_dir: Optional[str], acoustic_dir: Optional[str]) -> dict[str, Any]:
    """Vocabulary sizes and frame rates read from saved tokenizer directories (JSON only)."""
    info: dict[str, Any] = {}
    if semantic_dir:
        path = Path(semantic_dir) / "semantic.json"
        if not path.is_file():
            raise FileNotFoundError(f"--semantic_tokenizer {semantic_dir}: no semantic.json (run the codec recipe's "
                                    "semantic stages)")
        meta = json.loads(path.read_text())
        info.update(num_semantic=int(meta["codebook_size"]), semantic_rate=float(meta["frame_rate"]))
    if acoustic_dir:
        acoustic = acoustic_info(acoustic_dir)
        info.update(num_codebooks=acoustic["num_codebooks"], codebook_size=acoustic["codebook_size"],
                    acoustic_rate=acoustic["frame_rate"])
    return info


class MaskGCTTask(TokenModelTask):
    """ESPnet task for the MaskGCT T2S and S2A models."""

    class_choices_list = [model_choices]
    token_list_help = "phone token list (one symbol per line; required for t2s)"
    token_list_stage = "phoneme"

    @classmethod
    def add_extra_arguments(cls, group) -> None:
        group.add_argument("--semantic_tokenizer", type=str_or_none, default=None,
                           help="saved semantic tokenizer directory (vocabulary size, frame rate)")
        group.add_argument("--acoustic_tokenizer", type=str_or_none, default=None,
                           help="saved acoustic tokenizer directory (s2a: codebooks, frame rate)")

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable:
        return collate

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> tuple[str, ...]:
        return ()

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> tuple[str, ...]:
        return ("phones", "semantic", "codes")

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        name = getattr(args, "model", None) or model_choices.default
        conf = dict(getattr(args, "model_conf", None) or {})
        if name == "t2s":
            if args.token_list is None:
                raise ValueError("model t2s needs --token_list (the phone token list)")
            conf["num_phones"] = len(read_token_list(args.token_list, "phoneme"))
        return construct_model(name, model_choices.get_class(name), conf,
                           tokenizer_info(args.semantic_tokenizer, getattr(args, "acoustic_tokenizer", None)),
                           "give the tokenizers (--semantic_tokenizer, --acoustic_tokenizer) or the sizes in model_conf")
