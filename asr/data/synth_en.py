"""Synthetic English ASR corpus from Debian's offline TTS engines.

Speakers are voices of three engines: espeak-ng accents × variants (``espeak:en-us+f3``),
flite voices (``flite:slt``) and festival voices (``festival:kal_diphone``). Each speaker
draws (seeded) a centre rate and pitch; every utterance draws its rate, pitch and peak
level around that centre. Audio is written as 16 kHz mono 16-bit WAV via sox.

Splits: ``train`` (``--train_hours`` of estimated audio), ``dev`` (same voices as train)
and ``test`` (held-out voices that never occur in train or dev). Sentences are disjoint
across the three splits. Training audio is shared between engines by estimated duration
(``--engine_shares``; festival is the slowest engine, so its default share is small).
Optionally ``dev_unseen`` (``--unseen_dev_warps``): ``dev``'s sentences by the flite/festival
train voices at formant warps training never had, a validation set of unseen vocal tracts.

The build is deterministic for a seed (same utterances, voices, parameters and
byte-identical WAVs, whatever ``--nj``), idempotent (a ``.done`` sentinel per split/job
under ``OUT/.state``; a rerun after completion does nothing) and resumable (WAVs are
written to a temporary name and renamed; a rerun synthesises only missing utterances).

Usage::

    python -m asr.data.synth_en --out downloads/synth_en --train_hours 1 \\
        --dev_utts 200 --test_utts 200 --nj 2 --seed 0
    python -m asr.data.synth_en --list_voices

Layout: ``OUT/wav/<spk>/<utt>.wav``, data dirs ``OUT/{train,dev,test}``, per-utterance
metadata ``OUT/meta/<split>.tsv`` and statistics ``OUT/stats.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping, Sequence

import soundfile as sf

from asr.data.formant import warp_formants
from nar.base.kaldi import read_kaldi_map, validate_data_dir, write_data_dir
from asr.data.text import MissingToolError, Sentence, load_sentences
from nar.base.files import atomic_path, write_json, write_lines

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
ENGINES = ("espeak", "flite", "festival")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "croak")
#: engines whose voices get formant-warped variants (--formant_warps): espeak has 128 voices
#: already, flite and festival three and two
WARP_ENGINES = ("flite", "festival")
MIN_WARP, MAX_WARP = 0.7, 1.4
FLITE_F0 = {"kal16": 95.0, "awb": 125.0, "slt": 165.0}  # voices whose f0 flite can set
FESTIVAL_VOICES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                   "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}
FESTIVAL_DIPHONE_F0 = {"kal_diphone": (105.0, 14.0), "ked_diphone": (105.0, 15.0)}
DEFAULT_SHARES = {"espeak": 0.6, "flite": 0.25, "festival": 0.15}
# Fitted on a 1 h build (see egs/synth_en/asr1/README.md): seconds ≈ PAD_SEC +
# len(speakable) / (CHARS_PER_SEC × rate); SPEED = seconds of audio per CPU second.
CHARS_PER_SEC = {"espeak": 19.0, "flite": 18.5, "festival": 18.3}
PAD_SEC = {"espeak": 0.3, "flite": 0.45, "festival": 0.45}
SPEED = {"espeak": 130.0, "flite": 60.0, "festival": 30.0}
FESTIVAL_BATCH = 40
CHUNK = 16
SILENT_PEAK = 1e-3


@dataclass(frozen=True)
class Voice:
    """A synthesis voice: ``engine`` and its voice ``name`` (espeak: ``accent+variant``).

    ``warp`` != 1 makes a variant with another vocal tract: the engine's output with its formants
    scaled by ``warp`` (:func:`asr.data.formant.warp_formants`), spec ``engine:name@warp``.
    """

    engine: str
    name: str
    warp: float = 1.0

    @property
    def speaker(self) -> str:
        """Speaker id: ``[a-z0-9_]`` only, so ``<spk>-<index>`` ids sort with their speakers."""
        base = re.sub(r"[^a-z0-9]+", "_", f"{self.engine}_{self.name}".lower())
        return base if self.warp == 1.0 else f"{base}_w{round(self.warp * 100):03d}"

    @property
    def spec(self) -> str:
        return f"{self.engine}:{self.name}" + ("" if self.warp == 1.0 else f"@{self.warp:g}")


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: what to say, who says it and how."""

    utt_id: str
    speaker: str
    engine: str
    voice: str
    text: str          # normalised transcript
    speakable: str     # what the engine reads
    source: str
    rate: float        # speed factor, 1.0 = the voice's default
    pitch_st: float    # pitch shift in semitones
    gain_db: float     # peak level of the output, dBFS
    est_dur: float     # estimated seconds (planning only)
    warp: float = 1.0  # formant warp of the voice variant (1: the engine's own voice)


