"""Zero-shot text-to-speech with MaskGCT: ``Text2Speech(text, prompt_wav, prompt_text) -> wav``.

    tts = Text2Speech("exp/t2s", "exp/s2a", duration="model")
    wav = tts("The target sentence.", prompt_wav, "What the prompt says.", prompt_sr=16000)
    wavs = tts.batch(texts, prompt_wavs, prompt_texts, prompt_sr=16000, seeds=range(len(texts)))

Pipeline per item (all stages batched; each item decodes as it would alone, given its seed):

1. phonemes of the prompt text and the target text (espeak-ng, :mod:`tts.text`), joined as
   ``prompt phones | target phones``;
2. the prompt's semantic tokens (:class:`tts.semantic.SemanticTokenizer`) and acoustic codes
   (the acoustic tokenizer of the S2A model);
3. the target length in semantic frames: ``duration="rule"`` (the prompt's speaking rate:
   prompt frames / prompt phones x target phones, as Amphion), ``"model"`` (a trained
   :class:`tts.duration.PhoneDurationModel`: per-phone weights fitted on the training set), or
   ``seconds=`` given by the caller;
4. T2S mask-predict (``t2s_config``) -> semantic tokens of the target;
5. S2A mask-predict, codebook by codebook (``s2a_config``) -> acoustic codes;
6. the acoustic tokenizer's decoder -> waveform at its sample rate.

Defaults follow Amphion's MaskGCT inference: T2S 25 steps, temperature 0.9 annealed, top-k of
2 % of the vocabulary, hidden-state guidance 2.5 with rescale 0.75, Gumbel-noised confidence;
S2A steps ``[25, 10, 1, ...]`` at temperature 1.5. A single-step codebook takes the argmax
(Amphion samples it at temperature 0.2).

Inputs are checked before any model runs, each error naming the item and the input: texts are
cleaned by :func:`tts.text.clean_text` (control characters become spaces, emoji and other
unsayable symbols are dropped, with a warning listing them; nothing left is an error); prompts by
:func:`nar.base.checks.check_waveform` (int16/int32 rescaled, float samples at the integer scale
refused), at the model's sample rate, at least :data:`MIN_PROMPT_SECONDS` long and not all zeros;
``seconds`` from one semantic frame to :attr:`Text2Speech.max_seconds` (the models' ``max_frames``
if they have one; MaskGCT's sinusoidal/rotary positions have no hard limit, so the cap is
:data:`MAX_SECONDS`), which also bounds the rule/model duration estimates; the decoding configs by
:func:`audio_gen.inference.check_decoding_config` (guidance scale in [0, 20], temperatures in
[0, 10], steps in [1, 1000], top-k within the vocabulary), when they are set.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from audio_gen.data import as_mono_wave
from audio_gen.experiment import load_trained
from audio_gen.inference import check_decoding_config
from nar.base.checks import check_integer, check_range, check_seed
from nar.mask_predict import MaskPredictConfig
from tts.duration import PhoneDurationModel, rule_frames
from tts.text import Phonemizer, PhoneTokenizer

logger = logging.getLogger(__name__)

DURATIONS = ("rule", "model")
#: shortest prompt accepted, in seconds
MIN_PROMPT_SECONDS = 0.5
#: longest target, in seconds, of models without a hard length limit (MaskGCT's positions have
#: none; beyond about a minute attention cost and quality both run away): ``seconds=`` and the
#: duration estimates above it are refused
MAX_SECONDS = 60.0


def load_model(model_dir: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
               device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Build a trained T2S/S2A model from ``model_dir/config.yaml`` and a checkpoint."""
    from tts.task import MaskGCTTask

    return load_trained(MaskGCTTask, model_dir, model_file, device, ("semantic_tokenizer", "acoustic_tokenizer"))


def default_t2s_config(vocab: int, mask_id: int) -> MaskPredictConfig:
    return MaskPredictConfig(mask_id=mask_id, steps=25, schedule="cosine", temperature=0.9, top_k=max(1, math.ceil(0.02 * vocab)),
                             guidance="hidden", cfg_scale=2.5, cfg_rescale=0.75, confidence_noise=1.0)


def default_s2a_config(num_codebooks: int, vocab: int, mask_id: int) -> MaskPredictConfig:
    steps = tuple(([25, 10] + [1] * num_codebooks)[:num_codebooks])
    return MaskPredictConfig(mask_id=mask_id, steps=steps, schedule="cosine", temperature=1.5,
                             top_k=max(1, math.ceil(0.02 * vocab)), guidance="hidden", cfg_scale=2.5,
                             cfg_rescale=0.75, confidence_noise=1.0)


