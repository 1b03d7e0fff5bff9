"""TTS evaluation: intelligibility, quality and speaker similarity of synthesised speech.

Judges, each optional and loaded only when asked (all offline, weights inside their wheels):

============  =====================================================================  ==================
name          what                                                                   summary key
============  =====================================================================  ==================
pocketsphinx  an independent English recogniser (PocketSphinx 5, its en-us model     ``wer_pocketsphinx``
              and LM ship in the wheel) -> WER against the text that was asked for
asr           our recogniser (:class:`asr.Speech2Text` from ``asr_model_dir``,       ``wer_asr``
              greedy search, batched) -> WER
distillmos    DistillMOS (v7) MOS prediction, mean over utterances                   ``mos_distillmos``
dnsmos        DNSMOS P.835 OVRL (also SIG, BAK, P.808) from ``speechmos``; skipped   ``mos_dnsmos``
              with a log line when ``speechmos`` (with onnxruntime) does not import
sim           Resemblyzer GE2E d-vectors: cosine similarity of each utterance with   ``sim``
              its prompt (``resemblyzer.preprocess_wav``: volume normalisation and
              VAD trimming of long silences, then ``VoiceEncoder.embed_utterance``)
============  =====================================================================  ==================

How: audio is read with soundfile (mono required), resampled to 16 kHz with torchaudio and
read once for all judges. WER: references and hypotheses are normalised and scored by
:func:`asr.scoring.score` (jiwer after ``asr.data.text.normalize_text``); the summary WER is the
corpus WER (total errors / total reference words, in %); each per-utterance row holds that
utterance's hypothesis, errors and WER. MOS and SIM summaries are means over utterances. An
all-zero (silent) utterance gets SIM 0 (with a warning) and an empty hypothesis from ``asr``.
All inputs are checked and read (files exist, texts and prompts present, mono, prompts not
silent) before any judge is loaded.

Usage::

    # score one system (wav.scp: "<utt> <wav>"; prompt.scp: "<utt> <prompt wav>")
    python -m tts.evaluate --wav_scp exp/tts/decode_test/wav.scp --text data/test/text \\
        --prompt_scp exp/tts/decode_test/prompt.scp \\
        --asr_model_dir "$(cat ../asr1/exp/asr_model_dir)" --out_dir exp/tts/decode_test/eval
    # (the same as "python -m tts.evaluate score ..."); writes result.json and per_utt.tsv

    # rows side by side, e.g. ground truth, codec resynthesis and MaskGCT
    python -m tts.evaluate table --results gt/result.json resyn/result.json maskgct/result.json \\
        --names "ground truth,codec resynthesis,MaskGCT" --out RESULTS_part.md

From Python, loading each judge once for several systems::

    judges = Judges(("pocketsphinx", "distillmos", "sim"))
    results = evaluate_systems({"ground truth": gt_wavs, "MaskGCT": tts_wavs}, texts, prompts, judges)
    print(format_table([(name, r.summary) for name, r in results.items()]))

The CLI runs torch on one thread by default (``--num_threads``); each ``result.json`` records the
judges' load and scoring times (``timing``); measured speeds are in
``egs/synth_en/tts1/RESULTS.md`` (History).

Shapes: N samples (1-D signals at 16 kHz), D embedding dim.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf
from tqdm import tqdm

from nar.base import evalcli
from asr.data.text import normalize_text
from asr.scoring import score

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
#: every judge reads 16 kHz mono audio
SAMPLE_RATE = 16000
JUDGES = ("pocketsphinx", "asr", "distillmos", "dnsmos", "sim")
DEFAULT_JUDGES = ("pocketsphinx", "asr", "distillmos", "sim")
#: judges that transcribe (-> WER); the others score each utterance
RECOGNIZERS = ("pocketsphinx", "asr")

#: 16 kHz waveforms (N,) -> one transcript each
Recognizer = Callable[[Sequence[torch.Tensor]], list[str]]
#: one 16 kHz waveform (N,) -> named scores, e.g. {"mos_distillmos": 3.1}
UtteranceScorer = Callable[[torch.Tensor], dict[str, float]]
#: one 16 kHz waveform (N,) -> speaker embedding (D,)
SpeakerEncoder = Callable[[torch.Tensor], Any]

#: (summary key, table header, format) in table order
TABLE_COLUMNS = (
    ("n", "utts", "d"),
    ("wer_pocketsphinx", "WER pocketsphinx %", ".1f"),
    ("wer_asr", "WER ASR %", ".1f"),
    ("mos_distillmos", "DistillMOS", ".2f"),
    ("mos_dnsmos", "DNSMOS OVRL", ".2f"),
    ("sim", "SIM", ".3f"),
)


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`.

    ``summary``: ``n``, ``seconds`` (audio), ``judges``, ``skipped_judges``, per judge its
    summary keys (``wer_<r>``/``cer_<r>`` in %, ``errors_<r>``, ``ref_words``,
    ``mos_distillmos``, ``mos_dnsmos[_sig|_bak|_p808]``, ``sim``) and ``timing``
    (``{judge: {"load_s", "score_s", "s_per_utt"}}``).
    ``rows``: one dict per utterance (sorted by id): ``utt``, ``seconds``, ``words`` and the
    judges' columns (``hyp_<r>``, ``errors_<r>``, ``wer_<r>``, MOS keys, ``sim``).
    """

    summary: dict[str, Any]
    rows: list[dict[str, Any]]