def parse_voice(spec: str) -> Voice:
    """``"espeak:en-us+f3"`` → ``Voice("espeak", "en-us+f3")``; ``"flite:slt@0.88"`` → the
    formant-warped variant ``Voice("flite", "slt", 0.88)``; validates the form."""
    engine, sep, name = spec.partition(":")
    name, at, warp_text = name.partition("@")
    if not sep or engine not in ENGINES or not name:
        raise ValueError(f"voice {spec!r} must be '<engine>:<name>[@<warp>]' with engine in {ENGINES}")
    if engine == "espeak" and "+" not in name:
        raise ValueError(f"espeak voice {spec!r} must be 'espeak:<accent>+<variant>'")
    warp = 1.0
    if at:
        try:
            warp = float(warp_text)
        except ValueError:
            raise ValueError(f"voice {spec!r}: formant warp {warp_text!r} is not a number") from None
        _check_warp(warp, spec)
    return Voice(engine, name, warp)


def _check_warp(warp: float, what: str) -> None:
    if not MIN_WARP <= warp <= MAX_WARP:
        raise ValueError(f"{what}: formant warp {warp} outside [{MIN_WARP}, {MAX_WARP}]")


def warp_variants(voices: Sequence[Voice], warps: Sequence[float],
                  engines: Sequence[str] = WARP_ENGINES) -> list[Voice]:
    """``voices`` plus, for each unwarped voice of ``engines``, its variant at every warp."""
    for w in warps:
        _check_warp(w, "--formant_warps")
    extra = [Voice(v.engine, v.name, float(w)) for v in voices
             if v.engine in engines and v.warp == 1.0 for w in warps if w != 1.0]
    known = {v.spec for v in voices}
    return list(voices) + [v for v in extra if v.spec not in known]


def default_voices() -> tuple[list[Voice], list[Voice]]:
    """The catalogue: (train/dev voices, held-out test voices).

    espeak: 8 accents × 16 variants; accent ``i`` is held out with variant ``2i + 1``,
    so each test combination pairs an accent and a variant both seen in training, never
    together. flite: ``rms`` held out (``kal16``, ``awb``, ``slt`` train). festival:
    ``ked_diphone`` held out (``kal_diphone`` — same diphone family — and the HTS
    ``cmu_us_slt_arctic_hts`` train).
    """
    train, test = [], []
    for i, accent in enumerate(ESPEAK_ACCENTS):
        held = ESPEAK_VARIANTS[(2 * i + 1) % len(ESPEAK_VARIANTS)]
        for variant in ESPEAK_VARIANTS:
            (test if variant == held else train).append(Voice("espeak", f"{accent}+{variant}"))
    train += [Voice("flite", v) for v in ("kal16", "awb", "slt")]
    test.append(Voice("flite", "rms"))
    train += [Voice("festival", v) for v in ("kal_diphone", "cmu_us_slt_arctic_hts")]
    test.append(Voice("festival", "ked_diphone"))
    return train, test


# --------------------------------------------------------------------------- tools


def _which(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(f"program '{tool}' not found: install the Debian package "
                               f"'{package}' (apt-get install {package})")
    return path


def check_tools(voices: Iterable[Voice]) -> None:
    """Raise :class:`MissingToolError` naming the Debian package for anything missing."""
    voices = list(voices)
    _which("sox", "sox")
    engines = {v.engine for v in voices}
    if "espeak" in engines:
        _which("espeak-ng", "espeak-ng")
        data = re.search(r"Data at:\s*(\S+)", _run(["espeak-ng", "--version"]).decode())
        for v in voices:
            variant = v.name.partition("+")[2]
            if v.engine == "espeak" and data and not os.path.exists(
                    os.path.join(data.group(1), "voices", "!v", variant)):
                raise ValueError(f"espeak variant {variant!r} of voice {v.spec!r} not found "
                                 f"in {data.group(1)}/voices/!v")
    if "flite" in engines:
        _which("flite", "flite")
        known = _run(["flite", "-lv"]).decode().split(":")[-1].split()
        for v in voices:
            if v.engine == "flite" and v.name not in known:
                raise ValueError(f"flite voice {v.spec!r} unknown; flite -lv lists {known}")
    if "festival" in engines:
        _which("festival", "festival")
        for v in voices:
            if v.engine != "festival":
                continue
            if v.name not in FESTIVAL_VOICES:
                raise ValueError(f"festival voice {v.spec!r} unknown; valid: "
                                 f"{sorted(FESTIVAL_VOICES)}")
            found = any(os.path.isdir(os.path.join(root, lang, v.name))
                        for root in ("/usr/share/festival/voices",) for lang in ("english", "us"))
            if not found:
                pkg = FESTIVAL_VOICES[v.name]
                raise MissingToolError(f"festival voice {v.name!r} not found: install the "
                                       f"Debian package '{pkg}' (apt-get install {pkg})")


def _run(cmd: Sequence[str], **kw) -> bytes:
    proc = subprocess.run(list(cmd), capture_output=True, **kw)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)[:300]}\n{err}")
    return proc.stdout


# --------------------------------------------------------------------------- planning


def _speaker_centre(seed: int, voice: Voice) -> tuple[float, float]:
    rng = random.Random(f"{seed}:speaker:{voice.speaker}")
    spread = 3.0 if voice.engine == "espeak" else 2.0
    return rng.uniform(0.85, 1.15), rng.uniform(-spread, spread)


