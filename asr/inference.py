"""Python inference API for nar-speech ASR models: :class:`Speech2Text`.

Example (a model trained by ``egs/synth_en/asr1/run.sh``)::

    >>> from asr import Speech2Text                                     # doctest: +SKIP
    >>> s2t = Speech2Text("egs/synth_en/asr1/exp/asr_train_ctc_char")  # doctest: +SKIP
    >>> hyp = s2t("a.wav")                                               # doctest: +SKIP
    >>> hyp.text, hyp.timestamps[0]                                      # doctest: +SKIP
    ('hello world', (0.32, 0.416))
    >>> hyps = s2t(["a.wav", numpy_array, torch_tensor])                  # batched  # doctest: +SKIP

Shapes: B batch, N samples, T frames (after subsampling), V vocabulary.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import yaml
from espnet2.asr.espnet_model import ESPnetASRModel
from tqdm import tqdm

from asr.audio import AudioInput, as_waveform
from asr.longform import (
    AUTO,
    DEFAULT_BATCH_SECONDS,
    Piece,
    pack_batches,
    plan_segments,
    resolve_window,
    stitch,
)
from asr.models.aed import AEDAdapter
from asr.models.cassnat import CassNATModel
from asr.models.paraformer import ParaformerModel
from asr.task import NARASRTask
from nar.align import forced_align, spans_to_timestamps, token_spans
from nar.ctc import ctc_greedy_search, ctc_prefix_beam_search

#: checkpoints looked for in a model directory, in this order, when none is given
CHECKPOINT_ORDER = (
    "valid.loss.ave.pth",
    "valid.cer_ctc.ave.pth",
    "valid.loss.best.pth",
    "model.pth",  # written by asr.bin.convert_funasr
    "latest.pth",
)
#: keys of config.yaml that building a model reads
REQUIRED_CONFIG_KEYS = ("token_list", "model", "encoder", "encoder_conf", "frontend", "ctc_conf")
#: frames per encoder frame for ESPnet's input layers
SUBSAMPLING = {"conv2d": 4, "conv2d1": 1, "conv2d2": 2, "conv2d6": 6, "conv2d8": 8, "linear": 1, "embed": 1}
SEARCHES = ("greedy", "beam", "esa")
#: model families and the searches each accepts (the first is the default meaning of "greedy")
FAMILY_SEARCHES = {
    "ctc": ("greedy", "beam"),
    "paraformer": ("greedy",),
    "cassnat": ("greedy", "esa"),
    "aed": ("greedy", "beam"),
}


@dataclass(frozen=True)
class Hypothesis:
    """One recognition result."""

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    score: float  # log-probability of the hypothesis (greedy: best path; beam: prefix score)
    timestamps: tuple[tuple[float, float], ...]  # per token (start, end) in seconds


def epoch_checkpoints(model_dir: Path) -> dict[int, Path]:
    """``{epoch: path}`` of the ``N epoch.pth`` files ESPnet kept in ``model_dir``, by epoch."""
    found = {}
    for p in model_dir.glob("*epoch.pth"):
        m = re.fullmatch(r"(\d+)epoch\.pth", p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def _find_checkpoint(model_dir: Path) -> Path:
    for name in CHECKPOINT_ORDER:
        if (model_dir / name).exists():
            return model_dir / name
    averaged = sorted(model_dir.glob("*.ave.pth"))
    if averaged:
        return averaged[0]
    epochs = list(epoch_checkpoints(model_dir).values())
    if epochs:
        return epochs[-1]
    raise FileNotFoundError(
        f"{model_dir}: no checkpoint found (looked for {', '.join(CHECKPOINT_ORDER)}, "
        "*.ave.pth and N epoch.pth); pass model_file="
    )


def load_model_config(model_dir: Path) -> dict[str, Any]:
    """Read and check ``model_dir/config.yaml`` (the resolved training config)."""
    config_file = model_dir / "config.yaml"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: is {model_dir} a training output dir?")
    with config_file.open(encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a YAML mapping, got {type(config).__name__}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise KeyError(f"{config_file}: missing key(s) {missing} needed to build the model")
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


class Speech2Text:
    """Recognise speech with a trained nar-speech model (CTC, Paraformer, CASS-NAT or the AR
    baseline).

    Searches per family (``search=``):

    ============  =====================================================================
    CTC           ``greedy`` (best path) or ``beam`` (CTC prefix beam search)
    Paraformer    ``greedy`` (predictor → CIF → one decoder pass → argmax)
    CASS-NAT      ``greedy`` (greedy CTC alignment → TAE → one decoder pass) or ``esa``
                  (``num_samples`` error-based alignment samples decoded as one batch,
                  ranked by the AR head, else by the NAR decoder)
    AR (AED)      ``beam`` (ESPnet batch beam search, decoder + CTC prefix scorer;
                  default beam 10, CTC weight 0.3) or ``greedy`` (the same with beam 1)
    ============  =====================================================================

    Args:
        model_dir: a training output directory (``config.yaml`` + checkpoints).
        model_file: checkpoint to load (default: the first of :data:`CHECKPOINT_ORDER` found).
        device: ``"cpu"`` or ``"cuda"``.
        search: see the table.
        beam_size: beam width for ``search="beam"`` (CTC prefix beam, AED beam search).
        nbest: hypotheses returned per input by :meth:`recognize_nbest` (beam searches).
        timestamps: per-token timestamps (CTC and AED: forced alignment of each hypothesis on
            the CTC posteriors; Paraformer: CIF firing frames; CASS-NAT: the alignment used).
        length_candidates: Paraformer only: also decode token counts L-k..L+k and keep the best
            by decoder + CTC score (None: the model config's value, default 0).
        rescore_ctc_weight: Paraformer only: CTC weight of that rescoring (None: model config).
        firing: Paraformer only: ``"predictor"`` (CIF predictor) or ``"ctc"`` (token segments
            from the CTC greedy path; None: the model config's value, default "predictor").
        ctc_weight, penalty, maxlenratio: AED beam search only: CTC prefix score weight,
            length bonus per token, maximum output length / encoder frames (0: frames).
            ``penalty`` is also the length bonus per token of the CTC beam with an n-gram LM.
        ngram_file: CTC ``beam`` only: an ARPA n-gram LM over this model's tokens
            (``python -m asr.bin.train_ngram``; :mod:`asr.lm`), fused into the prefix beam search
            (shallow fusion): hypotheses rank by ``acoustic + ngram_weight * lm + penalty *
            tokens``, the LM's end-of-sentence probability included after the last frame.
        ngram_weight: weight of that LM (None: 0.5 when ``ngram_file`` is given).
        ngram_unit: ``"token"`` (the LM is over the model's tokens) or ``"word"`` (a word LM,
            ``train_ngram --token_type word``, for a character model: the search spells only
            words of the LM's vocabulary, scored with look-ahead; :mod:`asr.wordlm`).
        oov_penalty: ``ngram_unit="word"`` only: None keeps the vocabulary closed; a number lets
            the search spell other words, scored as ``<unk>`` plus this (log) penalty.
        num_samples, threshold, rank: CASS-NAT ``esa`` only: alignment copies (default 16),
            CTC probability below which a frame is resampled (default 0.9), ranker ``"ar"``
            or ``"nar"`` (default: ``"ar"`` if the model has an AR head).
        rank_model_dir: CASS-NAT ``esa``: rank the copies with this separately trained AR model
            (an AED model dir with the same token list; the reference's ``at_baseline``
            ranker) instead of ``rank``.
        seed: CASS-NAT ``esa``: every input's samples come from its own generator seeded with
            this, so a result does not depend on the batch it was decoded in.
        batch_seconds: many inputs are sorted by duration and packed into batches whose padded
            duration (items x longest) stays within this many seconds; results come back in
            input order and equal decoding each input alone.
        batch_size: at most this many items per batch (None: only ``batch_seconds`` limits).
        max_seconds: inputs longer than this are cut into windows of ``max_seconds`` overlapping
            by ``overlap_seconds``, decoded in batches like other inputs and stitched at token
            level: each window keeps the tokens whose timestamp centre lies in its half of the
            overlaps (:mod:`asr.longform`). Timestamps are in whole-file time; a long input
            gets one (stitched) hypothesis even when ``nbest > 1``. None: never cut.
            ``"auto"`` (default): the longest training utterance, read from the training
            config's ``train_shape_file`` (at least 4 s; 30 s when that file is not found), see
            :func:`asr.longform.resolve_window`. The chosen value and why: ``window_source``.
        overlap_seconds: see ``max_seconds``; wider than the context a token needs.
            ``"auto"`` (default): a quarter of the window, at most 4 s.
        progress: a tqdm bar over the segments when there is more than one batch
            (None: only on a terminal); progress_desc: its label.
    """

    def __init__(
        self,
        model_dir: Union[str, Path],
        model_file: Union[str, Path, None] = None,
        device: str = "cpu",
        search: str = "greedy",
        beam_size: int = 10,
        nbest: int = 1,
        timestamps: bool = True,
        length_candidates: int | None = None,
        rescore_ctc_weight: float | None = None,
        firing: str | None = None,
        ctc_weight: float = 0.3,
        penalty: float = 0.0,
        maxlenratio: float = 0.0,
        ngram_file: Union[str, Path, None] = None,
        ngram_weight: float | None = None,
        ngram_unit: str = "token",
        oov_penalty: float | None = None,
        num_samples: int = 16,
        threshold: float = 0.9,
        rank: str | None = None,
        seed: int = 0,
        rank_model_dir: Union[str, Path, None] = None,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        batch_size: int | None = None,
        max_seconds: float | str | None = AUTO,
        overlap_seconds: float | str = AUTO,
        progress: bool | None = None,
        progress_desc: str = "decode",
    ):
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if beam_size < 1 or nbest < 1 or nbest > beam_size:
            raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
        if batch_seconds <= 0 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"need batch_seconds > 0 and batch_size >= 1, got {batch_seconds}, {batch_size}")
        self.batch_seconds, self.batch_size = float(batch_seconds), batch_size
        self.progress, self.progress_desc = progress, progress_desc
        self.model_dir = Path(model_dir)
        config = load_model_config(self.model_dir)
        train_seconds, shape_file = (
            training_max_seconds(config, self.model_dir) if AUTO in (max_seconds, overlap_seconds) else (None, None)
        )
        self.max_seconds, self.overlap_seconds, self.window_source = resolve_window(
            max_seconds, overlap_seconds, train_seconds
        )
        if shape_file is not None:
            self.window_source += f" in {shape_file}"
        model_file = Path(model_file) if model_file else _find_checkpoint(self.model_dir)
        if not model_file.is_file():
            raise FileNotFoundError(f"checkpoint {model_file} does not exist")
        self.model = self._build(config, model_file, device)
        self.model_file = model_file
        self.config = config
        self.device = torch.device(device)
        self.token_list: list[str] = config["token_list"]
        self.token_type = config.get("token_type", "char")
        self.sample_rate = sample_rate(config)
        self.frame_shift = frame_shift_seconds(config)
        self.search, self.beam_size, self.nbest = search, beam_size, nbest
        self.timestamps = timestamps
        self.blank_id = getattr(self.model, "blank_id", 0)
        if isinstance(self.model, AEDAdapter):
            self.family = "aed"
        elif isinstance(self.model, ParaformerModel):
            self.family = "paraformer"
        elif isinstance(self.model, CassNATModel):
            self.family = "cassnat"
        else:
            self.family = "ctc"
        if search not in FAMILY_SEARCHES[self.family]:
            raise ValueError(
                f"{self.model_dir}: a {self.family} model decodes with search in "
                f"{FAMILY_SEARCHES[self.family]}, got {search!r}"
            )
        if nbest > 1 and not (search == "beam"):
            raise ValueError(f"nbest={nbest} needs search='beam' (got {search!r})")
        if self.family == "paraformer":
            if length_candidates is not None:
                self.model.length_candidates = int(length_candidates)
            if rescore_ctc_weight is not None:
                self.model.rescore_ctc_weight = float(rescore_ctc_weight)
            if firing is not None:
                self.model.firing = firing
            try:
                self.model.check_firing()
            except ValueError as err:
                raise ValueError(f"{self.model_dir}: {err}") from None
            if self.model.length_candidates < 0 or not 0 <= self.model.rescore_ctc_weight <= 1:
                raise ValueError(
                    f"need length_candidates >= 0 and 0 <= rescore_ctc_weight <= 1, got "
                    f"{self.model.length_candidates}, {self.model.rescore_ctc_weight}"
                )
        elif length_candidates or rescore_ctc_weight is not None or firing is not None:
            raise ValueError(
                f"{self.model_dir}: length_candidates / rescore_ctc_weight / firing are Paraformer options; "
                f"this is a {self.family} model"
            )
        if not 0.0 <= ctc_weight <= 1.0 or maxlenratio < 0:
            raise ValueError(f"need 0 <= ctc_weight <= 1 and maxlenratio >= 0, got {ctc_weight}, {maxlenratio}")
        self.ctc_weight, self.penalty, self.maxlenratio = float(ctc_weight), float(penalty), float(maxlenratio)
        self.lm_scorer, self.ngram_weight = None, 0.0
        if ngram_unit not in ("token", "word"):
            raise ValueError(f"ngram_unit must be 'token' or 'word', got {ngram_unit!r}")
        if oov_penalty is not None and ngram_unit != "word":
            raise ValueError(f"oov_penalty={oov_penalty} is an option of ngram_unit='word' (a word LM)")
        self.ngram_unit, self.oov_penalty = ngram_unit, oov_penalty
        self._load_ngram(ngram_file, ngram_weight)
        self.num_samples, self.threshold, self.rank, self.seed = num_samples, threshold, rank, int(seed)
        if self.family == "cassnat":
            self.rank = self.model.check_inference_options(num_samples, threshold, rank)
        self.ranker = None
        if rank_model_dir is not None:
            if self.family != "cassnat":
                raise ValueError(f"rank_model_dir is a CASS-NAT option; {self.model_dir} is a {self.family} model")
            ranker = Speech2Text(rank_model_dir, device=device, timestamps=False)
            if ranker.family != "aed":
                raise ValueError(f"rank_model_dir {rank_model_dir} must be an AED (model: espnet) dir, "
                                 f"got a {ranker.family} model")
            if ranker.token_list != self.token_list or ranker.sample_rate != self.sample_rate:
                raise ValueError(f"rank_model_dir {rank_model_dir}: token list / sample rate differ from {self.model_dir}")
            self.ranker = ranker

    def _load_ngram(self, ngram_file, ngram_weight) -> None:
        """Load and use the n-gram LM for CTC beam search, if any; clear errors for misuse."""
        if ngram_file is None:
            if ngram_weight:
                raise ValueError(f"ngram_weight={ngram_weight} needs ngram_file (an ARPA LM over the "
                                 f"model's tokens, python -m asr.bin.train_ngram)")
            if self.penalty and self.family == "ctc":
                raise ValueError("penalty (length bonus) of the CTC beam search needs an n-gram LM (ngram_file)")
            return
        if self.family != "ctc" or self.search != "beam":
            raise ValueError(f"{self.model_dir}: ngram_file is used by the CTC prefix beam search only "
                             f"(search='beam' on a CTC model), got search={self.search!r} on a {self.family} model")
        weight = 0.5 if ngram_weight is None else float(ngram_weight)
        if weight <= 0:
            raise ValueError(f"ngram_weight must be > 0 with ngram_file, got {weight}")
        from asr.lm import ArpaError, NgramLM

        lm = NgramLM.load(str(ngram_file))
        try:
            self.use_ngram(lm, weight, self.penalty, self.ngram_unit, self.oov_penalty)
        except ArpaError as err:
            raise ArpaError(f"{self.model_dir}: ngram_unit {self.ngram_unit!r}: {err}") from None

    def use_ngram(self, lm, weight: float, penalty: float, unit: str = "token",
                  oov_penalty: float | None = None) -> None:
        """Fuse ``lm`` (an :class:`asr.lm.NgramLM`; None: no LM) into the CTC beam search from now
        on: rank by ``acoustic + weight * lm + penalty * tokens`` (``asr.bin.tune_ngram`` sweeps
        these on one set of posteriors). ``unit="word"``: ``lm`` is a word LM used through the
        lexicon of :class:`asr.wordlm.WordLMScorer`."""
        self.penalty = float(penalty)
        if lm is None:
            self.lm_scorer, self.ngram_weight = None, 0.0
        else:  # the scorer's per-token bonus is in LM units: weight * (lm + penalty / weight)
            bonus = self.penalty / weight
            if unit == "word":
                from asr.wordlm import WordLMScorer

                self.lm_scorer = WordLMScorer(lm, self.token_list, length_bonus=bonus, oov_penalty=oov_penalty)
            else:
                self.lm_scorer = lm.scorer(self.token_list, length_bonus=bonus)
            self.ngram_weight = float(weight)

    @staticmethod
    def _build(config: dict[str, Any], model_file: Path, device: str) -> torch.nn.Module:
        model = NARASRTask.build_model_from_dict(config)
        state = torch.load(model_file, map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{model_file} does not match the model of config.yaml: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if isinstance(model, ESPnetASRModel):
            model = AEDAdapter(model)
        return model.to(device).eval()

    # ------------------------------------------------------------------ public API
    def window_summary(self) -> str:
        """One line on how long inputs are cut, e.g. for a command-line tool's log."""
        if self.max_seconds is None:
            return f"long inputs: never cut ({self.window_source})"
        return (f"long inputs: windows of {self.max_seconds:g} s overlapping by {self.overlap_seconds:g} s "
                f"({self.window_source})")

    def __call__(
        self, inputs: Union[AudioInput, Sequence[AudioInput]], sample_rate: int | None = None
    ) -> Union[Hypothesis, list[Hypothesis]]:
        """Best hypothesis for one input (path, array or tensor) or a list of them (batched)."""
        if isinstance(inputs, (list, tuple)):
            return [nbest[0] for nbest in self.recognize_nbest(inputs, sample_rate)]
        return self.recognize_nbest([inputs], sample_rate)[0][0]

    def recognize_speaker(
        self, inputs: Sequence[AudioInput], sample_rate: int | None = None, factors: Sequence[float] | None = None
    ):
        """Test-time VTLN for one speaker's recordings (:mod:`asr.speaker_warp`): decode them
        with their formants warped by each factor (default 0.85-1.25 in steps of 0.05) and keep
        the factor whose hypotheses score best. Returns a :class:`asr.speaker_warp.WarpChoice`
        (``alpha``, ``hyps``: n-best lists in input order, ``criterion`` per factor)."""
        from asr.speaker_warp import DEFAULT_WARPS, choose_speaker_warp

        if len(inputs) == 0:
            raise ValueError("inputs is empty: give the speaker's recordings (paths, arrays or tensors)")
        wavs = [as_waveform(x, self.sample_rate, sample_rate, name=f"inputs[{i}]") for i, x in enumerate(inputs)]
        return choose_speaker_warp(self.recognize_nbest, wavs, self.sample_rate,
                                   DEFAULT_WARPS if factors is None else factors)

    @torch.no_grad()
    def recognize_nbest(
        self, inputs: Sequence[AudioInput], sample_rate: int | None = None
    ) -> list[list[Hypothesis]]:
        """The n-best hypotheses (best first) of each input, in input order.

        Inputs longer than ``max_seconds`` are cut into overlapping windows; all segments are
        decoded in duration-sorted batches under ``batch_seconds`` (see the class docs), and the
        windows of a long input are stitched into one hypothesis.
        """
        if len(inputs) == 0:
            raise ValueError("inputs is empty: give at least one path, array or tensor")
        wavs = [
            as_waveform(x, self.sample_rate, sample_rate, name=f"inputs[{i}]")
            for i, x in enumerate(inputs)
        ]
        segments = plan_segments([w.numel() for w in wavs], self.sample_rate, self.max_seconds,
                                 self.overlap_seconds, align=max(1, round(self.frame_shift * self.sample_rate)))
        windowed = {s.input_index for s in segments if s.windowed}
        batches = pack_batches([s.num_samples / self.sample_rate for s in segments], self.batch_seconds,
                               self.batch_size)
        results: list[list[Hypothesis]] = [[] for _ in segments]
        disable = (None if self.progress is None else not self.progress) if len(batches) > 1 else True
        with tqdm(total=len(segments), desc=self.progress_desc, unit="seg", disable=disable, leave=False) as bar:
            for idx in batches:
                segs = [segments[i] for i in idx]
                hyps = self.decode_batch(
                    [wavs[s.input_index][s.start : s.end] for s in segs],
                    names=[self._segment_name(s, s.input_index in windowed) for s in segs],
                    timestamps=self.timestamps or any(s.input_index in windowed for s in segs),
                )
                for i, h in zip(idx, hyps):
                    results[i] = h
                bar.update(len(idx))
        out: list[list[Hypothesis]] = [[] for _ in wavs]
        pieces: dict[int, list[Piece]] = {}
        for seg, hyps in zip(segments, results):
            if seg.input_index not in windowed:
                # (timestamps were computed for the whole batch if it held a window)
                out[seg.input_index] = hyps if self.timestamps else [replace(h, timestamps=()) for h in hyps]
            else:
                best = hyps[0]
                pieces.setdefault(seg.input_index, []).append(Piece(seg, best.token_ids, best.timestamps, best.score))
        for i, parts in pieces.items():
            ids, stamps, score = stitch(parts, self.sample_rate)
            out[i] = [self._hypothesis(ids, score, stamps if self.timestamps else ())]
        return out

    def _segment_name(self, seg, windowed: bool) -> str:
        if not windowed:
            return f"inputs[{seg.input_index}]"
        return (f"inputs[{seg.input_index}] window {seg.start / self.sample_rate:.1f}-"
                f"{seg.end / self.sample_rate:.1f} s")

    @torch.no_grad()
    def decode_batch(
        self, wavs: Sequence[torch.Tensor], names: Sequence[str] | None = None, timestamps: bool | None = None
    ) -> list[list[Hypothesis]]:
        """Decode mono waveforms at the model rate as one padded batch (no windowing, no
        re-batching): the n-best of each. ``names`` label inputs in warnings; ``timestamps``
        overrides the instance setting."""
        names = list(names) if names is not None else [f"inputs[{i}]" for i in range(len(wavs))]
        stamps = self.timestamps if timestamps is None else bool(timestamps)
        if self.family == "paraformer":
            return self.decode_paraformer(self.encode(wavs), names, stamps)
        if self.family == "cassnat":
            return self.decode_cassnat(self.encode(wavs), wavs, names, stamps)
        if self.family == "aed":
            return self.decode_aed(self.encode(wavs), stamps)
        log_probs, lengths = self.ctc_log_probs(wavs)
        return self.decode_log_probs(log_probs, lengths, stamps)

    def encode(self, wavs: Sequence[torch.Tensor]):
        """Mono waveforms at the model rate -> the model's :class:`EncoderOutput` (padded batch).

        Features are computed per item (an STFT's edge frames depend on what follows the
        signal), then padded; the encoder ignores padding, so each item's result does not
        depend on the batch it is in.
        """
        feats, lens = [], []
        for wav in wavs:
            x = wav.to(self.device)[None]
            f, n = self.model.extract_feats(x, torch.tensor([x.size(1)], device=self.device))
            feats.append(f[0, : int(n[0])])
            lens.append(int(n[0]))
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return self.model.encode_feats(padded, torch.tensor(lens, device=self.device))

    def ctc_log_probs(self, wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mono waveforms at the model rate -> CTC log-probs (B, T, V) and lengths (B,)."""
        if self.model.ctc is None:
            raise ValueError(f"{self.model_dir}: the model has no CTC head (model_conf.ctc_weight = 0)")
        enc = self.encode(wavs)
        return self.model.ctc_log_probs(enc), enc.lengths

    def decode_paraformer(self, enc, names=None, timestamps: bool | None = None) -> list[list[Hypothesis]]:
        """Paraformer: predictor → CIF → one decoder pass → argmax, timestamps from CIF firing.

        An input for which the predictor fires no token gets an empty hypothesis and a warning.
        """
        res = self.model.recognize(enc)
        stamps_on = self.timestamps if timestamps is None else timestamps
        out = []
        for b, ids in enumerate(res.token_ids):
            if int(res.token_counts[b]) == 0:
                warnings.warn(
                    f"{names[b] if names else f'inputs[{b}]'}: the Paraformer predictor fired no token "
                    f"({int(enc.lengths[b])} encoder frames); returning an empty hypothesis",
                    stacklevel=3,
                )
            stamps = ()
            if stamps_on:
                stamps = tuple(
                    (round(s * self.frame_shift, 3), round((e + 1) * self.frame_shift, 3))
                    for s, e in res.frames[b]
                )
            out.append([self._hypothesis(ids, res.scores[b], stamps)])
        return out

    def decode_cassnat(self, enc, wavs=None, names=None, timestamps: bool | None = None) -> list[list[Hypothesis]]:
        """CASS-NAT: greedy alignment or ESA → TAE → one decoder pass; timestamps from the
        chosen alignment. An input with an empty CTC output gets an empty hypothesis and a
        warning."""
        num = self.num_samples if self.search == "esa" else 1
        gens = [torch.Generator(device=self.device).manual_seed(self.seed) for _ in range(enc.hidden.size(0))]
        scorer = None
        if self.ranker is not None and num > 1:
            if wavs is None:
                raise ValueError("ranking with rank_model_dir needs the waveforms")
            from asr.models.cassnat import teacher_forced_scores

            ranker_enc = self.ranker.encode(wavs)
            aed = self.ranker.model

            def scorer(hyps):
                return teacher_forced_scores(
                    aed.model.decoder, ranker_enc.hidden.repeat_interleave(num, 0),
                    ranker_enc.lengths.repeat_interleave(num), hyps, aed.sos, aed.eos,
                )

        res = self.model.recognize(enc, num_samples=num, threshold=self.threshold, rank=self.rank,
                                   generator=gens, scorer=scorer)
        stamps_on = self.timestamps if timestamps is None else timestamps
        out = []
        for b, ids in enumerate(res.token_ids):
            if int(res.token_counts[b]) == 0:
                warnings.warn(
                    f"{names[b] if names else f'inputs[{b}]'}: the CTC alignment has no token ({int(enc.lengths[b])} encoder "
                    "frames); returning an empty hypothesis",
                    stacklevel=3,
                )
            stamps = ()
            if stamps_on:
                stamps = tuple(
                    (round(s * self.frame_shift, 3), round(e * self.frame_shift, 3)) for s, e in res.frames[b]
                )
            out.append([self._hypothesis(ids, res.scores[b], stamps)])
        return out

    def decode_aed(self, enc, timestamps: bool | None = None) -> list[list[Hypothesis]]:
        """AR baseline: ESPnet batch beam search per input (beam 1 for ``greedy``)."""
        beam = self.beam_size if self.search == "beam" else 1
        nbest = self.model.recognize(
            enc, beam_size=beam, ctc_weight=self.ctc_weight, penalty=self.penalty,
            maxlenratio=self.maxlenratio, nbest=self.nbest,
        )
        candidates = [[(tuple(h.token_ids), h.score) for h in hyps] for hyps in nbest]
        times = None
        if self.timestamps if timestamps is None else timestamps:
            log_probs = self.model.ctc_log_probs(enc).float().cpu()
            times = self._timestamps(log_probs, enc.lengths.cpu(), candidates)
        return [
            [self._hypothesis(ids, score, times[b][k] if times else ()) for k, (ids, score) in enumerate(hyps)]
            for b, hyps in enumerate(candidates)
        ]

    def _hypothesis(self, ids, score: float, stamps) -> Hypothesis:
        ids = tuple(int(i) for i in ids)
        return Hypothesis(
            text=self.tokens_to_text(ids),
            tokens=tuple(self.token_list[i] for i in ids),
            token_ids=ids,
            score=float(score),
            timestamps=tuple(stamps),
        )

    def decode_log_probs(
        self, log_probs: torch.Tensor, lengths: torch.Tensor, timestamps: bool | None = None
    ) -> list[list[Hypothesis]]:
        """Search and timestamps on CTC log-probs (B, T, V) with lengths (B,)."""
        log_probs = log_probs.float().cpu()
        lengths = lengths.cpu()
        if self.search == "greedy":
            res = ctc_greedy_search(log_probs, lengths, blank=self.blank_id)
            candidates = [[(tuple(t), float(s))] for t, s in zip(res.tokens, res.scores)]
        elif self.lm_scorer is None:
            beams = ctc_prefix_beam_search(
                log_probs, lengths, beam_size=self.beam_size, blank=self.blank_id, nbest=self.nbest
            )
            candidates = [[(h.tokens, h.score) for h in hyps] for hyps in beams]
        else:
            # the whole final beam, re-ranked with the LM's end-of-sentence term
            beams = ctc_prefix_beam_search(
                log_probs, lengths, beam_size=self.beam_size, blank=self.blank_id, nbest=self.beam_size,
                lm_score_fn=self.lm_scorer, lm_weight=self.ngram_weight,
            )
            candidates = []
            for hyps in beams:
                ended = [(h.tokens, h.score + self.ngram_weight * self.lm_scorer.end_logprob(h.tokens)) for h in hyps]
                ended.sort(key=lambda x: -x[1])
                candidates.append(ended[: self.nbest])
        stamps_on = self.timestamps if timestamps is None else timestamps
        times = self._timestamps(log_probs, lengths, candidates) if stamps_on else None
        return [
            [self._hypothesis(ids, score, times[b][k] if times else ()) for k, (ids, score) in enumerate(hyps)]
            for b, hyps in enumerate(candidates)
        ]

    def _timestamps(self, log_probs, lengths, candidates) -> list[list[tuple]]:
        """Forced-align every hypothesis (all of them in one batch) and convert spans to seconds."""
        rows = [(b, k, ids) for b, hyps in enumerate(candidates) for k, (ids, _) in enumerate(hyps)]
        result: list[list[tuple]] = [[() for _ in hyps] for hyps in candidates]
        rows = [r for r in rows if len(r[2]) > 0]
        if not rows:
            return result
        index = torch.tensor([b for b, _, _ in rows])
        max_len = max(len(ids) for _, _, ids in rows)
        targets = torch.ones(len(rows), max_len, dtype=torch.long)
        for i, (_, _, ids) in enumerate(rows):
            targets[i, : len(ids)] = torch.tensor(ids)
        target_lengths = torch.tensor([len(ids) for _, _, ids in rows])
        labels, scores = forced_align(
            log_probs[index], lengths[index], targets, target_lengths, blank=self.blank_id
        )
        spans = token_spans(labels, lengths[index], scores, blank=self.blank_id)
        for (b, k, _), item_spans in zip(rows, spans):
            stamps = spans_to_timestamps(item_spans, self.frame_shift)
            result[b][k] = tuple((round(s, 3), round(e, 3)) for s, e in stamps)
        return result

    def tokens_to_text(self, ids: Sequence[int]) -> str:
        """Token ids to text: ``<space>`` (char) and ``▁`` (BPE) become spaces."""
        pieces = [self.token_list[i] for i in ids]
        pieces = [p for p in pieces if not (p.startswith("<") and p.endswith(">")) or p == "<space>"]
        if self.token_type == "bpe":
            return "".join(pieces).replace("\u2581", " ").strip()
        return "".join(" " if p == "<space>" else p for p in pieces).strip()


__all__ = ["Speech2Text", "Hypothesis", "load_model_config", "frame_shift_seconds"]
