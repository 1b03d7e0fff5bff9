"""Import a FunASR Paraformer model directory into a nar-speech ``model: paraformer`` directory.

A FunASR model directory (as FunASR's training writes it, or as published) holds::

    config.yaml           model / encoder / decoder / predictor / frontend classes and kwargs
    model.pt | model.pb   the state dict (plain, or under "state_dict" / "model_state_dict" / "model")
    tokens.json | tokens.txt   the token list (else ``tokenizer_conf.token_list`` / ``token_list``)
    am.mvn                Kaldi nnet text: per-dimension <AddShift> and <Rescale> of the features
    bpe.model, seg_dict   optional tokenizer files

:func:`convert` writes ``config.yaml``, ``model.pth`` and ``feats_stats.npz`` (plus copies of the
tokenizer files) that :class:`asr.inference.Speech2Text` and
:meth:`asr.task.NARASRTask.build_model_from_dict` read.

What the translation does:

* FunASR's ``ConformerEncoder`` / ``TransformerEncoder`` are module-for-module ESPnet's
  (``espnet2.asr.encoder.conformer_encoder`` / ``transformer_encoder``): same parameter names,
  same forward computation (legacy and latest relative positions, macaron, convolution module,
  ``conv2d*`` / ``linear`` / no input layer). Every encoder option is written out explicitly with
  FunASR's defaults (e.g. ``rel_pos_type: legacy``), so a changed ESPnet default cannot silently
  change the network. FunASR-only options (``input_layer: conv2dpad``) are rejected.
* ``ParaformerSANDecoder`` becomes ``decoder: paraformer`` (same layers and keys);
  ``CifPredictor`` becomes ``predictor: cif`` with ``variant: v1`` (depthwise conv + residual)
  and ``CifPredictorV2`` ``variant: v2``; their different ``tail_threshold`` defaults (0.45 and
  0.0) are written out.
* ``WavFrontend`` becomes ``frontend: kaldi_fbank_lfr`` (:class:`asr.frontends.KaldiFbankLFR`);
  its CMVN (``(x + shift) * rescale`` from ``am.mvn``) becomes ESPnet's ``GlobalMVN`` with
  statistics chosen so that ``(x - mean) / std`` is the same map (count 1, sum ``-shift``,
  sum of squares ``shift^2 + rescale^-2``).
* ``sos`` / ``eos`` / ``blank_id`` are taken from FunASR's ``model_conf`` with FunASR's defaults
  (1, 2, 0; ``null`` meaning the last token) and written as integers: ESPnet's convention (the
  last token) differs.
* The state dict maps name for name; every FunASR tensor must be consumed and every tensor of
  the nar-speech model filled with the same shape. With FunASR's ``share_embedding`` the decoder
  has no ``embed`` table; ours gets a copy of the output layer (unused, the model reads the output
  layer when ``share_embedding`` is set).

Not supported (a :class:`ValueError` names the file and the reason): SANM encoders/decoders
(paraformer-large / paraformer-zh), the BiCIF predictor (``CifPredictorV3``), streaming,
contextual and SeACo Paraformers, any other class, FunASR's ``normalize`` option, CIF thresholds
other than 1 (FunASR's CIF assumes 1).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import yaml

from nar.base.files import atomic_open, save_torch

PathLike = Union[str, Path]

# ------------------------------------------------------------------------------ class names
# FunASR registry names (and the lower-case names of its 0.x configs) -> ours; compared lower-case.
SUPPORTED_MODELS = ("paraformer",)
UNSUPPORTED_MODELS = {
    "bicifparaformer": "the BiCIF Paraformer (CifPredictorV3 timestamp predictor) is not supported",
    "contextualparaformer": "contextual (hotword-biased) Paraformer is not supported",
    "neatcontextualparaformer": "contextual (hotword-biased) Paraformer is not supported",
    "seacoparaformer": "SeACo (hotword customisation) Paraformer is not supported",
    "paraformerstreaming": "streaming Paraformer is not supported",
    "paraformer_online": "streaming Paraformer is not supported",
    "paraformeronline": "streaming Paraformer is not supported",
}
ENCODERS = {
    "conformerencoder": "conformer",
    "conformer": "conformer",
    "transformerencoder": "transformer",
    "transformer": "transformer",
}
UNSUPPORTED_ENCODERS = {
    "sanmencoder": "the SANM encoder (memory-equipped self-attention of paraformer-large / "
    "paraformer-zh) is not supported; only ConformerEncoder and TransformerEncoder are",
    "sanm": "the SANM encoder (paraformer-large / paraformer-zh) is not supported",
    "sanmencoderchunkopt": "the streaming SANM encoder is not supported",
    "sanm_chunk_opt": "the streaming SANM encoder is not supported",
    "chunkconformerencoder": "the streaming (chunk) Conformer encoder is not supported",
}
DECODERS = {"paraformersandecoder": "paraformer", "paraformer_decoder_san": "paraformer"}
UNSUPPORTED_DECODERS = {
    "paraformersanmdecoder": "the SANM decoder (ParaformerSANMDecoder of paraformer-large / "
    "paraformer-zh) is not supported; only ParaformerSANDecoder is",
    "paraformer_decoder_sanm": "the SANM decoder of paraformer-large is not supported",
    "contextualparaformerdecoder": "the contextual Paraformer decoder is not supported",
}
PREDICTORS = {
    "cifpredictor": "v1",
    "cif_predictor": "v1",
    "cifpredictorv2": "v2",
    "cif_predictor_v2": "v2",
}
UNSUPPORTED_PREDICTORS = {
    "cifpredictorv3": "the BiCIF predictor (CifPredictorV3) is not supported",
    "cif_predictor_v3": "the BiCIF predictor (CifPredictorV3) is not supported",
}
FRONTENDS = ("wavfrontend", "wav_frontend")
TOKENIZERS = {"chartokenizer": "char", "sentencepiecestokenizer": "bpe"}

# ------------------------------------------------------------------------------ FunASR defaults
# The keyword defaults of FunASR 1.x's classes: a FunASR config that omits an option means these.
CONFORMER_DEFAULTS: dict[str, Any] = dict(
    output_size=256, attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1,
    positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d",
    normalize_before=True, concat_after=False, positionwise_layer_type="linear",
    positionwise_conv_kernel_size=3, macaron_style=False, rel_pos_type="legacy",
    pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn", activation_type="swish",
    use_cnn_module=True, zero_triu=False, cnn_module_kernel=31, padding_idx=-1,
    interctc_layer_idx=[], interctc_use_conditioning=False, stochastic_depth_rate=0.0,
)
TRANSFORMER_DEFAULTS: dict[str, Any] = dict(
    output_size=256, attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1,
    positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d",
    normalize_before=True, concat_after=False, positionwise_layer_type="linear",
    positionwise_conv_kernel_size=1, padding_idx=-1, interctc_layer_idx=[],
    interctc_use_conditioning=False,
)
#: encoder input layers of FunASR that ESPnet builds identically
ENCODER_INPUT_LAYERS = ("conv2d", "conv2d2", "conv2d6", "conv2d8", "linear", None)
DECODER_DEFAULTS: dict[str, Any] = dict(
    attention_heads=4, linear_units=2048, num_blocks=6, dropout_rate=0.1,
    positional_dropout_rate=0.1, self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0,
    normalize_before=True, concat_after=False,
)
#: decoder options that must have these values (the only structure ours has)
DECODER_FIXED: dict[str, Any] = dict(input_layer="embed", use_output_layer=True)
#: decoder options without effect on the parameters or the returned logits
DECODER_IGNORED = ("embeds_id",)
PREDICTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "v1": dict(threshold=1.0, dropout=0.1, smooth_factor=1.0, noise_threshold=0.0, tail_threshold=0.45),
    "v2": dict(threshold=1.0, dropout=0.1, smooth_factor=1.0, noise_threshold=0.0, tail_threshold=0.0),
}
#: CifPredictorV2 options without a counterpart (TF-import names; tail_mask only differs from
#: ours for padded batches: ours always adds the tail after each item's own last frame)
PREDICTOR_IGNORED = ("tf2torch_tensor_name_prefix_torch", "tf2torch_tensor_name_prefix_tf", "tail_mask")
FRONTEND_DEFAULTS: dict[str, Any] = dict(
    fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10, lfr_m=1, lfr_n=1,
    dither=1.0, snip_edges=True, upsacle_samples=True,
)
#: WavFrontend options its forward pass does not read (cmvn_file is handled separately)
FRONTEND_IGNORED = ("cmvn_file", "filter_length_min", "filter_length_max")
MODEL_DEFAULTS: dict[str, Any] = dict(
    ctc_weight=0.5, lsm_weight=0.0, length_normalized_loss=False, predictor_weight=0.0,
    predictor_bias=0, sampling_ratio=0.2, share_embedding=False, ignore_id=-1, blank_id=0,
)
CTC_DEFAULTS: dict[str, Any] = dict(dropout_rate=0.0, ctc_type="builtin", reduce=True, ignore_nan_grad=True)

#: checkpoint file names looked for, in order
CHECKPOINT_NAMES = ("model.pt", "model.pb")
#: wrappers FunASR's loader unpacks, in order
CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class FunASRFiles:
    """The files of a FunASR model directory that the conversion reads."""

    config: Path
    checkpoint: Path
    cmvn: Optional[Path]
    tokens: Optional[Path]  # None: the token list is inline in config.yaml
    bpemodel: Optional[Path]
    seg_dict: Optional[Path]


# ------------------------------------------------------------------------------ file reading
def _fail(path: PathLike, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _resolve(funasr_dir: Path, value: Any) -> Optional[Path]:
    """A path from config.yaml: as given if it exists, else relative to the model directory."""
    if not isinstance(value, (str, Path)) or not str(value):
        return None
    path = Path(value)
    if path.exists():
        return path
    local = funasr_dir / path.name
    return local if local.exists() else None


def read_config(funasr_dir: PathLike) -> dict[str, Any]:
    """``funasr_dir/config.yaml`` as a mapping (clear errors for a missing or broken file)."""
    funasr_dir = Path(funasr_dir)
    if not funasr_dir.is_dir():
        raise FileNotFoundError(f"FunASR model directory {funasr_dir} does not exist")
    path = funasr_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a FunASR model directory")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML ({err})") from err
    if not isinstance(config, dict):
        raise _fail(path, f"expected a YAML mapping, got {type(config).__name__}")
    return config


def find_files(funasr_dir: PathLike, config: dict[str, Any]) -> FunASRFiles:
    """Locate checkpoint, CMVN, tokens and tokenizer files as FunASR's loader does.

    Files beside config.yaml win over the paths inside it (FunASR overrides the config with them).
    """
    funasr_dir = Path(funasr_dir)
    checkpoint = next((funasr_dir / n for n in CHECKPOINT_NAMES if (funasr_dir / n).is_file()), None)
    if checkpoint is None:
        raise FileNotFoundError(f"{funasr_dir}: no checkpoint ({' or '.join(CHECKPOINT_NAMES)})")
    frontend_conf = config.get("frontend_conf") or {}
    tokenizer_conf = config.get("tokenizer_conf") or {}

    cmvn = funasr_dir / "am.mvn" if (funasr_dir / "am.mvn").is_file() else None
    if cmvn is None and frontend_conf.get("cmvn_file"):
        cmvn = _resolve(funasr_dir, frontend_conf["cmvn_file"])
        if cmvn is None:
            raise FileNotFoundError(
                f"{funasr_dir / 'config.yaml'}: frontend_conf.cmvn_file "
                f"{frontend_conf['cmvn_file']} not found (nor am.mvn beside it)"
            )

    tokens = next((funasr_dir / n for n in ("tokens.json", "tokens.txt") if (funasr_dir / n).is_file()), None)
    if tokens is None:
        listed = tokenizer_conf.get("token_list") or config.get("token_list")
        if isinstance(listed, (str, Path)):
            tokens = _resolve(funasr_dir, listed)
            if tokens is None:
                raise FileNotFoundError(
                    f"{funasr_dir / 'config.yaml'}: token list {listed} not found "
                    "(nor tokens.json / tokens.txt beside it)"
                )
        elif not isinstance(listed, list):
            raise FileNotFoundError(
                f"{funasr_dir}: no token list (tokens.json, tokens.txt, tokenizer_conf.token_list "
                "or token_list in config.yaml)"
            )

    bpemodel = funasr_dir / "bpe.model" if (funasr_dir / "bpe.model").is_file() else None
    if bpemodel is None and tokenizer_conf.get("bpemodel"):
        bpemodel = _resolve(funasr_dir, tokenizer_conf["bpemodel"])
    seg_dict = funasr_dir / "seg_dict" if (funasr_dir / "seg_dict").is_file() else None
    return FunASRFiles(funasr_dir / "config.yaml", checkpoint, cmvn, tokens, bpemodel, seg_dict)


def read_tokens(files: FunASRFiles, config: dict[str, Any]) -> list[str]:
    """The token list (tokens.json: a JSON list; tokens.txt: one token a line)."""
    if files.tokens is None:
        listed = (config.get("tokenizer_conf") or {}).get("token_list") or config.get("token_list")
        tokens, source = list(listed), files.config
    elif files.tokens.suffix == ".json":
        source = files.tokens
        try:
            tokens = json.loads(files.tokens.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _fail(source, f"not a JSON token list ({err})") from err
    else:
        source = files.tokens
        with files.tokens.open(encoding="utf-8") as f:  # one token a line, as FunASR reads it
            tokens = [line.rstrip() for line in f]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise _fail(source, "the token list must be a list of strings")
    if not tokens:
        raise _fail(source, "the token list is empty")
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            raise _fail(source, f"token {t!r} appears twice")
        seen.add(t)
    return tokens


def read_kaldi_cmvn(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """FunASR's ``am.mvn``: a Kaldi nnet1 text file with ``<AddShift>`` and ``<Rescale>``.

    Returns:
        (shift (F,), rescale (F,)) float64; the features are normalised as
        ``(x + shift) * rescale``.
    """
    path = Path(path)
    try:
        words = path.read_text(encoding="utf-8").replace("[", " [ ").replace("]", " ] ").split()
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(path, f"cannot read the CMVN file ({err})") from err

    def component(name: str) -> np.ndarray:
        if name not in words:
            raise _fail(path, f"no {name} component: not a FunASR/Kaldi am.mvn file")
        at = words.index(name)
        try:
            start = words.index("[", at) + 1
            stop = words.index("]", start)
            values = np.array([float(w) for w in words[start:stop]], dtype=np.float64)
        except ValueError as err:
            raise _fail(path, f"malformed {name} component ({err})") from err
        declared = words[at + 1]
        if declared.isdigit() and int(declared) != values.size:
            raise _fail(path, f"{name} declares {declared} dims but lists {values.size} values")
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise _fail(path, f"{name} values must be finite and non-empty")
        return values

    shift, rescale = component("<AddShift>"), component("<Rescale>")
    if shift.size != rescale.size:
        raise _fail(path, f"<AddShift> has {shift.size} dims but <Rescale> {rescale.size}")
    if np.any(rescale <= 0):
        raise _fail(path, "<Rescale> values must be > 0 (they are inverse standard deviations)")
    return shift, rescale


def cmvn_to_stats(shift: np.ndarray, rescale: np.ndarray) -> dict[str, np.ndarray]:
    """ESPnet ``feats_stats.npz`` arrays for which GlobalMVN's ``(x - mean) / std`` is
    ``(x + shift) * rescale``: count 1, sum ``-shift``, sum of squares ``shift^2 + 1 / rescale^2``
    (GlobalMVN: mean = sum / count, std = sqrt(sum_square / count - mean^2))."""
    shift = np.asarray(shift, dtype=np.float64)
    rescale = np.asarray(rescale, dtype=np.float64)
    return {
        "count": np.array(1.0),
        "sum": -shift,
        "sum_square": shift * shift + 1.0 / (rescale * rescale),
    }


def load_checkpoint(path: PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """FunASR's state dict from ``model.pt`` / ``model.pb`` (``module.`` prefixes removed).

    Args:
        trust_pickle: allow arbitrary pickled objects (``torch.load(weights_only=False)``);
            only for checkpoints from a trusted source.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # torch raises many types for corrupt / foreign files
        hint = "" if trust_pickle else " (if it is a trusted full training checkpoint, retry with trust_pickle)"
        raise _fail(path, f"cannot be loaded as a PyTorch checkpoint: {type(err).__name__}: {err}{hint}") from err
    for key in CHECKPOINT_WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise _fail(path, f"expected a non-empty state dict, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _fail(path, f"entry {key!r} is not a named tensor: not a model state dict")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


# ------------------------------------------------------------------------------ config translation
def _name(value: Any) -> str:
    """A class name from config.yaml, lower-cased for lookup."""
    return str(value).lower() if value is not None else "null"


def _options(
    problems: list[str],
    section: str,
    conf: Optional[dict],
    defaults: dict[str, Any],
    ignored: tuple[str, ...] = (),
    strict: bool = True,
) -> dict[str, Any]:
    """``defaults`` updated with ``conf``; unknown keys are a problem when ``strict`` (FunASR's
    class would reject them), else dropped."""
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        problems.append(f"{section} must be a mapping, got {type(conf).__name__}")
        return copy.deepcopy(defaults)
    unknown = sorted(k for k in conf if k not in defaults and k not in ignored)
    if unknown and strict:
        problems.append(f"{section} has options unknown to FunASR's class: {unknown}")
    elif unknown:
        logging.info(f"ignoring {section} options {unknown}")
    out = copy.deepcopy(defaults)
    out.update({k: v for k, v in conf.items() if k in defaults})
    return out


def translate_config(
    config: dict[str, Any],
    tokens: list[str],
    stats_file: Optional[PathLike],
    config_path: PathLike = "config.yaml",
    cmvn_dim: Optional[int] = None,
) -> dict[str, Any]:
    """FunASR ``config.yaml`` mapping -> nar-speech ``model: paraformer`` config mapping.

    Args:
        config: FunASR's config.
        tokens: the token list (written inline).
        stats_file: the ``feats_stats.npz`` made from am.mvn (None: no CMVN).
        config_path: named in error messages.
        cmvn_dim: feature dim of am.mvn, checked against the frontend.

    Raises:
        ValueError: listing every unsupported class or option found.
    """
    problems: list[str] = []
    where = str(config_path)

    model = _name(config.get("model"))
    if model in UNSUPPORTED_MODELS:
        problems.append(f"model {config.get('model')}: {UNSUPPORTED_MODELS[model]}")
    elif model not in SUPPORTED_MODELS:
        problems.append(f"model {config.get('model')!r} is not a FunASR Paraformer (expected Paraformer)")

    # ---- encoder
    enc_name = _name(config.get("encoder"))
    encoder, encoder_conf = ENCODERS.get(enc_name), {}
    if enc_name in UNSUPPORTED_ENCODERS:
        problems.append(f"encoder {config.get('encoder')}: {UNSUPPORTED_ENCODERS[enc_name]}")
    elif encoder is None:
        problems.append(
            f"encoder {config.get('encoder')!r} is not supported (ConformerEncoder or TransformerEncoder)"
        )
    else:
        defaults = CONFORMER_DEFAULTS if encoder == "conformer" else TRANSFORMER_DEFAULTS
        encoder_conf = _options(problems, "encoder_conf", config.get("encoder_conf"), defaults)
        if encoder_conf["input_layer"] not in ENCODER_INPUT_LAYERS:
            problems.append(
                f"encoder_conf.input_layer {encoder_conf['input_layer']!r} is not supported "
                f"(one of {list(ENCODER_INPUT_LAYERS)})"
            )
        if encoder_conf["interctc_use_conditioning"]:
            problems.append("encoder_conf.interctc_use_conditioning: FunASR's Paraformer never "
                            "conditions the encoder on CTC; the checkpoint is inconsistent")
        # FunASR's Paraformer discards intermediate encoder outputs: ours needs none either.
        encoder_conf["interctc_layer_idx"] = []
        # ESPnet-only: plain attention, as FunASR computes it (flash-attn would also drop the
        # attention dropout in training)
        encoder_conf["use_flash_attn"] = False

    # ---- decoder
    dec_name = _name(config.get("decoder"))
    decoder_conf: dict[str, Any] = {}
    if dec_name in UNSUPPORTED_DECODERS:
        problems.append(f"decoder {config.get('decoder')}: {UNSUPPORTED_DECODERS[dec_name]}")
    elif dec_name not in DECODERS:
        problems.append(f"decoder {config.get('decoder')!r} is not supported (ParaformerSANDecoder)")
    else:
        raw = dict(config.get("decoder_conf") or {})
        for key, value in DECODER_FIXED.items():
            if raw.pop(key, value) != value:
                problems.append(f"decoder_conf.{key} must be {value!r}")
        if "pos_enc_class" in raw:
            problems.append("decoder_conf.pos_enc_class cannot be converted")
        decoder_conf = _options(problems, "decoder_conf", raw, DECODER_DEFAULTS, DECODER_IGNORED)
        for key in DECODER_IGNORED:
            decoder_conf.pop(key, None)

    # ---- predictor
    pred_name = _name(config.get("predictor"))
    variant = PREDICTORS.get(pred_name)
    predictor_conf: dict[str, Any] = {}
    if pred_name in UNSUPPORTED_PREDICTORS:
        problems.append(f"predictor {config.get('predictor')}: {UNSUPPORTED_PREDICTORS[pred_name]}")
    elif variant is None:
        problems.append(f"predictor {config.get('predictor')!r} is not supported (CifPredictor, CifPredictorV2)")
    else:
        raw = dict(config.get("predictor_conf") or {})
        idim = raw.pop("idim", None)
        out_size = encoder_conf.get("output_size")
        if idim is not None and out_size is not None and idim != out_size:
            problems.append(f"predictor_conf.idim {idim} differs from encoder_conf.output_size {out_size}")
        missing = [k for k in ("l_order", "r_order") if k not in raw]
        if missing:
            problems.append(f"predictor_conf lacks {missing} (required by FunASR)")
        defaults = dict(PREDICTOR_DEFAULTS[variant], l_order=1, r_order=1)
        ignored = PREDICTOR_IGNORED if variant == "v2" else ()
        predictor_conf = _options(problems, "predictor_conf", raw, defaults, ignored)
        if raw.get("tail_mask", True) is False:
            logging.warning("predictor_conf.tail_mask=false: the tail weight is added after each "
                            "item's last frame (identical for single utterances)")
        if not math.isclose(float(predictor_conf["threshold"]), 1.0):
            problems.append(f"predictor_conf.threshold {predictor_conf['threshold']} != 1: FunASR's CIF "
                            "assumes 1, its results cannot be reproduced")
        predictor_conf = {"variant": variant, **predictor_conf}

    # ---- frontend and normalisation
    frontend: Optional[str] = "kaldi_fbank_lfr"
    frontend_conf: dict[str, Any] = {}
    input_size = None
    fe_name = _name(config.get("frontend"))
    if config.get("frontend") is None:
        frontend = None
        input_size = config.get("input_size")
        if not isinstance(input_size, int):
            problems.append("frontend: null needs an integer input_size")
    elif fe_name not in FRONTENDS:
        problems.append(f"frontend {config.get('frontend')!r} is not supported (WavFrontend)")
    else:
        fe = _options(problems, "frontend_conf", config.get("frontend_conf"), FRONTEND_DEFAULTS,
                      FRONTEND_IGNORED, strict=False)
        fe["upscale_samples"] = fe.pop("upsacle_samples")
        frontend_conf = fe
        input_size = None
    if config.get("normalize") is not None:
        problems.append(f"normalize {config.get('normalize')!r} is not supported (FunASR Paraformers "
                        "normalise in the frontend, with am.mvn)")
    feat_dim = frontend_conf["n_mels"] * frontend_conf["lfr_m"] if frontend_conf else input_size
    if cmvn_dim is not None and isinstance(feat_dim, int) and cmvn_dim < feat_dim:
        problems.append(f"am.mvn has {cmvn_dim} dims but the features have {feat_dim}")

    # ---- model / ctc
    model_conf = _options(problems, "model_conf", config.get("model_conf"), MODEL_DEFAULTS, strict=False)
    raw_model_conf = config.get("model_conf") or {}
    vocab = len(tokens)
    for key, default in (("sos", 1), ("eos", 2)):
        value = raw_model_conf.get(key, default)
        model_conf[key] = vocab - 1 if value is None else value
    for key in ("sos", "eos", "blank_id"):
        value = model_conf[key]
        if not isinstance(value, int) or not 0 <= value < vocab:
            problems.append(f"model_conf.{key} = {value!r} is not a token id (vocabulary of {vocab})")
    if raw_model_conf.get("vocab_size") not in (None, -1, vocab):
        problems.append(f"model_conf.vocab_size {raw_model_conf['vocab_size']} != {vocab} tokens")
    if not 0.0 <= float(model_conf["ctc_weight"]) < 1.0:
        problems.append(f"model_conf.ctc_weight {model_conf['ctc_weight']}: with 1.0 FunASR builds no decoder")
    ctc_conf = _options(problems, "ctc_conf", config.get("ctc_conf"), CTC_DEFAULTS, ("extra_linear",))
    if (config.get("ctc_conf") or {}).get("extra_linear", True) is False:
        problems.append("ctc_conf.extra_linear: false (CTC without output layer) is not supported")
    if ctc_conf["ctc_type"] != "builtin":
        logging.info(f"ctc_conf.ctc_type {ctc_conf['ctc_type']} -> builtin (same inference)")
        ctc_conf["ctc_type"] = "builtin"

    # ---- tokenizer
    tok_name = _name(config.get("tokenizer") or "CharTokenizer")
    token_type = TOKENIZERS.get(tok_name)
    if token_type is None:
        problems.append(f"tokenizer {config.get('tokenizer')!r} is not supported (CharTokenizer, "
                        "SentencepiecesTokenizer)")

    if problems:
        raise ValueError(f"{where}: cannot convert this FunASR model:\n  - " + "\n  - ".join(problems))
    if config.get("specaug") is not None:
        logging.info(f"specaug {config.get('specaug')} is not converted (specaug: null)")

    return {
        "model": "paraformer",
        "model_conf": {
            "ctc_weight": model_conf["ctc_weight"],
            "predictor_weight": model_conf["predictor_weight"],
            "predictor_bias": model_conf["predictor_bias"],
            "sampling_ratio": model_conf["sampling_ratio"],
            "lsm_weight": model_conf["lsm_weight"],
            "length_normalized_loss": model_conf["length_normalized_loss"],
            "share_embedding": model_conf["share_embedding"],
            "ignore_id": model_conf["ignore_id"],
            "sos": model_conf["sos"],
            "eos": model_conf["eos"],
            "blank_id": model_conf["blank_id"],
        },
        "input_size": input_size,
        "frontend": frontend,
        "frontend_conf": frontend_conf,
        "specaug": None,
        "specaug_conf": {},
        "normalize": "global_mvn" if stats_file is not None else None,
        "normalize_conf": {"stats_file": str(stats_file)} if stats_file is not None else {},
        "preencoder": None,
        "preencoder_conf": {},
        "encoder": encoder,
        "encoder_conf": encoder_conf,
        "postencoder": None,
        "postencoder_conf": {},
        "decoder": "paraformer",
        "decoder_conf": decoder_conf,
        "predictor": "cif",
        "predictor_conf": predictor_conf,
        "ctc_conf": ctc_conf,
        "token_type": token_type,
        "bpemodel": None,
        "token_list": list(tokens),
    }


# ------------------------------------------------------------------------------ state dict
def map_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    checkpoint: PathLike = "model.pt",
    share_embedding: bool = False,
) -> dict[str, torch.Tensor]:
    """FunASR tensors renamed onto the nar-speech model's state dict ``target``.

    Names carry over unchanged; ``normalize.*`` (GlobalMVN statistics) come from ``target``;
    with ``share_embedding`` the absent ``decoder.embed.0.weight`` copies the output layer.
    Every source tensor must be used and every target tensor filled with the same shape.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for key, ref in target.items():
        if key.startswith("normalize."):
            out[key] = ref.detach().clone()
            continue
        src_key = key
        if key == "decoder.embed.0.weight" and key not in source and share_embedding:
            src_key = "decoder.output_layer.weight"
        if src_key not in source:
            missing.append(key)
            continue
        tensor = source[src_key]
        if tuple(tensor.shape) != tuple(ref.shape):
            mismatched.append(f"{src_key} {tuple(tensor.shape)} (expected {tuple(ref.shape)})")
            continue
        out[key] = tensor.detach().to(ref.dtype).clone()
        used.add(src_key)
    unused = sorted(set(source) - used)
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing: {missing[:8]}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensors with wrong shapes: {mismatched[:8]}")
    if unused:
        problems.append(f"{len(unused)} tensors the converted model has no place for: {unused[:8]}")
    if problems:
        raise ValueError(f"{checkpoint}: does not match its config.yaml: " + "; ".join(problems))
    return out


def _check_vocab(state: dict[str, torch.Tensor], tokens: list[str], files: FunASRFiles) -> None:
    """The checkpoint's output layers must have one row per token."""
    for key in ("decoder.output_layer.weight", "ctc.ctc_lo.weight"):
        if key in state and state[key].shape[0] != len(tokens):
            source = files.tokens or files.config
            raise ValueError(
                f"{source}: {len(tokens)} tokens, but {files.checkpoint.name}'s {key} has "
                f"{state[key].shape[0]} outputs (token list and checkpoint do not belong together)"
            )