def _make_utt(seed: int, voice: Voice, index: int, sent: Sentence) -> Utterance:
    utt_id = f"{voice.speaker}-{index:06d}"
    rate_c, pitch_c = _speaker_centre(seed, voice)
    rng = random.Random(f"{seed}:utt:{utt_id}")
    rate = round(rate_c + rng.uniform(-0.1, 0.1), 3)
    return Utterance(utt_id=utt_id, speaker=voice.speaker, engine=voice.engine,
                     voice=voice.name, text=sent.text, speakable=sent.speakable,
                     source=sent.source, rate=rate,
                     pitch_st=round(pitch_c + rng.uniform(-1.0, 1.0), 2),
                     gain_db=round(rng.uniform(-12.0, -1.0), 1),
                     est_dur=estimate_duration(sent.speakable, voice.engine, rate),
                     warp=voice.warp)


def estimate_duration(speakable: str, engine: str, rate: float) -> float:
    """Planning estimate of an utterance's seconds (padding included)."""
    return PAD_SEC[engine] + len(speakable) / (CHARS_PER_SEC[engine] * rate)


def _assign(seed: int, split: str, voices: Sequence[Voice], shares: Mapping[str, float],
            sentences: Iterable[tuple[int, Sentence]], limit: Callable[[int, float], bool],
            ) -> list[Utterance]:
    """Give sentences to engines by deficit of estimated seconds, to voices round-robin."""
    by_engine = {e: [v for v in voices if v.engine == e] for e in ENGINES}
    if any(v < 0 for v in shares.values()):
        raise ValueError(f"{split}: engine shares must be >= 0, got {dict(shares)}")
    engines = [e for e in ENGINES if by_engine[e] and shares.get(e, 0) > 0]
    if not engines:
        raise ValueError(f"{split}: no voice of an engine with a positive share {dict(shares)}")
    rng = random.Random(f"{seed}:{split}:speakers")
    queues: dict[str, list[Voice]] = {e: [] for e in engines}
    seconds = {e: 0.0 for e in engines}
    utts: list[Utterance] = []
    for index, sent in sentences:
        if limit(len(utts), sum(seconds.values())):
            break
        engine = min(engines, key=lambda e: (seconds[e] / shares[e], engines.index(e)))
        if not queues[engine]:
            queues[engine] = rng.sample(by_engine[engine], len(by_engine[engine]))
        utt = _make_utt(seed, queues[engine].pop(), index, sent)
        seconds[engine] += utt.est_dur
        utts.append(utt)
    return sorted(utts, key=lambda u: u.utt_id)


def plan_corpus(sentences: Sequence[Sentence], train_voices: Sequence[Voice],
                test_voices: Sequence[Voice], train_hours: float, dev_utts: int,
                test_utts: int, seed: int, shares: Mapping[str, float] = DEFAULT_SHARES,
                test_shares: Mapping[str, float] | None = None) -> dict[str, list[Utterance]]:
    """Plan every split: sentences disjoint across splits, test voices disjoint from train.

    The utterance id is ``<speaker>-<sentence index>`` (the index into ``sentences``), so
    ids are unique across splits and a larger ``train_hours`` only appends utterances.
    ``test_shares`` defaults to equal shares of the engines present in ``test_voices``.
    """
    # a held-out voice stays held out in every variant: compared without the formant warp
    overlap = ({f"{v.engine}:{v.name}" for v in train_voices}
               & {f"{v.engine}:{v.name}" for v in test_voices})
    if overlap:
        raise ValueError(f"held-out test voices also in the training voices "
                         f"(formant-warped variants included): {sorted(overlap)}")
    if train_hours < 0 or dev_utts < 0 or test_utts < 0:
        raise ValueError(f"sizes must be >= 0: train_hours={train_hours}, "
                         f"dev_utts={dev_utts}, test_utts={test_utts}")
    order = list(range(len(sentences)))
    random.Random(f"{seed}:sentences").shuffle(order)
    n_fixed = test_utts + dev_utts
    if n_fixed > len(order):
        raise ValueError(f"only {len(order)} sentences for {n_fixed} dev+test utterances")
    pool = {"test": order[:test_utts], "dev": order[test_utts:n_fixed], "train": order[n_fixed:]}
    test_shares = test_shares or {e: 1.0 for e in ENGINES}
    budget = train_hours * 3600.0
    plan = {
        "test": _assign(seed, "test", test_voices, test_shares,
                        ((i, sentences[i]) for i in pool["test"]), lambda n, s: False),
        "dev": _assign(seed, "dev", train_voices, shares,
                       ((i, sentences[i]) for i in pool["dev"]), lambda n, s: False),
        "train": _assign(seed, "train", train_voices, shares,
                         ((i, sentences[i]) for i in pool["train"]), lambda n, s: s >= budget),
    }
    got = sum(u.est_dur for u in plan["train"])
    if got < budget * 0.99:
        raise ValueError(f"train_hours={train_hours} needs more sentences than the "
                         f"{len(pool['train'])} left after dev/test ({got / 3600:.2f} h)")
    return plan