# --------------------------------------------------------------------------- judges

def _bar(items: Sequence, desc: str, progress: bool | None):
    """tqdm over ``items`` on stderr (``progress`` None: only on a terminal)."""
    return tqdm(items, desc=desc, unit="utt", disable=None if progress is None else not progress, leave=False)


def parse_judges(judges: str | Sequence[str]) -> tuple[str, ...]:
    """``"a,b"`` or ``("a", "b")`` -> checked names without duplicates, in the order given."""
    names = [j.strip() for j in judges.split(",")] if isinstance(judges, str) else list(judges)
    names = [j for j in names if j]
    unknown = [j for j in names if j not in JUDGES]
    if unknown:
        raise ValueError(f"unknown judge(s) {unknown}; valid names: {', '.join(JUDGES)}")
    if not names:
        raise ValueError(f"no judges given; valid names: {', '.join(JUDGES)}")
    return tuple(dict.fromkeys(names))


class Judges:
    """The judge models of an evaluation: each loaded on first use and kept for later calls.

    Args:
        names: judges to run (see the module docs), a sequence or ``"a,b"``.
        asr_model_dir: model dir of the ``asr`` judge (required when it is asked).
        device: torch device for ``asr``, ``distillmos`` and ``sim``.
        asr_batch_seconds: padded seconds per batch of the ``asr`` judge.
        models: already loaded judges by name (a :data:`Recognizer` for ``pocketsphinx`` and
            ``asr``, an :data:`UtteranceScorer` for ``distillmos`` and ``dnsmos``, a
            :data:`SpeakerEncoder` for ``sim``), e.g. fakes in tests; the rest load lazily.
    """

    def __init__(
        self,
        names: str | Sequence[str] = DEFAULT_JUDGES,
        asr_model_dir: PathLike | None = None,
        device: str = "cpu",
        asr_batch_seconds: float = 120.0,
        models: Mapping[str, Any] | None = None,
    ):
        self.names = parse_judges(names)
        models = dict(models or {})
        unknown = [m for m in models if m not in JUDGES]
        if unknown:
            raise ValueError(f"models given for unknown judge(s) {unknown}; valid names: {', '.join(JUDGES)}")
        if "asr" in self.names and "asr" not in models:
            if asr_model_dir is None:
                raise ValueError("judge 'asr' needs an ASR model dir (--asr_model_dir, trained by the asr1 "
                                 "recipe); give one or leave 'asr' out of the judges")
            if not Path(asr_model_dir).is_dir():
                raise FileNotFoundError(f"{asr_model_dir}: ASR model dir of judge 'asr' does not exist")
        self.asr_model_dir = None if asr_model_dir is None else Path(asr_model_dir)
        self.device = device
        self.asr_batch_seconds = asr_batch_seconds
        self._models: dict[str, Any] = models
        #: seconds each judge took to load (0 for given models)
        self.load_seconds: dict[str, float] = {name: 0.0 for name in models}

    def get(self, name: str) -> Any:
        """The judge ``name``, loaded now if needed; None for a judge that cannot run here
        (``dnsmos`` without ``speechmos``)."""
        if name not in self.names:
            raise ValueError(f"judge {name!r} was not asked for; judges: {', '.join(self.names)}")
        if name not in self._models:
            t0 = time.perf_counter()
            self._models[name] = LOADERS[name](self)
            self.load_seconds[name] = time.perf_counter() - t0
            if self._models[name] is not None:
                logger.info(f"judge {name!r} loaded in {self.load_seconds[name]:.1f} s")
        return self._models[name]


