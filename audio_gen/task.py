"""The nar-speech text-to-audio task: ESPnet's ``AbsTask`` training MAGNeT and its AR baseline.

Everything ESPnet's trainers do (YAML configs, ``exp/`` layout, ``--ngpu``, resume after a kill,
checkpoint averaging) works unchanged. ``--model`` chooses ``magnet``
(:class:`audio_gen.models.magnet.MAGNeT`) or ``ar`` (:class:`audio_gen.models.ar.DelayAR`); both
read ``codes`` (``npy``, (K, T) codec tokens) and ``text`` (``text_int``, caption token ids).

The codec's sizes come from ``--acoustic_tokenizer`` (a saved :mod:`audio_gen.tokenizers`
directory) and the caption vocabulary from ``--token_list`` (:class:`audio_gen.conditioning.
CaptionTokenizer`'s list; not needed with ``model_conf.text_encoder: t5``); both paths are kept in
``config.yaml`` so that :class:`audio_gen.inference.TextToAudio` finds them again.

    python -m audio_gen.bin.train --model magnet --config conf/train_magnet.yaml \
        --acoustic_tokenizer exp/tokenizer_mel_rvq --token_list dump/captions/tokens.txt \
        --train_data_path_and_name_and_type dump/codes/train/codes.scp,codes,npy \
        --train_data_path_and_name_and_type dump/captions/train/text_int,text,text_int \
        --train_shape_file dump/codes/train/codes_shape ... --output_dir exp/magnet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.utils.types import str_or_none

from audio_gen.data import pad_collate
from audio_gen.experiment import TokenModelTask, construct_model
from audio_gen.models.ar import DelayAR
from audio_gen.models.magnet import MAGNeT
from nar.base.tokens import read_token_list

model_choices = ClassChoices("model", classes=dict(magnet=MAGNeT, ar=DelayAR), type_check=AbsESPnetModel,
                             default="magnet")


def acoustic_info(acoustic_dir) -> dict:
    """Codebooks, codebook size and rates of a saved acoustic tokenizer (its JSON only)."""
    path = Path(acoustic_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"--acoustic_tokenizer {acoustic_dir}: no tokenizer.json (fit the tokenizer first)")
    meta = json.loads(path.read_text())
    return dict(num_codebooks=int(meta["num_codebooks"]), codebook_size=int(meta["codebook_size"]),
                frame_rate=float(meta["frame_rate"]), sample_rate=int(meta["sample_rate"]))


class TextToAudioTask(TokenModelTask):
    """ESPnet task for MAGNeT and the delay-pattern AR baseline."""

    class_choices_list = [model_choices]
    token_list_help = "caption token list (one token per line; the trained text encoder)"
    token_list_stage = "caption-token"

    @classmethod
    def add_extra_arguments(cls, group) -> None:
        group.add_argument("--acoustic_tokenizer", type=str_or_none, default=None,
                           help="saved acoustic tokenizer directory (codebooks, sizes, rates)")

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable:
        return pad_collate

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> tuple[str, ...]:
        return ("codes",)

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> tuple[str, ...]:
        return ("text",)

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        name = getattr(args, "model", None) or model_choices.default
        conf = dict(getattr(args, "model_conf", None) or {})
        defaults = acoustic_info(args.acoustic_tokenizer) if getattr(args, "acoustic_tokenizer", None) else {}
        if conf.get("text_encoder", "transformer") == "transformer":
            if args.token_list is None:
                raise ValueError(f"model {name} with the trained text encoder needs --token_list (caption tokens)")
            conf["vocab_size"] = len(read_token_list(args.token_list, "caption-token"))
        return construct_model(name, model_choices.get_class(name), conf, defaults,
                               "give --acoustic_tokenizer or the codec sizes in model_conf")