def assign_jobs(utts: Sequence[Utterance], nj: int) -> list[list[Utterance]]:
    """Split utterances into ``nj`` jobs of similar estimated CPU time (deterministic)."""
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    jobs: list[list[Utterance]] = [[] for _ in range(nj)]
    load = [0.0] * nj
    for u in sorted(utts, key=lambda u: (-u.est_dur / SPEED[u.engine], u.utt_id)):
        j = min(range(nj), key=lambda k: (load[k], k))
        jobs[j].append(u)
        load[j] += u.est_dur / SPEED[u.engine] + 0.02
    return [sorted(job, key=lambda u: u.utt_id) for job in jobs]


# --------------------------------------------------------------------------- synthesis


def wav_path(out: str, utt: Utterance) -> str:
    return os.path.join(out, "wav", utt.speaker, utt.utt_id + ".wav")


def _engine_command(utt: Utterance, raw: str) -> list[str]:
    if utt.engine == "espeak":
        pitch = min(99, max(0, round(50 + 6 * utt.pitch_st)))
        return ["espeak-ng", "-v", utt.voice, "-s", str(round(175 * utt.rate)),
                "-p", str(pitch), "-w", raw, utt.speakable]
    assert utt.engine == "flite", utt.engine
    cmd = ["flite", "-voice", utt.voice, "--setf", f"duration_stretch={1 / utt.rate:.4f}"]
    if utt.voice in FLITE_F0:
        cmd += ["--setf", f"int_f0_target_mean={FLITE_F0[utt.voice] * 2 ** (utt.pitch_st / 12):.2f}"]
    return cmd + ["-t", utt.speakable, "-o", raw]


def _engine_sets_pitch(utt: Utterance) -> bool:
    return utt.engine == "espeak" or utt.voice in FLITE_F0 or utt.voice in FESTIVAL_DIPHONE_F0


def _festival_script(utts: Sequence[Utterance], raws: Sequence[str]) -> str:
    lines = [f"(voice_{utts[0].voice})"]
    for utt, raw in zip(utts, raws):
        assert utt.voice == utts[0].voice and '"' not in utt.speakable + raw
        if utt.voice in FESTIVAL_DIPHONE_F0:
            mean, std = FESTIVAL_DIPHONE_F0[utt.voice]
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / utt.rate:.4f})")
            lines.append(f"(set! int_lr_params '((target_f0_mean {mean * 2 ** (utt.pitch_st / 12):.2f})"
                         f" (target_f0_std {std}) (model_f0_mean 170) (model_f0_std 34)))")
        else:  # HTS: speed through hts_engine's -r; pitch is shifted by sox afterwards
            lines.append(f"(set! hts_engine_params (append {utt.voice}::hts_engine_params "
                         f"'((\"-r\" {utt.rate:.4f}))))")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{utt.speakable}")) "{raw}" \'riff)')
    return "\n".join(lines) + "\n"


def _finish(utt: Utterance, raw: str, out: str) -> str | None:
    """sox ``raw`` → 16 kHz mono 16-bit at ``wav_path``; returns a drop reason or None."""
    if not os.path.exists(raw):
        return "engine wrote no file"
    info = sf.info(raw)
    if info.frames == 0:
        return "empty audio"
    audio, _ = sf.read(raw, dtype="float32")
    if float(abs(audio).max()) < SILENT_PEAK:
        return "silent audio"
    effects = [] if _engine_sets_pitch(utt) else ["pitch", f"{100 * utt.pitch_st:.0f}"]
    effects += ["gain", "-n", f"{utt.gain_db:.1f}", "rate", "-h", str(SAMPLE_RATE)]
    with atomic_path(wav_path(out, utt)) as part:  # a wav that exists is complete
        _run(["sox", "-R", raw, "-t", "wav", "-e", "signed-integer", "-b", "16", "-c", "1",
              str(part), *effects])
        if utt.warp != 1.0:  # the variant's vocal tract, at the level sox set
            audio, sr = sf.read(part, dtype="float32")
            sf.write(part, warp_formants(audio, utt.warp), sr, subtype="PCM_16", format="WAV")
    return None


def _run_festival(utts: Sequence[Utterance], raws: Sequence[str], tmp: str) -> None:
    """One festival process for the batch; after a failure, the unfinished ones singly."""
    script = os.path.join(tmp, f"{utts[0].utt_id}.scm")
    with open(script, "w") as f:
        f.write(_festival_script(utts, raws))
    try:
        _run(["festival", "-b", script])
    except RuntimeError as e:
        if len(utts) == 1:
            logger.warning("festival failed on %s: %s", utts[0].utt_id, e)
            return
        for utt, raw in zip(utts, raws):
            if not os.path.exists(raw):
                _run_festival([utt], [raw], tmp)


