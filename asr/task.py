"""The nar-speech ASR task: ESPnet's ``ASRTask`` with our models registered.

Everything ESPnet's ``asr_train`` does (YAML configs, ``exp/`` layout, ``--ngpu`` and
multi-node DDP, resume, checkpoint averaging, ``--collect_stats``) works unchanged; the
``--model`` choice additionally accepts the nar-speech models:

==============  ================================================================
``ctc``         encoder-only CTC with intermediate CTC and self-conditioning (default)
``paraformer``  CIF predictor + GLM-trained parallel decoder (``decoder: paraformer``,
                ``predictor: cif``), optional CTC branch and MWER
``cassnat``     CTC-alignment-based parallel decoder (``decoder: cassnat``): token acoustic
                embeddings from the CTC alignment, optional AR head for ranking
``espnet``      ESPnet's hybrid CTC/attention encoder–decoder (the AR baseline,
                ``decoder: transformer``; built by ESPnet's own code)
==============  ================================================================

Besides ESPnet's choices, ``--decoder`` accepts ``paraformer`` and ``cassnat``, and the task adds
``--predictor`` / ``--predictor_conf`` (``cif``).

ESPnet's own ``espnet``/``maskctc``/``pit_espnet`` models are built by ESPnet's code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.layers import augmentation as espnet_augmentation
from espnet2.tasks import asr as espnet_asr
from espnet2.tasks.asr import ASRTask
from espnet2.train.class_choices import ClassChoices
from espnet2.train.abs_espnet_model import AbsESPnetModel

from asr.data.formant import formant_warp_effect
from asr.models.cassnat import CassNATDecoder, CassNATModel
from asr.models.ctc import CTCModel
from asr.models.paraformer import CIFPredictor, ParaformerDecoder, ParaformerModel
from nar.base.resume import ResumableTaskMixin
from nar.base.tokens import read_token_list

#: our data-augmentation effects, by the name ``preprocessor_conf.data_aug_effects`` uses
#: (``[w, formant_warp, {min_alpha, max_alpha}]``); added to ESPnet's table by
#: :func:`register_augmentations`
AUGMENTATIONS = {"formant_warp": formant_warp_effect}


def register_augmentations() -> None:
    """Add :data:`AUGMENTATIONS` to ESPnet's effect table (idempotent). Called by the task where
    it builds the preprocessor, the one place ESPnet looks the names up; never at import."""
    for name, effect in AUGMENTATIONS.items():
        registered = espnet_augmentation.effects_dict.setdefault(name, effect)
        if registered is not effect:
            raise ValueError(f"ESPnet already has a data augmentation effect named {name!r}")


#: our model families, by their YAML ``model:`` names. A family is a :class:`CTCModel`
#: subclass: it is built here from the shared encoder stack plus the parts it lists in its
#: ``parts`` attribute (``<part>:`` + ``<part>_conf:``), and decoded through its
#: ``make_decoder`` (:mod:`asr.decoding`); adding one is adding it to this table.
NAR_MODELS: dict[str, type] = {"ctc": CTCModel, "paraformer": ParaformerModel, "cassnat": CassNATModel}
#: the parts a family may take beyond the encoder stack
PARTS = ("decoder", "predictor")

model_choices = ClassChoices(
    "model",
    classes=dict(**NAR_MODELS, **espnet_asr.model_choices.classes),
    type_check=AbsESPnetModel,
    default="ctc",
)


decoder_choices = ClassChoices(
    "decoder",
    classes=dict(paraformer=ParaformerDecoder, cassnat=CassNATDecoder, **espnet_asr.decoder_choices.classes),
    # ESPnet's decoders are AbsDecoder (autoregressive scorers); ours are plain modules with
    # their own one-pass contract (asr.models.paraformer.decoder, asr.models.cassnat)
    type_check=torch.nn.Module,
    default=None,
    optional=True,
)

predictor_choices = ClassChoices(
    "predictor",
    classes=dict(cif=CIFPredictor),
    type_check=torch.nn.Module,
    default=None,
    optional=True,
)

# nar-speech frontends
from asr.frontends import KaldiFbankLFR  # noqa: E402
frontend_classes: dict[str, type] = {"kaldi_fbank_lfr": KaldiFbankLFR}
frontend_choices = ClassChoices(
    "frontend",
    classes=dict(**espnet_asr.frontend_choices.classes, **frontend_classes),
    type_check=AbsFrontend,
    default="default",
    optional=True,
)


def build_encoder_stack(args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    """Frontend, SpecAugment, normalisation, pre-/post-encoder, encoder and CTC head from args.

    Shared by every nar-speech model so all of them read the same encoder configuration.
    """
    if args.input_size is None:
        frontend = frontend_choices.get_class(args.frontend)(**args.frontend_conf)
        input_size = frontend.output_size()
    else:
        frontend, input_size = None, args.input_size
    specaug = None
    if args.specaug is not None:
        specaug = espnet_asr.specaug_choices.get_class(args.specaug)(**args.specaug_conf)
    normalize = None
    if args.normalize is not None:
        normalize = espnet_asr.normalize_choices.get_class(args.normalize)(**args.normalize_conf)
    preencoder = None
    if getattr(args, "preencoder", None) is not None:
        cls = espnet_asr.preencoder_choices.get_class(args.preencoder)
        preencoder = cls(**args.preencoder_conf)
        input_size = preencoder.output_size()
    if getattr(args, "encoder", None) is None:
        raise ValueError("config: `encoder:` is required for nar-speech models")
    encoder = espnet_asr.encoder_choices.get_class(args.encoder)(
        input_size=input_size, **args.encoder_conf
    )
    out_size = encoder.output_size()
    postencoder = None
    if getattr(args, "postencoder", None) is not None:
        cls = espnet_asr.postencoder_choices.get_class(args.postencoder)
        postencoder = cls(input_size=out_size, **args.postencoder_conf)
        out_size = postencoder.output_size()
    ctc = CTC(odim=vocab_size, encoder_output_size=out_size, **args.ctc_conf)
    return dict(
        frontend=frontend,
        specaug=specaug,
        normalize=normalize,
        preencoder=preencoder,
        encoder=encoder,
        postencoder=postencoder,
        ctc=ctc,
    )


class NARASRTask(ResumableTaskMixin, ASRTask):
    """ESPnet's ASR task with the nar-speech model choices; a killed training resumes exactly and one
    writer at a time uses an experiment directory (:class:`nar.base.resume.ResumableTaskMixin`)."""

    class_choices_list = [
        *(
            {"model": model_choices, "decoder": decoder_choices, "frontend": frontend_choices}.get(c.name, c)
            for c in ASRTask.class_choices_list
        ),
        predictor_choices,
    ]

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        """Training entry: our augmentations registered, and a ``--token_list`` file read once
        and stored inline, so that ``config.yaml`` (written by ESPnet from ``args`` after
        :meth:`build_model`) is self-contained; :meth:`build_model` itself changes nothing."""
        register_augmentations()
        name = getattr(args, "model", None) or model_choices.default
        if isinstance(args.token_list, (str, Path)) and issubclass(model_choices.get_class(name), CTCModel):
            args.token_list = read_token_list(args.token_list)
        super().main_worker(args)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool):
        register_augmentations()
        return super().build_preprocess_fn(args, train)

    @classmethod
    def build_model_from_dict(cls, config: dict[str, Any]) -> AbsESPnetModel:
        """Build a model from a (resolved or partial) config mapping, as in config.yaml.

        Keys the mapping omits take the defaults of ``python -m asr.bin.train``.
        """
        args = cls.get_parser().parse_args(["--token_list", "none"])
        for key, value in config.items():
            setattr(args, key, value)
        return cls.build_model(args)

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        model_name = getattr(args, "model", None) or model_choices.default
        model_class = model_choices.get_class(model_name)
        if not issubclass(model_class, CTCModel):  # ESPnet's own models, built by ESPnet
            return super().build_model(args)
        token_list = read_token_list(args.token_list)
        needed = model_class.parts
        for part in PARTS:
            if part not in needed and getattr(args, part, None) is not None:
                raise ValueError(f"model '{model_name}' takes no `{part}:`; remove it from the config")
            if part in needed and getattr(args, part, None) is None:
                raise ValueError(f"model '{model_name}' needs `{part}:` (and `{part}_conf:`) in the config")
        logging.info(f"Vocabulary size: {len(token_list)}")
        parts = build_encoder_stack(args, len(token_list))
        out_size = parts["encoder"].output_size()
        if parts["postencoder"] is not None:
            out_size = parts["postencoder"].output_size()
        if "decoder" in needed:
            parts["decoder"] = decoder_choices.get_class(args.decoder)(
                vocab_size=len(token_list), encoder_output_size=out_size, **(args.decoder_conf or {})
            )
        if "predictor" in needed:
            parts["predictor"] = predictor_choices.get_class(args.predictor)(
                idim=out_size, **(getattr(args, "predictor_conf", None) or {})
            )
        model = model_class(
            vocab_size=len(token_list), token_list=token_list, **parts, **args.model_conf
        )
        if args.init is not None:
            from espnet2.torch_utils.initialize import initialize

            initialize(model, args.init)
        return model