def _feature_dim(config: dict[str, Any]) -> Optional[int]:
    """Feature dim the FunASR model reads: n_mels * lfr_m of WavFrontend, else input_size."""
    if config.get("frontend") is not None:
        fe = config.get("frontend_conf") or {}
        return fe.get("n_mels", FRONTEND_DEFAULTS["n_mels"]) * fe.get("lfr_m", FRONTEND_DEFAULTS["lfr_m"])
    size = config.get("input_size")
    return size if isinstance(size, int) else None


# ------------------------------------------------------------------------------ driver
def convert(funasr_dir: PathLike, out_dir: PathLike, trust_pickle: bool = False) -> Path:
    """Convert a FunASR Paraformer directory into ``out_dir`` (created; files overwritten).

    Writes ``config.yaml``, ``model.pth``, ``feats_stats.npz`` (when the model has am.mvn) and
    copies ``bpe.model`` / ``seg_dict`` when present. The model of the translated config is built
    and the mapped state dict loaded into it (strict) before anything is written, so a failed
    conversion leaves no partial output.

    Returns:
        ``out_dir``.
    """
    from asr.task import NARASRTask  # heavy (ESPnet); imported on use

    funasr_dir, out_dir = Path(funasr_dir), Path(out_dir)
    config = read_config(funasr_dir)
    files = find_files(funasr_dir, config)
    tokens = read_tokens(files, config)
    state = load_checkpoint(files.checkpoint, trust_pickle=trust_pickle)
    _check_vocab(state, tokens, files)

    stats, cmvn_dim = None, None
    if files.cmvn is not None:
        shift, rescale = read_kaldi_cmvn(files.cmvn)
        cmvn_dim, feat_dim = shift.size, _feature_dim(config)
        if feat_dim is not None and cmvn_dim > feat_dim:
            # FunASR applies the first feat_dim entries only
            logging.warning(f"{files.cmvn}: {cmvn_dim} dims, the features have {feat_dim}: truncated")
            shift, rescale = shift[:feat_dim], rescale[:feat_dim]
        stats = cmvn_to_stats(shift, rescale)
    stats_file = out_dir.resolve() / "feats_stats.npz" if stats is not None else None
    ours = translate_config(config, tokens, stats_file, files.config, cmvn_dim)
    if ours["token_type"] == "bpe" and files.bpemodel is None:
        raise FileNotFoundError(f"{files.config}: SentencepiecesTokenizer needs bpe.model beside it")

    # Build the model and map the tensors before writing anything: a failure leaves no output.
    with tempfile.TemporaryDirectory() as tmp:
        build = copy.deepcopy(ours)
        if stats is not None:
            np.savez(Path(tmp) / "feats_stats.npz", **stats)
            build["normalize_conf"] = {"stats_file": str(Path(tmp) / "feats_stats.npz")}
        model = NARASRTask.build_model_from_dict(build)
    mapped = map_state_dict(state, model.state_dict(), files.checkpoint,
                            share_embedding=bool(ours["model_conf"]["share_embedding"]))
    model.load_state_dict(mapped, strict=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    if stats is not None:
        np.savez(stats_file, **stats)
    if ours["token_type"] == "bpe":
        shutil.copyfile(files.bpemodel, out_dir / "bpe.model")
        ours["bpemodel"] = str(out_dir.resolve() / "bpe.model")
    if files.seg_dict is not None:
        shutil.copyfile(files.seg_dict, out_dir / "seg_dict")
    save_torch(mapped, out_dir / "model.pth")
    with atomic_open(out_dir / "config.yaml") as f:
        yaml.safe_dump(ours, f, allow_unicode=True, sort_keys=False)
    logging.info(f"converted {funasr_dir} -> {out_dir} ({sum(v.numel() for v in mapped.values())} values)")
    return out_dir


__all__ = [
    "FunASRFiles",
    "read_config",
    "find_files",
    "read_tokens",
    "read_kaldi_cmvn",
    "cmvn_to_stats",
    "load_checkpoint",
    "translate_config",
    "map_state_dict",
    "convert",
]