def synthesize_chunk(utts: Sequence[Utterance], out: str) -> dict[str, str]:
    """Synthesise utterances (one festival process for a festival chunk) not yet on disk.

    Returns ``{utt_id: reason}`` for utterances dropped as empty or silent.
    """
    todo = [u for u in utts if not os.path.exists(wav_path(out, u))]
    if not todo:
        return {}
    dropped = {}
    with tempfile.TemporaryDirectory(prefix="synth_en.") as tmp:
        raws = [os.path.join(tmp, f"{u.utt_id}.wav") for u in todo]
        if todo[0].engine == "festival":
            _run_festival(todo, raws, tmp)
        for utt, raw in zip(todo, raws):
            if utt.engine != "festival":
                _run(_engine_command(utt, raw))
            reason = _finish(utt, raw, out)
            if reason is not None:
                logger.warning("dropped %s (%s): %s", utt.utt_id, utt.speakable, reason)
                dropped[utt.utt_id] = reason
    return dropped


def _chunks(job: Sequence[Utterance]) -> list[list[Utterance]]:
    """Festival utterances in batches of one voice; the others in small chunks."""
    chunks = []
    for voice in sorted({u.voice for u in job if u.engine == "festival"}):
        same = [u for u in job if u.engine == "festival" and u.voice == voice]
        chunks += [same[i:i + FESTIVAL_BATCH] for i in range(0, len(same), FESTIVAL_BATCH)]
    rest = [u for u in job if u.engine != "festival"]
    return chunks + [rest[i:i + CHUNK] for i in range(0, len(rest), CHUNK)]


# --------------------------------------------------------------------------- orchestration


class _LogProgress:
    """Fallback progress report when tqdm is not installed."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self._last = total, desc, 0, -1

    def update(self, n: int) -> None:
        self.n += n
        decile = 10 * self.n // max(self.total, 1)
        if decile != self._last:
            self._last = decile
            logger.info("%s: %d/%d utterances", self.desc, self.n, self.total)

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return _LogProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="utt", dynamic_ncols=True)


def _write_json(path: str, obj: object) -> None:
    write_json(path, obj, indent=1, sort_keys=True)


def synthesize_split(out: str, split: str, utts: Sequence[Utterance], nj: int) -> dict[str, str]:
    """Synthesise a split with ``nj`` parallel workers, skipping finished jobs and utterances.

    Each job writes ``OUT/.state/<split>/job<j>of<nj>.done`` (with its dropped
    utterances) when all its utterances are on disk. Returns ``{utt_id: drop reason}``.
    """
    state = os.path.join(out, ".state", split)
    jobs = assign_jobs(utts, nj)
    sentinels = [os.path.join(state, f"job{j + 1}of{nj}.done") for j in range(nj)]
    dropped: dict[str, str] = {}
    for sentinel in sentinels:
        if os.path.exists(sentinel):
            with open(sentinel) as f:
                dropped.update(json.load(f)["dropped"])
    tasks = [(j, chunk) for j, job in enumerate(jobs) if not os.path.exists(sentinels[j])
             for chunk in _chunks(job)]
    left = {j: sum(1 for k, _ in tasks if k == j) for j in range(nj)}
    job_dropped: dict[int, dict[str, str]] = {j: {} for j in range(nj)}
    for j in range(nj):
        if not jobs[j] and not os.path.exists(sentinels[j]):  # more jobs than utterances
            _write_json(sentinels[j], {"utts": 0, "dropped": {}})
    bar = _progress_bar(len(utts), split)
    bar.update(len(utts) - sum(len(c) for _, c in tasks))

    def chunk_done(j: int, chunk: Sequence[Utterance], result: dict[str, str]) -> None:
        job_dropped[j].update(result)
        bar.update(len(chunk))
        left[j] -= 1
        if left[j] == 0:
            _write_json(sentinels[j], {"utts": len(jobs[j]), "dropped": job_dropped[j]})
            dropped.update(job_dropped[j])

    try:
        if nj == 1 or len(tasks) <= 1:
            for j, chunk in tasks:
                chunk_done(j, chunk, synthesize_chunk(chunk, out))
        else:
            # Threads suffice: the work is in the engine and sox subprocesses.
            with ThreadPoolExecutor(max_workers=nj, thread_name_prefix="synth") as pool:
                futures = {pool.submit(synthesize_chunk, chunk, out): (j, chunk)
                           for j, chunk in tasks}
                try:
                    for future in as_completed(futures):
                        chunk_done(*futures[future], future.result())
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
    finally:
        bar.close()
    return dropped


def write_split(out: str, split: str, utts: Sequence[Utterance],
                dropped: Mapping[str, str]) -> list[dict]:
    """Write the data dir ``OUT/<split>`` and ``OUT/meta/<split>.tsv``; return the rows."""
    rows = []
    for u in utts:
        path = wav_path(out, u)
        if u.utt_id in dropped or not os.path.exists(path):
            continue
        info = sf.info(path)
        rows.append({**asdict(u), "wav": path, "duration": round(info.frames / info.samplerate, 3)})
    if not rows:
        raise RuntimeError(f"{split}: no utterance was synthesised ({len(dropped)} dropped)")
    data_dir = os.path.join(out, split)
    write_data_dir(data_dir, wav_scp={r["utt_id"]: r["wav"] for r in rows},
                   text={r["utt_id"]: r["text"] for r in rows},
                   utt2spk={r["utt_id"]: r["speaker"] for r in rows},
                   extra={"utt2dur": {r["utt_id"]: r["duration"] for r in rows}})
    validate_data_dir(data_dir)
    cols = ["utt_id", "speaker", "engine", "voice", "rate", "pitch_st", "gain_db",
            "duration", "source", "speakable"]
    meta = os.path.join(out, "meta", f"{split}.tsv")
    os.makedirs(os.path.dirname(meta), exist_ok=True)
    with open(meta, "w") as f:
        f.write("\t".join(cols) + "\n")
        f.writelines("\t".join(str(r[c]) for c in cols) + "\n" for r in rows)
    return rows


def split_stats(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Per engine and overall: utterances, speakers, hours, mean duration, chars/second."""
    groups: dict[str, list[Mapping]] = {"all": list(rows)}
    for r in rows:
        groups.setdefault(r["engine"], []).append(r)
    stats = {}
    for name, rs in groups.items():
        secs = sum(r["duration"] for r in rs)
        stats[name] = {"utts": len(rs), "speakers": len({r["speaker"] for r in rs}),
                       "hours": round(secs / 3600, 4), "mean_dur": round(secs / len(rs), 2),
                       "chars_per_sec": round(sum(len(r["text"]) for r in rs) / secs, 2)}
    return stats


