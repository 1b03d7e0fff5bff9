"""Python inference API for nar-speech ASR models: :class:`Speech2Text`.

Example (a model trained by ``egs/synth_en/asr1/run.sh``)::

    >>> from asr import Speech2Text                                     # doctest: +SKIP
    >>> s2t = Speech2Text("egs/synth_en/asr1/exp/asr_train_ctc_char")  # doctest: +SKIP
    >>> hyp = s2t("a.wav")                                               # doctest: +SKIP
    >>> hyp.text, hyp.timestamps[0]                                      # doctest: +SKIP
    ('hello world', (0.32, 0.416))
    >>> hyps = s2t(["a.wav", numpy_array, torch_tensor])                  # batched  # doctest: +SKIP

:class:`Speech2Text` is a thin front end: it loads a model directory (``config.yaml`` +
checkpoint), reads and checks audio, cuts long inputs into windows, packs batches, runs the
encoder once per batch, hands the encoder output to the model family's decoder (the protocol of
:mod:`asr.decoding`: ``model.make_decoder(DecodeConfig)``), and turns the family's token ids and
frame spans into text and seconds. It never looks at which family a model is.

Shapes: B batch, N samples, T frames (after subsampling), V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence, Union

import torch
from tqdm import tqdm

from asr.audio import AudioInput, as_waveform
from asr.decoding import DecodeConfig, TokenHypothesis, encode_waveforms
from asr.longform import AUTO, DEFAULT_BATCH_SECONDS, Piece, pack_batches, plan_segments, resolve_window, stitch
from asr.model_dir import frame_shift_seconds, load_asr_model, sample_rate, training_max_seconds


#: an input decoded in one piece (``max_seconds=None``) may need at most this much memory for one
#: self-attention map (batch 1: frames^2 x heads x 4 bytes); a longer one is refused before any
#: allocation, with the windowed alternative named (20 minutes at 40 ms frames, 4 heads: 14 GB)
MAX_ATTENTION_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Hypothesis:
    """One recognition result."""

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    score: float  # log-probability of the hypothesis (greedy: best path; beam: prefix score)
    timestamps: tuple[tuple[float, float], ...]  # per token (start, end) in seconds


class Speech2Text:
    """Recognise speech with a trained nar-speech model (any family: CTC, Paraformer, CASS-NAT,
    the AR baseline, or one added later that implements :mod:`asr.decoding`'s protocol).

    Args:
        model_dir: a training output directory (``config.yaml`` + checkpoints).
        model_file: checkpoint to load (default: by :data:`nar.base.experiment.CHECKPOINT_PREFERENCE`).
        device: ``"cpu"`` or ``"cuda"``.
        decode: a :class:`asr.decoding.DecodeConfig`; or give its options as keyword arguments
            (``search="beam", beam_size=10, ngram_file=...``; see that class for every option
            and which family reads it). An option the model's family does not read is an error.
        timestamps: per-token (start, end) seconds (CTC and AED: forced alignment of each
            hypothesis on the CTC posteriors; Paraformer: CIF firing frames; CASS-NAT: the
            alignment used).
        batch_seconds: many inputs are sorted by duration and packed into batches whose padded
            duration (items x longest) stays within this many seconds; results come back in
            input order and equal decoding each input alone.
        batch_size: at most this many items per batch (None: only ``batch_seconds`` limits).
        max_seconds: inputs longer than this are cut into windows of ``max_seconds`` overlapping
            by ``overlap_seconds``, decoded in batches like other inputs and stitched at token
            level (:mod:`asr.longform`). Timestamps are in whole-file time; a long input gets one
            (stitched) hypothesis even with ``nbest > 1``. None: never cut. ``"auto"`` (default):
            the longest training utterance, read from the training config's
            ``train_shape_file`` (see :func:`asr.longform.resolve_window`); the chosen value and
            why: ``window_source``.
        overlap_seconds: see ``max_seconds``; ``"auto"``: a quarter of the window, at most 4 s.
        progress: a tqdm bar over the segments when there is more than one batch
            (None: only on a terminal); progress_desc: its label.
    """

    def __init__(
        self,
        model_dir: Union[str, Path],
        model_file: Union[str, Path, None] = None,
        device: str = "cpu",
        decode: DecodeConfig | None = None,
        timestamps: bool = True,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        batch_size: int | None = None,
        max_seconds: float | str | None = AUTO,
        overlap_seconds: float | str = AUTO,
        progress: bool | None = None,
        progress_desc: str = "decode",
        **decode_options,
    ):
        if decode is not None and decode_options:
            raise ValueError(f"give decode options either as decode= or as keywords, not both: {sorted(decode_options)}")
        unknown = sorted(set(decode_options) - set(DecodeConfig.option_names()))
        if unknown:
            raise TypeError(f"Speech2Text: unknown option(s) {unknown}; decode options: "
                            f"{list(DecodeConfig.option_names())}")
        if batch_seconds <= 0 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"need batch_seconds > 0 and batch_size >= 1, got {batch_seconds}, {batch_size}")
        self.decode_config = decode if decode is not None else DecodeConfig(**decode_options)
        self.batch_seconds, self.batch_size = float(batch_seconds), batch_size
        self.progress, self.progress_desc = progress, progress_desc
        self.model_dir = Path(model_dir)
        self.model, self.config, self.model_file = load_asr_model(self.model_dir, model_file, device)
        config = self.config
        train_seconds, shape_file = (
            training_max_seconds(config, self.model_dir) if AUTO in (max_seconds, overlap_seconds) else (None, None)
        )
        self.max_seconds, self.overlap_seconds, self.window_source = resolve_window(
            max_seconds, overlap_seconds, train_seconds
        )
        if shape_file is not None:
            self.window_source += f" in {shape_file}"
        self.device = torch.device(device)
        self.token_list: list[str] = config["token_list"]
        self.token_type = config.get("token_type", "char")
        self.sample_rate = sample_rate(config)
        self.frame_shift = frame_shift_seconds(config)
        self.timestamps = timestamps
        try:
            self.decoder = self.model.make_decoder(self.decode_config)
        except ValueError as err:  # the family's message, with the model named (same error type)
            raise type(err)(f"{self.model_dir}: {err}") from None
        self._min_samples: int | None = None

    @property
    def min_samples(self) -> int:
        """The shortest input (samples at :attr:`sample_rate`) this model turns into at least one
        encoder frame: set by its front end (window, centring) and its subsampling layer, found once
        by bisection on the model itself (a few encoder calls on inputs under a second)."""
        if self._min_samples is None:
            self._min_samples = self._find_min_samples()
        return self._min_samples

    def _find_min_samples(self) -> int:
        def gives_a_frame(n: int) -> bool:
            probe = 1e-2 * torch.sin(0.3 * torch.arange(n, dtype=torch.float32))
            try:
                return int(self.encode([probe]).lengths[0]) >= 1
            except Exception:  # too short for the front end or the subsampling layer
                return False

        limit = 4 * self.sample_rate
        lo, hi = 0, 16  # invariant: lo gives no frame (0 samples never does), hi does
        while not gives_a_frame(hi):
            if hi >= limit:
                raise RuntimeError(f"{self.model_dir}: the model gives no encoder frame even for {limit} samples "
                                   "of input; is the front end configured for this sample rate?")
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if gives_a_frame(mid) else (mid, hi)
        return max(hi, 1)

    def too_short(self, wav: torch.Tensor) -> bool:
        """Whether a waveform at the model rate is shorter than :attr:`min_samples`."""
        return wav.numel() < self.min_samples

    def check_lengths(self, wavs: Sequence[torch.Tensor], names: Sequence[str]) -> None:
        """Refuse, naming the input, a waveform too short for one encoder frame, or (``max_seconds``
        None: decoded in one piece) one whose self-attention map would exceed
        :data:`MAX_ATTENTION_BYTES`."""
        for wav, name in zip(wavs, names):
            n = wav.numel()
            if n < self.min_samples:
                raise ValueError(
                    f"{name}: {n} samples ({1000 * n / self.sample_rate:.1f} ms) is too short for this model: "
                    f"its front end and subsampling need at least {self.min_samples} samples "
                    f"({1000 * self.min_samples / self.sample_rate:.0f} ms) for one encoder frame")
            if self.max_seconds is None:
                frames = n / self.sample_rate / self.frame_shift
                heads = int((self.config.get("encoder_conf") or {}).get("attention_heads", 4))
                need = frames * frames * heads * 4
                if need > MAX_ATTENTION_BYTES:
                    raise ValueError(
                        f"{name}: {n / self.sample_rate:.0f} s in one piece (max_seconds=None) needs a "
                        f"{frames:.0f} x {frames:.0f} self-attention map per head, about {need / 2**30:.1f} GiB; "
                        f"decode it in windows: max_seconds='auto' (the default) or a number of seconds")

    @property
    def family(self) -> str:
        """The model family's name (a label for logs and tables)."""
        return getattr(self.model, "family", type(self.model).__name__)

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
        self.check_lengths(wavs, [f"inputs[{i}]" for i in range(len(wavs))])
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
        spans = self.timestamps if timestamps is None else bool(timestamps)
        nbests = self.decoder.decode(self.encode(wavs), wavs=wavs, names=names, spans=spans)
        return self.to_hypotheses(nbests)

    def encode(self, wavs: Sequence[torch.Tensor]):
        """Mono waveforms at the model rate -> the model's encoder output (padded batch)."""
        return encode_waveforms(self.model, wavs, self.device)

    def ctc_log_probs(self, wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mono waveforms at the model rate -> CTC log-probs (B, T, V) and lengths (B,)."""
        if getattr(self.model, "ctc", None) is None:
            raise ValueError(f"{self.model_dir}: the model has no CTC head (model_conf.ctc_weight = 0)")
        enc = self.encode(wavs)
        return self.model.ctc_log_probs(enc), enc.lengths

    def to_hypotheses(self, nbests: Sequence[Sequence[TokenHypothesis]]) -> list[list[Hypothesis]]:
        """A family decoder's output as :class:`Hypothesis` lists: text from the token list,
        spans (encoder frames, end exclusive) as seconds."""
        shift = self.frame_shift
        return [[self._hypothesis(h.token_ids, h.score, [(round(s * shift, 3), round(e * shift, 3)) for s, e in h.spans])
                 for h in hyps] for hyps in nbests]

    def _hypothesis(self, ids, score: float, seconds) -> Hypothesis:
        ids = tuple(int(i) for i in ids)
        return Hypothesis(
            text=self.tokens_to_text(ids),
            tokens=tuple(self.token_list[i] for i in ids),
            token_ids=ids,
            score=float(score),
            timestamps=tuple(seconds),
        )

    def tokens_to_text(self, ids: Sequence[int]) -> str:
        """Token ids to text: ``<space>`` (char) and ``▁`` (BPE) become spaces."""
        pieces = [self.token_list[i] for i in ids]
        pieces = [p for p in pieces if not (p.startswith("<") and p.endswith(">")) or p == "<space>"]
        if self.token_type == "bpe":
            return "".join(pieces).replace("\u2581", " ").strip()
        return "".join(" " if p == "<space>" else p for p in pieces).strip()


__all__ = ["Speech2Text", "Hypothesis", "DecodeConfig"]