class Text2Speech:
    """MaskGCT zero-shot TTS from trained ``t2s`` and ``s2a`` directories (see the module docs).

    Args:
        t2s_dir, s2a_dir: ESPnet training directories (config.yaml + checkpoint).
        duration: "rule" or "model" (needs ``duration_model``, a ``duration.json``).
        duration_model: path of a saved :class:`tts.duration.PhoneDurationModel`.
        t2s_config, s2a_config: mask-predict strategies (defaults: Amphion's, see module docs).
        device: torch device. semantic_tokenizer / acoustic_tokenizer: override the tokenizer
            directories recorded in the training configs.
    """

    def __init__(self, t2s_dir: Union[str, Path], s2a_dir: Union[str, Path], duration: str = "rule",
                 duration_model: Optional[Union[str, Path]] = None, t2s_config: Optional[MaskPredictConfig] = None,
                 s2a_config: Optional[MaskPredictConfig] = None, device: str = "cpu",
                 semantic_tokenizer: Optional[Union[str, Path]] = None,
                 acoustic_tokenizer: Optional[Union[str, Path]] = None, language: str = "en-us"):
        from audio_gen.tokenizers import load_tokenizer
        from tts.semantic import SemanticTokenizer

        if duration not in DURATIONS:
            raise ValueError(f"duration must be one of {DURATIONS}, got {duration!r}")
        self.device = device
        self.t2s, t2s_cfg = load_model(t2s_dir, device=device)
        self.s2a, s2a_cfg = load_model(s2a_dir, device=device)
        if t2s_cfg.get("model") != "t2s" or s2a_cfg.get("model") != "s2a":
            raise ValueError(f"{t2s_dir} must hold a t2s model and {s2a_dir} an s2a model, got "
                             f"{t2s_cfg.get('model')!r} and {s2a_cfg.get('model')!r}")
        sem_dir = semantic_tokenizer or t2s_cfg.get("semantic_tokenizer")
        ac_dir = acoustic_tokenizer or s2a_cfg.get("acoustic_tokenizer")
        if not sem_dir or not ac_dir:
            raise ValueError("the training configs name no semantic_tokenizer / acoustic_tokenizer; pass them")
        self.semantic = SemanticTokenizer.load(sem_dir, device=device)
        self.acoustic = load_tokenizer(ac_dir)
        if self.semantic.codebook_size != self.t2s.num_semantic or self.s2a.num_codebooks != self.acoustic.num_codebooks:
            raise ValueError(f"tokenizers ({sem_dir}, {ac_dir}) do not match the models' vocabularies")
        self.sample_rate = int(self.acoustic.sample_rate)
        self.phonemizer = Phonemizer(language)
        self.phone_tokenizer = PhoneTokenizer(t2s_cfg["token_list"])
        self.duration = duration
        self.duration_model = None
        if duration == "model":
            if duration_model is None:
                raise ValueError("duration='model' needs duration_model (a duration.json from tts.bin.fit_duration)")
            self.duration_model = PhoneDurationModel.load(duration_model)
        self.max_frames = self._max_frames(t2s_cfg)
        self.t2s_config = t2s_config or default_t2s_config(self.t2s.num_semantic, self.t2s.mask_id)
        self.s2a_config = s2a_config or default_s2a_config(self.s2a.num_codebooks, self.s2a.codebook_size,
                                                           self.s2a.mask_id)

    @property
    def t2s_config(self) -> MaskPredictConfig:
        """T2S decoding configuration (checked by :func:`~audio_gen.inference.check_decoding_config` when set)."""
        return self._t2s_config

    @t2s_config.setter
    def t2s_config(self, config: MaskPredictConfig) -> None:
        self._t2s_config = check_decoding_config(config, "t2s_config", self.t2s.mask_id, self.t2s.num_semantic, 1)

    @property
    def s2a_config(self) -> MaskPredictConfig:
        """S2A decoding configuration (checked when set, one ``steps`` entry per codebook)."""
        return self._s2a_config

    @s2a_config.setter
    def s2a_config(self, config: MaskPredictConfig) -> None:
        self._s2a_config = check_decoding_config(config, "s2a_config", self.s2a.mask_id, self.s2a.codebook_size,
                                                 self.s2a.num_codebooks)

    def _max_frames(self, t2s_cfg: dict) -> Optional[int]:
        """The T2S model's hard length limit in semantic frames (prompt + target), if it has one:
        a ``max_frames`` attribute or ``model_conf.max_frames`` of its config; None otherwise."""
        limit = getattr(self.t2s, "max_frames", None) or (t2s_cfg.get("model_conf") or {}).get("max_frames")
        return int(limit) if limit else None

    @property
    def max_seconds(self) -> float:
        """The longest target accepted: the model's ``max_frames`` at the semantic frame rate if it
        has a hard limit, else :data:`MAX_SECONDS`."""
        if self.max_frames is not None:
            return self.max_frames / float(self.semantic.frame_rate)
        return MAX_SECONDS

    # ------------------------------------------------------------------ checks
    def _check_seconds(self, value, name: str) -> Optional[float]:
        """``seconds`` of item ``name``: None (estimated) or from one semantic frame to :attr:`max_seconds`."""
        if value is None:
            return None
        rate = float(self.semantic.frame_rate)
        why = (f"the model's max_frames = {self.max_frames}" if self.max_frames is not None else
               "MAX_SECONDS, as MaskGCT has no hard length limit")
        return check_range(value, f"{name}: seconds", 1.0 / rate, self.max_seconds,
                           note=f" (from one semantic frame at {rate:g} Hz up to {why})")

    def _check_prompt(self, wav, sr: int, name: str) -> torch.Tensor:
        wav = as_mono_wave(wav, f"{name} (prompt_wav)")
        if int(sr) != self.sample_rate:
            raise ValueError(f"{name}: the prompt is at {sr} Hz but the model works at {self.sample_rate} Hz; "
                             f"resample it first (torchaudio.functional.resample(wav, {sr}, {self.sample_rate}))")
        if wav.numel() < MIN_PROMPT_SECONDS * self.sample_rate:
            raise ValueError(f"{name}: the prompt is {wav.numel() / self.sample_rate:.2f} s long; at least "
                             f"{MIN_PROMPT_SECONDS} s of the voice to clone is needed")
        if not bool(wav.abs().max() > 0):
            raise ValueError(f"{name} (prompt_wav): the prompt is all zeros (silence): there is no voice to clone")
        return wav

    def _check_semantic(self, tokens, name: str) -> torch.Tensor:
        """A (T,) tensor of semantic token ids in [0, num_semantic), T >= 1."""
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer torch.Tensor of semantic tokens, got "
                            f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        tokens = tokens.reshape(-1)
        if tokens.numel() == 0:
            raise ValueError(f"{name} is empty (at least one semantic token is needed)")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.t2s.num_semantic:
            raise ValueError(f"{name} must hold token ids in [0, {self.t2s.num_semantic - 1}], got {lo}..{hi}")
        return tokens

    def _phones(self, text, name: str, what: str) -> list[str]:
        if text is None or (isinstance(text, str) and not text.strip()):
            raise ValueError(f"{name}: the {what} is missing or empty" +
                             (" (zero-shot TTS needs the transcript of the prompt audio)" if what == "prompt text" else ""))
        if not isinstance(text, str):
            raise TypeError(f"{name}: the {what} must be a str, got {type(text).__name__}")
        return self.phonemizer(text, name=f"{name} ({what})")

    # ------------------------------------------------------------------ API
    def __call__(self, text: str, prompt_wav, prompt_text: str, prompt_sr: Optional[int] = None,
                 seconds: Optional[float] = None, seed: int = 0) -> torch.Tensor:
        """One utterance: (N,) float waveform at :attr:`sample_rate`."""
        return self.batch([text], [prompt_wav], [prompt_text], prompt_sr=prompt_sr,
                          seconds=None if seconds is None else [seconds], seeds=[seed])[0]

    @torch.no_grad()
    def batch(self, texts: Sequence[str], prompt_wavs: Sequence, prompt_texts: Sequence[str],
              prompt_sr: Optional[int] = None, seconds: Optional[Sequence[Optional[float]]] = None,
              seeds: Optional[Sequence[int]] = None, names: Optional[Sequence[str]] = None,
              progress: Optional[Callable[[str, object], None]] = None,
              target_semantic: Optional[Sequence[torch.Tensor]] = None) -> list[torch.Tensor]:
        """Synthesise a batch; item i is ``texts[i]`` in the voice of ``prompt_wavs[i]``.

        ``prompt_sr`` defaults to :attr:`sample_rate`; ``seconds[i]`` (or None) fixes an item's
        length; ``seeds[i]`` seeds its random draws (default i); ``progress(stage, step)`` is
        called after every mask-predict step with stage "t2s" or "s2a". ``target_semantic[i]``
        (T,) replaces T2S's output for item i (an "oracle T2S" diagnostic: the semantic tokens
        of a reference recording of the target sentence).
        """
        for arg, value in (("texts", texts), ("prompt_wavs", prompt_wavs), ("prompt_texts", prompt_texts)):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise TypeError(f"{arg} must be a list (one entry per item), got {type(value).__name__}")
        n = len(texts)
        if n == 0:
            raise ValueError("texts is empty")
        if len(prompt_wavs) != n or len(prompt_texts) != n:
            raise ValueError(f"texts ({n}), prompt_wavs ({len(prompt_wavs)}) and prompt_texts "
                             f"({len(prompt_texts)}) must have the same length")
        names, seconds, seeds, target_semantic = (None if x is None else list(x)
                                                  for x in (names, seconds, seeds, target_semantic))
        optional = {"names": names, "seconds": seconds, "seeds": seeds, "target_semantic": target_semantic}
        for arg, value in optional.items():
            if value is not None and len(value) != n:
                raise ValueError(f"{arg} has {len(value)} items but texts has {n}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
        names = [str(x) for x in names] if names is not None else [f"item {i}" for i in range(n)]
        seconds = [self._check_seconds(s, nm) for s, nm in zip(seconds, names)] if seconds is not None else [None] * n
        seeds = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)] if seeds is not None else list(range(n))
        sr = self.sample_rate if prompt_sr is None else check_integer(prompt_sr, "prompt_sr", 1000, 384_000)
        prompts = [self._check_prompt(w, sr, nm) for w, nm in zip(prompt_wavs, names)]
        p_phones = [self._phones(t, nm, "prompt text") for t, nm in zip(prompt_texts, names)]
        t_phones = [self._phones(t, nm, "text") for t, nm in zip(texts, names)]
        if target_semantic is not None:
            target_semantic = [self._check_semantic(x, f"target_semantic[{i}]") for i, x in enumerate(target_semantic)]
        dev = self.device

        lens = torch.tensor([w.numel() for w in prompts])
        wav_pad = torch.zeros(n, int(lens.max()))
        for i, w in enumerate(prompts):
            wav_pad[i, : w.numel()] = w
        sem_p, sem_p_lens = self.semantic.encode(wav_pad, lens)  # (B, Ps) at the semantic rate
        codes_p, codes_p_lens = self.acoustic.encode(wav_pad, lens)  # (B, K, P)

        target = []
        rate = float(self.semantic.frame_rate)
        for i in range(n):
            if seconds[i] is not None:
                frames = seconds[i] * rate
            elif self.duration == "model":
                frames = self.duration_model.predict(p_phones[i], float(sem_p_lens[i]), t_phones[i])
            else:
                frames = rule_frames(p_phones[i], float(sem_p_lens[i]), t_phones[i])
            if seconds[i] is None and frames / rate > self.max_seconds:
                raise ValueError(f"{names[i]} (text): the {self.duration} duration estimate is {frames / rate:.1f} s, "
                                 f"beyond the {self.max_seconds:g} s allowed (Text2Speech.max_seconds); split the "
                                 "text into shorter sentences or pass seconds=")
            if self.max_frames is not None and int(sem_p_lens[i]) + round(frames) > self.max_frames:
                raise ValueError(f"{names[i]}: the prompt ({int(sem_p_lens[i])} frames) and the target "
                                 f"({round(frames)} frames) exceed the model's max_frames = {self.max_frames}; "
                                 "use a shorter prompt or text")
            target.append(max(1, int(round(frames))))
        target_lens = torch.tensor(target, device=dev)

        ids = [self.phone_tokenizer.encode(p + ["|"] + t) for p, t in zip(p_phones, t_phones)]
        ph_lens = torch.tensor([len(x) for x in ids], device=dev)
        phones = torch.zeros((n, int(ph_lens.max())), dtype=torch.long, device=dev)
        for i, x in enumerate(ids):
            phones[i, : len(x)] = torch.tensor(x)

        def gens():
            return [torch.Generator().manual_seed(int(s)) for s in seeds]

        def report(stage):
            return None if progress is None else (lambda step, tokens: progress(stage, step))

        if target_semantic is None:
            sem_t, sem_t_lens = self.t2s.generate(phones, ph_lens, sem_p.to(dev), sem_p_lens.to(dev), target_lens,
                                                  self.t2s_config, generator=gens(), progress=report("t2s"))
        else:
            sem_t_lens = torch.tensor([int(x.numel()) for x in target_semantic], device=dev)
            sem_t = torch.zeros((n, int(sem_t_lens.max())), dtype=torch.long, device=dev)
            for i, x in enumerate(target_semantic):
                sem_t[i, : x.numel()] = x.reshape(-1).long().to(dev)
        codes, frames = self.s2a.generate(sem_p.to(dev), sem_p_lens.to(dev), sem_t, sem_t_lens, codes_p.to(dev),
                                          codes_p_lens.to(dev), self.s2a_config, generator=gens(),
                                          progress=report("s2a"))
        wav, wav_lens = self.acoustic.decode(codes.cpu(), frames.cpu())
        return [wav[i, : int(wav_lens[i])].clone() for i in range(n)]

    def describe(self) -> dict:
        return {"duration": self.duration, "t2s": self.t2s_config.__dict__, "s2a": self.s2a_config.__dict__}


__all__ = ["Text2Speech", "load_model", "default_t2s_config", "default_s2a_config"]