def build_corpus(out: str, train_hours: float = 1.0, dev_utts: int = 200,
                 test_utts: int = 200, nj: int = 2, seed: int = 0,
                 voices: Sequence[str] | None = None, test_voices: Sequence[str] | None = None,
                 shares: Mapping[str, float] | None = None,
                 test_shares: Mapping[str, float] | None = None,
                 text_sources: Sequence[str] = ("fortunes", "bible"),
                 sentences: Sequence[Sentence] | None = None, max_vocab: int = 0,
                 formant_warps: Sequence[float] = ()) -> dict:
    """Build (or finish, or leave alone if complete) the corpus in ``out``; return its stats.

    ``voices``/``test_voices`` are specs like ``"espeak:en-us+f3"`` (default: the
    catalogue of :func:`default_voices`); ``sentences`` overrides ``text_sources``;
    ``max_vocab > 0`` keeps only sentences within that many most frequent words;
    ``formant_warps`` adds, for every train/dev voice of flite and festival, a variant per factor
    with its formants scaled by it (more vocal tracts for the engines with few voices; the
    engine's share of the audio is spread over its voices and their variants).

    Raises:
        ValueError: ``out`` was built with other options, or invalid options.
        MissingToolError: a program or voice is missing (names the Debian package).
    """
    default_train, default_test = default_voices()
    train_v = [parse_voice(v) for v in voices] if voices else default_train
    test_v = [parse_voice(v) for v in test_voices] if test_voices else default_test
    train_v = warp_variants(train_v, formant_warps)
    config = {"train_hours": train_hours, "dev_utts": dev_utts, "test_utts": test_utts,
              "seed": seed, "voices": [v.spec for v in train_v],
              "test_voices": [v.spec for v in test_v], "shares": dict(shares or DEFAULT_SHARES),
              "test_shares": dict(test_shares) if test_shares else None,
              "text": list(text_sources) if sentences is None else
              [len(sentences), sentences[0].text if sentences else ""]}
    if max_vocab > 0:  # recorded only when used, so existing corpora keep their config
        config["max_vocab"] = max_vocab
    if formant_warps:
        config["formant_warps"] = [float(w) for w in formant_warps]
    state = os.path.join(out, ".state")
    _check_config(out, config)
    if all(os.path.exists(os.path.join(state, f"{s}.done")) for s in SPLITS):
        logger.info("%s is complete (%s): nothing to do", out, os.path.join(state, "*.done"))
        if not os.path.exists(os.path.join(out, LM_TEXT)):  # corpora built before the LM text existed
            write_lm_text(out, sentences if sentences is not None
                          else load_sentences(text_sources, max_vocab=max_vocab))
        with open(os.path.join(out, "stats.json")) as f:
            return json.load(f)
    check_tools(train_v + test_v)
    if sentences is None:
        sentences = load_sentences(text_sources, max_vocab=max_vocab)
    logger.info("%d sentences available", len(sentences))
    plan = plan_corpus(sentences, train_v, test_v, train_hours, dev_utts, test_utts, seed,
                       shares or DEFAULT_SHARES, test_shares)
    _write_json(os.path.join(state, "config.json"), config)
    stats_path = os.path.join(out, "stats.json")
    stats = {"sentences": len(sentences), "splits": {}, "speed": {}, "dropped": {}}
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            stats = json.load(f)
    for split in ("test", "dev", "train"):
        if not os.path.exists(os.path.join(state, f"{split}.done")):
            _build_split(out, split, plan[split], nj, stats)
            _write_json(stats_path, stats)
            _write_json(os.path.join(state, f"{split}.done"), stats["speed"][split])
    write_lm_text(out, sentences)
    return stats


#: the optional split of new vocal tracts (``--unseen_dev_warps``; :func:`build_unseen_dev`)
UNSEEN_DEV = "dev_unseen"