def load_pocketsphinx(judges: Judges | None = None) -> Recognizer:
    """PocketSphinx with its default US English acoustic model, dictionary and LM."""
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")

    def recognize(wavs: Sequence[torch.Tensor]) -> list[str]:
        out = []
        for wav in _bar(wavs, "pocketsphinx", None):
            pcm = (wav.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            out.append(hyp.hypstr if hyp is not None else "")
        return out

    return recognize


def load_asr(judges: Judges) -> Recognizer:
    """Our ASR (:class:`asr.Speech2Text`, greedy, batched); silent inputs get ``""``."""
    # tts may import asr (docs/architecture.md); ESPnet is imported here, only when the judge is asked
    from asr.inference import Speech2Text

    s2t = Speech2Text(judges.asr_model_dir, device=judges.device, search="greedy", timestamps=False,
                      batch_seconds=judges.asr_batch_seconds)
    logger.info(f"judge 'asr': {s2t.model_file} ({s2t.family}); {s2t.window_summary()}")

    def recognize(wavs: Sequence[torch.Tensor]) -> list[str]:
        if s2t.sample_rate != SAMPLE_RATE:
            wavs = [taf.resample(w, SAMPLE_RATE, s2t.sample_rate) for w in wavs]
        voiced = [i for i, w in enumerate(wavs) if bool(w.any())]
        texts = [""] * len(wavs)
        if voiced:
            for i, hyp in zip(voiced, s2t([wavs[i] for i in voiced], sample_rate=s2t.sample_rate)):
                texts[i] = hyp.text
        return texts

    return recognize


def load_distillmos(judges: Judges | None = None) -> UtteranceScorer:
    """DistillMOS (ConvTransformerSQAModel, weights v7 in the wheel)."""
    import distillmos

    device = judges.device if judges is not None else "cpu"
    with contextlib.redirect_stdout(sys.stderr):  # it prints where its weights were loaded from
        model = distillmos.ConvTransformerSQAModel().eval().to(device)

    @torch.no_grad()
    def predict(wav: torch.Tensor) -> dict[str, float]:
        return {"mos_distillmos": float(model(wav[None].to(device)).reshape(-1)[0])}

    return predict


def load_dnsmos(judges: Judges | None = None) -> UtteranceScorer | None:
    """DNSMOS P.835 (and P.808) from ``speechmos``, or None (logged) when it does not import."""
    try:
        from speechmos import dnsmos
    except ImportError as e:
        logger.warning(f"judge 'dnsmos' skipped: speechmos is not importable ({e}); "
                       "pip install speechmos onnxruntime to use it")
        return None

    def predict(wav: torch.Tensor) -> dict[str, float]:
        out = dnsmos.run(wav.clamp(-1, 1).numpy().astype(np.float32), sr=SAMPLE_RATE)
        return {"mos_dnsmos": float(out["ovrl_mos"]), "mos_dnsmos_sig": float(out["sig_mos"]),
                "mos_dnsmos_bak": float(out["bak_mos"]), "mos_dnsmos_p808": float(out["p808_mos"])}

    return predict


def load_resemblyzer(judges: Judges | None = None) -> SpeakerEncoder:
    """Resemblyzer's GE2E voice encoder (weights in the wheel): 16 kHz wave -> d-vector (256,)."""
    with warnings.catch_warnings():  # scipy.ndimage.morphology / pkg_resources deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from resemblyzer import (
            VoiceEncoder,
            normalize_volume,
            preprocess_wav,
            wav_to_mel_spectrogram,
        )
        from resemblyzer.hparams import audio_norm_target_dBFS

    encoder = VoiceEncoder(judges.device if judges is not None else "cpu", verbose=False)
    wav_to_mel_spectrogram(np.zeros(SAMPLE_RATE // 10, np.float32))  # librosa's lazy imports (~3 s) count as load

    def embed(wav: torch.Tensor) -> np.ndarray:
        x = wav.numpy().astype(np.float32)
        speech = preprocess_wav(x)  # already 16 kHz: volume normalisation + long silences trimmed
        if speech.size == 0:  # the VAD found no speech: use the whole (normalised) signal
            speech = normalize_volume(x, audio_norm_target_dBFS, increase_only=True)
        return encoder.embed_utterance(speech)

    return embed


#: judge name -> loader(judges)
LOADERS: dict[str, Callable[[Judges], Any]] = {
    "pocketsphinx": load_pocketsphinx,
    "asr": load_asr,
    "distillmos": load_distillmos,
    "dnsmos": load_dnsmos,
    "sim": load_resemblyzer,
}


# --------------------------------------------------------------------------- inputs

def read_scp(path: PathLike) -> dict[str, str]:
    """``<utt> <value>`` lines (wav.scp, prompt.scp, text) -> dict; errors name the file and line."""
    return evalcli.read_scp(path)


def _check_audio_file(path: PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: {what} not found (relative paths are read from {Path.cwd()})")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises its own error types
        raise ValueError(f"{path}: {what} is not readable audio ({e})") from e
    if info.channels != 1:
        raise ValueError(f"{path}: {what} has {info.channels} channels; mono audio is required")


def check_inputs(
    wavs: Mapping[str, PathLike],
    texts: Mapping[str, str],
    prompts: Mapping[str, PathLike] | None,
    judges: Sequence[str],
    text_source: str = "texts",
    prompt_source: str = "prompts",
) -> None:
    """Every utterance has a readable mono wav and a non-empty text, and (for ``sim``) a prompt.

    ``text_source``/``prompt_source`` name where texts and prompts came from in the messages.
    """
    if not wavs:
        raise ValueError("no utterances to score (wavs is empty)")
    for utt, path in wavs.items():
        if utt not in texts:
            raise ValueError(f"utterance {utt!r} ({path}) has no text in {text_source}")
        if not normalize_text(texts[utt]):
            raise ValueError(f"{text_source}: the text of {utt!r} ({texts[utt]!r}) is empty after normalisation")
        _check_audio_file(path, f"wav of utterance {utt!r}")
    if "sim" not in judges:
        return
    if prompts is None:
        raise ValueError("judge 'sim' needs prompts (--prompt_scp: <utt> <prompt wav>)")
    for utt in wavs:
        if utt not in prompts:
            raise ValueError(f"utterance {utt!r} has no prompt in {prompt_source} (needed by judge 'sim')")
    for path in dict.fromkeys(str(prompts[utt]) for utt in wavs):
        _check_audio_file(path, "prompt wav")


def load_audio(path: PathLike) -> torch.Tensor:
    """A mono audio file -> float32 (N,) at 16 kHz; errors name the file."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, channels)
    except Exception as e:  # libsndfile's own error types
        raise ValueError(f"{path}: cannot read audio ({e})") from e
    if data.shape[1] != 1:
        raise ValueError(f"{path}: {data.shape[1]} channels; mono audio is required")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the audio is empty")
    wav = torch.from_numpy(data[:, 0].copy())  # (N,)
    if not torch.isfinite(wav).all():
        raise ValueError(f"{path}: the audio contains NaN or Inf samples")
    if rate != SAMPLE_RATE:
        wav = taf.resample(wav, rate, SAMPLE_RATE)
    return wav


# --------------------------------------------------------------------------- scoring

def utterance_errors(refs: Sequence[str], hyps: Sequence[str]) -> list[int]:
    """Word errors (substitutions + deletions + insertions) of each normalised pair (jiwer)."""
    out = jiwer.process_words(list(refs), list(hyps))
    errors = []
    for chunks in out.alignments:
        n = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                n += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                n += c.hyp_end_idx - c.hyp_start_idx
        errors.append(n)
    return errors


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two embeddings (D,)."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64).reshape(-1)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _score_wer(name: str, recognize: Recognizer, keys: list[str], audio: dict[str, torch.Tensor],
               texts: Mapping[str, str], rows: dict[str, dict]) -> dict[str, Any]:
    hyps = recognize([audio[k] for k in keys])
    if len(hyps) != len(keys):
        raise RuntimeError(f"judge {name!r} returned {len(hyps)} transcripts for {len(keys)} utterances")
    report, _ = score({k: texts[k] for k in keys}, dict(zip(keys, hyps)))
    hyp_norm = [normalize_text(h) for h in hyps]
    errors = utterance_errors([normalize_text(texts[k]) for k in keys], hyp_norm)
    for k, h, e in zip(keys, hyp_norm, errors):
        rows[k].update({f"hyp_{name}": h, f"errors_{name}": e, f"wer_{name}": 100.0 * e / rows[k]["words"]})
    assert sum(errors) == report.words.errors, "per-utterance errors disagree with asr.scoring"
    return {f"wer_{name}": 100.0 * report.wer, f"cer_{name}": 100.0 * report.cer,
            f"errors_{name}": report.words.errors, "ref_words": report.words.reference_length}


def _score_each(name: str, predict: UtteranceScorer, keys: list[str], audio: dict[str, torch.Tensor],
                wavs: Mapping[str, PathLike], rows: dict[str, dict], progress: bool | None) -> dict[str, float]:
    columns: dict[str, list[float]] = {}
    for k in _bar(keys, name, progress):
        try:
            scores = predict(audio[k])
        except Exception as e:
            raise RuntimeError(f"judge {name!r} failed on utterance {k!r} ({wavs[k]}): {e}") from e
        rows[k].update(scores)
        for col, v in scores.items():
            columns.setdefault(col, []).append(float(v))
    return {col: float(np.mean(v)) for col, v in columns.items()}


def _score_sim(encode: SpeakerEncoder, keys: list[str], audio: dict[str, torch.Tensor],
               wavs: Mapping[str, PathLike], prompts: Mapping[str, PathLike],
               prompt_audio: dict[str, torch.Tensor], rows: dict[str, dict], progress: bool | None) -> dict[str, float]:
    prompt_emb: dict[str, Any] = {}  # prompt path -> embedding: utterances may share a prompt
    sims = []
    for k in _bar(keys, "sim", progress):
        p = str(prompts[k])
        try:
            if p not in prompt_emb:
                prompt_emb[p] = encode(prompt_audio[p])
            if bool(audio[k].any()):
                sim = cosine(encode(audio[k]), prompt_emb[p])
            else:
                logger.warning(f"utterance {k!r} ({wavs[k]}) is silent: SIM 0")
                sim = 0.0
        except Exception as e:
            raise RuntimeError(f"judge 'sim' failed on utterance {k!r} ({wavs[k]}, prompt {p}): {e}") from e
        rows[k]["sim"] = sim
        sims.append(sim)
    return {"sim": float(np.mean(sims))}


def _read_prompts(keys: list[str], prompts: Mapping[str, PathLike]) -> dict[str, torch.Tensor]:
    """Each distinct prompt path -> its audio; a silent prompt is an error."""
    out = {}
    for k in keys:
        p = str(prompts[k])
        if p not in out:
            out[p] = load_audio(p)
            if not bool(out[p].any()):
                raise ValueError(f"{p}: the prompt of {k!r} is silent (all zeros): no voice to compare with")
    return out


def evaluate(
    wavs: Mapping[str, PathLike],
    texts: Mapping[str, str],
    prompts: Mapping[str, PathLike] | None = None,
    judges: Judges | str | Sequence[str] = DEFAULT_JUDGES,
    asr_model_dir: PathLike | None = None,
    device: str = "cpu",
    *,
    progress: bool | None = None,
    text_source: str = "texts",
    prompt_source: str = "prompts",
) -> Evaluation:
    """Score the utterances ``wavs`` (utt -> wav path) against ``texts`` (utt -> words asked
    for) and, for ``sim``, their ``prompts`` (utt -> prompt wav path).

    ``judges``: names (then loaded here, with ``asr_model_dir`` and ``device``) or a
    :class:`Judges` whose loaded models are reused. Texts and prompts may hold more utterances
    than ``wavs``. ``progress``: tqdm bars (None: only on a terminal, False: none).
    ``text_source``/``prompt_source`` name the inputs in error messages (e.g. file paths).
    """
    if not isinstance(judges, Judges):
        judges = Judges(judges, asr_model_dir=asr_model_dir, device=device)
    check_inputs(wavs, texts, prompts, judges.names, text_source, prompt_source)
    keys = sorted(wavs)
    audio = {k: load_audio(wavs[k]) for k in _bar(keys, "reading", progress)}
    prompt_audio = _read_prompts(keys, prompts) if "sim" in judges.names else {}
    rows = {k: {"utt": k, "seconds": audio[k].numel() / SAMPLE_RATE, "words": len(normalize_text(texts[k]).split())}
            for k in keys}
    summary: dict[str, Any] = {"n": len(keys), "seconds": sum(r["seconds"] for r in rows.values()),
                               "judges": list(judges.names), "skipped_judges": []}
    timing = {}
    for name in judges.names:
        model = judges.get(name)
        if model is None:
            summary["skipped_judges"].append(name)
            continue
        t0 = time.perf_counter()
        if name in RECOGNIZERS:
            summary.update(_score_wer(name, model, keys, audio, texts, rows))
        elif name == "sim":
            summary.update(_score_sim(model, keys, audio, wavs, prompts, prompt_audio, rows, progress))
        else:
            summary.update(_score_each(name, model, keys, audio, wavs, rows, progress))
        spent = time.perf_counter() - t0
        timing[name] = {"load_s": judges.load_seconds.get(name, 0.0), "score_s": spent, "s_per_utt": spent / len(keys)}
    if "asr" in judges.names and judges.asr_model_dir is not None:
        summary["asr_model_dir"] = str(judges.asr_model_dir)
    summary["timing"] = timing
    return Evaluation(summary, [rows[k] for k in keys])


def evaluate_systems(
    systems: Mapping[str, Mapping[str, PathLike]],
    texts: Mapping[str, str],
    prompts: Mapping[str, PathLike] | None = None,
    judges: Judges | str | Sequence[str] = DEFAULT_JUDGES,
    asr_model_dir: PathLike | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> dict[str, Evaluation]:
    """Score several systems (name -> wavs, e.g. ground truth, codec resynthesis, MaskGCT) with
    the same judges, each loaded once; keyword arguments go to :func:`evaluate`."""
    if not systems:
        raise ValueError("systems is empty: give name -> {utt: wav path} for at least one system")
    if not isinstance(judges, Judges):
        judges = Judges(judges, asr_model_dir=asr_model_dir, device=device)
    out = {}
    for name, wavs in systems.items():
        logger.info(f"scoring {name!r} ({len(wavs)} utterances)")
        out[name] = evaluate(wavs, texts, prompts, judges, **kwargs)
    return out


# --------------------------------------------------------------------------- reports

def format_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Markdown table of summaries side by side, one row per ``(name, summary)``: the columns of
    :data:`TABLE_COLUMNS` that at least one summary has; a missing value shows as ``–``."""
    if not rows:
        raise ValueError("rows is empty: give at least one (name, summary) pair")
    for name, summary in rows:
        if not isinstance(summary, Mapping):
            raise TypeError(f"summary of {name!r} must be a mapping, got {type(summary).__name__}")
    cols = [c for c in TABLE_COLUMNS if any(s.get(c[0]) is not None for _, s in rows)]
    body = []
    for name, summary in rows:
        values = [summary.get(key) for key, _, _ in cols]
        body.append([name] + [None if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
                              for v, (_, _, fmt) in zip(values, cols)])
    return evalcli.markdown_table(["system"] + [head for _, head, _ in cols], body)


def read_result(path: PathLike) -> dict[str, Any]:
    """A ``result.json`` written by ``python -m tts.evaluate`` -> its summary dict."""
    return evalcli.read_result_json(path)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(round(v, 4))
    return str(v).replace("\t", " ").replace("\n", " ")


def write_outputs(evaluation: Evaluation, out_dir: PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """``out_dir/result.json`` (the summary, plus ``extra``) and ``out_dir/per_utt.tsv``, each
    written atomically."""
    result = {**(extra or {}), **evaluation.summary, "per_utt": "per_utt.tsv"}
    columns = list(dict.fromkeys(c for row in evaluation.rows for c in row))
    lines = ["\t".join(columns)]
    lines += ["\t".join(_cell(row.get(c, "")) for c in columns) for row in evaluation.rows]
    evalcli.write_rows(Path(out_dir) / "per_utt.tsv", lines)
    return evalcli.write_result_json(out_dir, result)


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line: ``n=200 wer_pocketsphinx=31.2% ... sim=0.812``."""
    parts = [f"n={summary['n']}"]
    for key, _, fmt in TABLE_COLUMNS[1:]:
        if summary.get(key) is not None:
            parts.append(f"{key}={format(summary[key], fmt)}{'%' if key.startswith('wer_') else ''}")
    if summary.get("skipped_judges"):
        parts.append(f"(skipped: {', '.join(summary['skipped_judges'])})")
    return " ".join(parts)


# --------------------------------------------------------------------------- CLI

PROG = "python -m tts.evaluate"


def _score_main(args: argparse.Namespace) -> int:
    judges = Judges(args.judges, asr_model_dir=args.asr_model_dir, device=args.device,
                    asr_batch_seconds=args.asr_batch_seconds)
    wavs = read_scp(args.wav_scp)
    texts = read_scp(args.text)
    prompts = read_scp(args.prompt_scp) if args.prompt_scp is not None else None
    ev = evaluate(wavs, texts, prompts, judges, text_source=str(args.text),
                  prompt_source=str(args.prompt_scp) if args.prompt_scp else "prompts")
    extra = {"wav_scp": str(args.wav_scp), "text": str(args.text),
             "prompt_scp": None if args.prompt_scp is None else str(args.prompt_scp)}
    path = write_outputs(ev, args.out_dir, extra)
    print(f"{summary_line(ev.summary)} -> {path}", flush=True)
    return 0


def _table_main(args: argparse.Namespace) -> int:
    names = evalcli.table_names(args.names, args.results, [p.parent.name for p in args.results])
    evalcli.emit_table(format_table([(n, read_result(p)) for n, p in zip(names, args.results)]), args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score one system (the default command)")
    s.add_argument("--wav_scp", type=Path, required=True, help="<utt> <synthesised wav> lines")
    s.add_argument("--text", type=Path, required=True, help="<utt> <words> lines (what was asked for)")
    s.add_argument("--prompt_scp", type=Path, default=None, help="<utt> <prompt wav> lines (judge sim)")
    s.add_argument("--asr_model_dir", type=Path, default=None, help="model dir of judge asr")
    s.add_argument("--judges", default=",".join(DEFAULT_JUDGES),
                   help=f"comma-separated, from {', '.join(JUDGES)} (default: %(default)s)")
    s.add_argument("--out_dir", type=Path, required=True, help="writes result.json and per_utt.tsv here")
    s.add_argument("--device", default="cpu")
    evalcli.add_threads_argument(s)
    s.add_argument("--asr_batch_seconds", type=float, default=120.0)
    s.set_defaults(func=_score_main)
    evalcli.add_table_command(sub, _table_main, "the results' dir names")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("score", "table", "-h", "--help"):
        argv.insert(0, "score")  # "python -m tts.evaluate --wav_scp ..." scores
    return evalcli.run_cli(PROG, build_parser(), argv, logger)


if __name__ == "__main__":
    sys.exit(main())