def plan_unseen_dev(dev: Sequence[Utterance], train_voices: Sequence[Voice], warps: Sequence[float],
                    seed: int) -> list[Utterance]:
    """``dev``'s sentences spoken by new variants of the unwarped flite/festival train voices.

    Each voice of :data:`WARP_ENGINES` that trains unwarped gets a variant per factor of
    ``warps``; a factor a training variant already has (or 1) is refused, so every speaker of
    the split is a vocal tract that training never heard. The sentences are ``dev``'s (unseen
    in training, disjoint from ``test``), given to the new voices round-robin in a seeded order.
    """
    bases = [v for v in train_voices if v.engine in WARP_ENGINES and v.warp == 1.0]
    if not bases:
        raise ValueError(f"{UNSEEN_DEV}: the corpus has no unwarped {'/'.join(WARP_ENGINES)} train voice")
    if not warps:
        raise ValueError(f"{UNSEEN_DEV}: no warp factor given")
    trained = {v.warp for v in train_voices if v.engine in WARP_ENGINES}
    for w in warps:
        _check_warp(w, "--unseen_dev_warps")
        if w in trained:
            raise ValueError(f"--unseen_dev_warps: {w:g} is a warp of the training voices "
                             f"(trained: {sorted(trained)}); the split must hold unseen vocal tracts")
    voices = [Voice(v.engine, v.name, float(w)) for v in bases for w in dict.fromkeys(warps)]
    rng = random.Random(f"{seed}:{UNSEEN_DEV}:speakers")
    utts, queue = [], []
    for u in sorted(dev, key=lambda u: u.utt_id):
        if not queue:
            queue = rng.sample(voices, len(voices))
        index = int(u.utt_id.rsplit("-", 1)[1])
        utts.append(_make_utt(seed, queue.pop(), index, Sentence(u.text, u.speakable, u.source)))
    return sorted(utts, key=lambda u: u.utt_id)


def build_unseen_dev(out: str, warps: Sequence[float], nj: int = 2) -> dict:
    """Add the split ``OUT/dev_unseen`` to a finished corpus (:func:`plan_unseen_dev`).

    A validation set of voices training never heard, for choosing checkpoints and settings for
    held-out voices without touching ``test`` (``dev`` has only training voices). The corpus
    itself is unchanged; the split records its factors in ``.state/dev_unseen.done`` and a
    request with other factors is refused. Returns the split's statistics.
    """
    state = os.path.join(out, ".state")
    config_path = os.path.join(state, "config.json")
    if not all(os.path.exists(os.path.join(state, f"{s}.done")) for s in SPLITS):
        raise ValueError(f"{out}: the corpus is not complete (build it first); {UNSEEN_DEV} reuses its dev")
    with open(config_path) as f:
        config = json.load(f)
    warps = [float(w) for w in warps]
    sentinel = os.path.join(state, f"{UNSEEN_DEV}.done")
    if os.path.exists(sentinel):
        with open(sentinel) as f:
            done = json.load(f)
        if done["warps"] != warps:
            raise ValueError(f"{out}/{UNSEEN_DEV} was built with warps {done['warps']}, not {warps}; "
                             f"delete it and {sentinel} to rebuild")
        logger.info("%s/%s is complete: nothing to do", out, UNSEEN_DEV)
        return done["stats"]
    dev = _read_split_utts(out, "dev")
    utts = plan_unseen_dev(dev, [parse_voice(v) for v in config["voices"]], warps, config["seed"])
    check_tools(parse_voice(f"{u.engine}:{u.voice}") for u in utts)
    stats: dict = {"splits": {}, "speed": {}, "dropped": {}}
    _build_split(out, UNSEEN_DEV, utts, nj, stats)
    _write_json(sentinel, {"warps": warps, "stats": stats["splits"][UNSEEN_DEV],
                           "speed": stats["speed"][UNSEEN_DEV], "dropped": stats["dropped"]})
    return stats["splits"][UNSEEN_DEV]


def _read_split_utts(out: str, split: str) -> list[Utterance]:
    """The planned utterances of a written split (text from its data dir, the rest from meta)."""
    text = read_kaldi_map(os.path.join(out, split, "text"))
    meta = os.path.join(out, "meta", f"{split}.tsv")
    with open(meta) as f:
        cols = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(cols, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    utts = []
    for r in rows:
        if r["utt_id"] not in text:
            raise ValueError(f"{meta}: utterance {r['utt_id']} is not in {out}/{split}/text")
        utts.append(Utterance(utt_id=r["utt_id"], speaker=r["speaker"], engine=r["engine"],
                              voice=r["voice"], text=text[r["utt_id"]], speakable=r["speakable"],
                              source=r["source"], rate=float(r["rate"]), pitch_st=float(r["pitch_st"]),
                              gain_db=float(r["gain_db"]), est_dur=float(r["duration"])))
    return utts


#: the corpus's language-model text (one normalised sentence per line)
LM_TEXT = "lm_train.txt"


def write_lm_text(out: str, sentences: Sequence[Sentence]) -> int:
    """Write ``out/lm_train.txt``: every available sentence that is in neither ``dev`` nor ``test``.

    The text-only counterpart of the training audio (like LibriSpeech's LM corpus): the same
    sources and vocabulary, no sentence of an evaluation split (read from the written
    ``dev``/``test`` transcripts, so the guarantee holds for any plan). Returns the line count.
    """
    held_out = set()
    for split in ("dev", "test"):
        held_out.update(read_kaldi_map(os.path.join(out, split, "text")).values())
    lines = [s.text for s in sentences if s.text not in held_out]
    write_lines(os.path.join(out, LM_TEXT), lines)
    logger.info("%s: %d sentences (%d held out as dev/test)", os.path.join(out, LM_TEXT), len(lines),
                len(sentences) - len(lines))
    return len(lines)


def _check_config(out: str, config: Mapping) -> None:
    """Refuse to continue a build made with other options (its utterances would differ)."""
    path = os.path.join(out, ".state", "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    config = json.loads(json.dumps(config))  # tuples → lists, as stored
    changed = sorted(k for k in set(config) | set(previous) if previous.get(k) != config.get(k))
    if changed:
        raise ValueError(f"{out} was built with other options ({', '.join(changed)}); "
                         "use another --out or delete it")


def _build_split(out: str, split: str, utts: Sequence[Utterance], nj: int, stats: dict) -> None:
    """Synthesise and write one split; record its statistics and speed in ``stats``."""
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    dropped = synthesize_split(out, split, utts, nj)
    rows = write_split(out, split, utts, dropped)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    audio = sum(r["duration"] for r in rows)
    stats["splits"][split] = split_stats(rows)
    stats["speed"][split] = {"audio_sec": round(audio, 1), "wall_sec": round(wall, 1),
                             "cpu_sec": round(cpu, 1), "nj": nj,
                             "x_real_time": round(audio / wall, 1),
                             "x_real_time_per_cpu": round(audio / max(cpu, 1e-3), 1)}
    stats["dropped"].update(dropped)
    logger.info("%s: %d utterances, %.3f h, %d dropped; %.0f s of audio in %.0f s wall, "
                "%.0f s CPU (%.0fx real time, nj=%d)", split, len(rows), audio / 3600,
                len(dropped), audio, wall, cpu, audio / wall, nj)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (engines, sox)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _parse_shares(text: str) -> dict[str, float]:
    shares = {}
    for item in text.split(","):
        engine, sep, value = item.partition("=")
        if not sep or engine not in ENGINES:
            raise argparse.ArgumentTypeError(f"bad share {item!r}: use e.g. espeak=0.6,flite=0.3")
        shares[engine] = float(value)
    return shares


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", help="output directory (required unless --list_voices)")
    parser.add_argument("--train_hours", type=float, default=1.0)
    parser.add_argument("--dev_utts", type=int, default=200)
    parser.add_argument("--test_utts", type=int, default=200)
    parser.add_argument("--nj", type=int, default=2, help="parallel synthesis workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voices", nargs="+", help="train/dev voices, e.g. espeak:en-us+f3 "
                        "flite:slt festival:kal_diphone (default: the built-in catalogue)")
    parser.add_argument("--test_voices", nargs="+", help="held-out test voices")
    parser.add_argument("--engine_shares", type=_parse_shares,
                        default=",".join(f"{k}={v}" for k, v in DEFAULT_SHARES.items()),
                        help="share of train/dev audio per engine")
    parser.add_argument("--test_engine_shares", type=_parse_shares, default=None,
                        help="share of test audio per engine (default: equal)")
    parser.add_argument("--text_sources", nargs="+", default=["fortunes", "bible"])
    parser.add_argument("--max_vocab", type=int, default=0,
                        help="keep only sentences within the N most frequent words (0: all)")
    parser.add_argument("--formant_warps", type=float, nargs="+", default=[],
                        help="formant warp factors: each flite/festival train voice gets a variant "
                        "per factor (e.g. 0.88 1.12; <1: longer vocal tract)")
    parser.add_argument("--unseen_dev_warps", type=float, nargs="+", default=[],
                        help=f"also build the split {UNSEEN_DEV}: dev's sentences by the unwarped "
                        "flite/festival train voices at these formant warps (none a training warp): "
                        "a validation set of unseen vocal tracts (e.g. 0.7 1.4)")
    parser.add_argument("--list_voices", action="store_true", help="print the voices and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.list_voices:
        train, test = default_voices()
        train = warp_variants(train, args.formant_warps)
        for split, vs in (("train/dev", train), ("test", test)):
            print(f"# {split}: {len(vs)} voices")
            print("\n".join(f"{v.spec}\t{v.speaker}" for v in vs))
        return 0
    if not args.out:
        get_parser().error("--out is required")
    try:
        stats = build_corpus(args.out, args.train_hours, args.dev_utts, args.test_utts, args.nj,
                             args.seed, args.voices, args.test_voices, args.engine_shares,
                             args.test_engine_shares, args.text_sources,
                             max_vocab=args.max_vocab, formant_warps=args.formant_warps)
        if args.unseen_dev_warps:
            stats["splits"][UNSEEN_DEV] = build_unseen_dev(args.out, args.unseen_dev_warps, args.nj)
    except (MissingToolError, ValueError) as e:
        logger.error("%s", e)
        return 1
    print(json.dumps(stats["splits"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
