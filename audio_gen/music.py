"""Offline captioned music corpus: MIDI written in Python, rendered by fluidsynth.

Each clip draws, from its own seeded generator ``random.Random(f"{seed}-{split}-{index}")``
(so a clip never depends on ``--nj``, on the order of work or on the size of the other splits):
a tempo (its bucket first, so the buckets are balanced), a key and mode, a diatonic four-chord
progression (one chord a bar, looped), a melody and an accompaniment instrument from two
different General MIDI families, an accompaniment style (block chords or arpeggio) and, in
half of the clips, a drum pattern on GM channel 10. The melody walks the scale in eighth and
quarter notes and lands on chord tones at each bar.

Rendering: ``fluidsynth -ni -q -g 0.6 -r <2×sample_rate> -O float`` with a GM soundfont (one
process a clip: TimGM6mb loads in a few milliseconds), averaged to mono, decimated by 2 with a
windowed-sinc low-pass (no aliasing from the synthesiser), cut or zero-padded to exactly
``seconds`` (10 ms fade-out), scaled to -20 dBFS RMS unless that would put the peak above
-1 dBFS, and written as 16-bit PCM WAV. Deterministic: the same options give byte-identical
WAV and MIDI files.

Resumable: WAV and MIDI files are written to a temporary name and renamed, and a clip whose
WAV exists is skipped. ``OUT_DIR/config.json`` records the options that define the audio; a
rerun with different ones into the same directory is refused.

Usage::

    python -m audio_gen.music --out_dir downloads/synth_music/default --datadir data --nj 2
    python -m audio_gen.music --num_train 50 --num_dev 5 --num_test 5 --seconds 5 \\
        --families piano,strings,brass --soundfont FluidR3_GM
    python -m audio_gen.music --fields_only          # class balance of the fields, no audio

Writes ``DATADIR/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt,utt2dur,fields.jsonl}``
(``text``: the caption; ``fields.jsonl``: ``{"utt", "caption", <FIELD_NAMES>}`` a line),
``DATADIR/fields_stats.json`` (class balance) and ``OUT_DIR/{wav,midi}/<utt>.{wav,mid}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pretty_midi
import soundfile as sf
from tqdm import tqdm

from nar.base.files import atomic_path, write_json, write_lines

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the music or the rendering changes: old clips are then refused
SPLITS = ("train", "dev", "test")
FAMILY_PROGRAMS: Mapping[str, tuple[int, ...]] = {  # 0-based General MIDI programs
    "piano": (0, 1, 4),             # Acoustic Grand, Bright Acoustic, Electric Piano 1
    "organ": (16, 19, 21),          # Drawbar Organ, Church Organ, Accordion
    "guitar": (24, 25, 26, 27),     # nylon, steel, jazz, clean
    "strings": (40, 42, 48),        # Violin, Cello, String Ensemble 1
    "brass": (56, 57, 60, 61),      # Trumpet, Trombone, French Horn, Brass Section
    "reed": (65, 68, 71),           # Alto Sax, Oboe, Clarinet
    "pipe": (73, 75, 79),           # Flute, Pan Flute, Ocarina
    "synth_lead": (80, 81, 87),     # Lead 1 (square), Lead 2 (sawtooth), Lead 8 (bass + lead)
}
FAMILIES = tuple(FAMILY_PROGRAMS)
TEMPO_BUCKETS = ("slow", "moderate", "fast")
TEMPO_RANGES = {"slow": (60, 89), "moderate": (90, 119), "fast": (120, 160)}  # BPM, inclusive
KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
ACCOMP_STYLES = ("block", "arpeggio")
FIELD_NAMES = ("tempo", "tempo_bucket", "key", "mode", "melody_program", "melody_instrument",
               "melody_family", "accomp_program", "accomp_instrument", "accomp_family",
               "accomp_style", "drums")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Four-chord progressions as 0-based scale degrees of the chord roots (one chord a bar).
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 5), (0, 2, 3, 4)),
    "minor": ((0, 3, 4, 0), (0, 5, 2, 6), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 2, 5, 4)),
}
# Drum patterns over the eight eighth notes of a bar: GM percussion key → positions.
KICK, SNARE, HIHAT = 36, 38, 42
DRUM_PATTERNS = {
    "rock": {KICK: (0, 4), SNARE: (2, 6), HIHAT: (0, 1, 2, 3, 4, 5, 6, 7)},
    "four_on_floor": {KICK: (0, 2, 4, 6), SNARE: (2, 6), HIHAT: (1, 3, 5, 7)},
    "half_time": {KICK: (0, 5), SNARE: (4,), HIHAT: (0, 2, 4, 6)},
}
MELODY_DEGREES = (0, 9)  # melody range in scale degrees above the tonic (tonic in A3..G#4)
SOUNDFONTS = {  # name → (path, Debian package)
    "TimGM6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
    "FluidR3_GM": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
}
FLUIDSYNTH_GAIN = 0.6
TARGET_RMS_DBFS = -20.0
MAX_PEAK_DBFS = -1.0
FADE_OUT_SEC = 0.01
SILENT_PEAK = 1e-4


class MissingToolError(FileNotFoundError):
    """A program or soundfont is missing; the message names it and the Debian package."""


# --------------------------------------------------------------------------- fields


def tempo_bucket(bpm: int) -> str:
    """``"slow"`` below 90 BPM, ``"moderate"`` below 120, ``"fast"`` from 120."""
    return "slow" if bpm < 90 else "moderate" if bpm < 120 else "fast"


def family_of(program: int) -> str:
    """The family of a curated GM ``program`` (0-based); ValueError listing them if unknown."""
    for family, programs in FAMILY_PROGRAMS.items():
        if program in programs:
            return family
    valid = ", ".join(f"{p} ({pretty_midi.program_to_instrument_name(p)})"
                      for ps in FAMILY_PROGRAMS.values() for p in ps)
    raise ValueError(f"GM program {program!r} is not in the curated set; valid programs: {valid}")


def program_of(instrument: str) -> int:
    """The GM program (0-based) of a curated instrument name, e.g. ``"Violin"`` → 40."""
    names = {pretty_midi.program_to_instrument_name(p): p
             for ps in FAMILY_PROGRAMS.values() for p in ps}
    if instrument not in names:
        raise ValueError(f"unknown instrument {instrument!r}; valid instruments: {', '.join(names)}")
    return names[instrument]


def resolve_families(families: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate a family subset (a sequence or a comma-separated string; None: all), in
    ``FAMILIES`` order. Melody and accompaniment differ, so at least two are needed."""
    if families is None:
        return FAMILIES
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILY_PROGRAMS]
    if unknown:
        raise ValueError(f"unknown instrument family {', '.join(map(repr, unknown))} in families; "
                         f"valid families: {', '.join(FAMILIES)}")
    chosen = tuple(f for f in FAMILIES if f in set(families))
    if len(chosen) < 2:
        raise ValueError(f"families={list(families)!r}: need at least two (melody and "
                         f"accompaniment families differ); valid families: {', '.join(FAMILIES)}")
    return chosen


@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines one clip; ``rng_key`` seeds the note-level draws."""

    utt: str
    rng_key: str
    tempo: int
    key: str
    mode: str
    progression: tuple[int, ...]
    melody_program: int
    accomp_program: int
    accomp_style: str
    drums: bool
    drum_pattern: str

    def fields(self) -> dict:
        """The captioned fields (``FIELD_NAMES``), JSON-serialisable."""
        return {
            "tempo": self.tempo, "tempo_bucket": tempo_bucket(self.tempo),
            "key": self.key, "mode": self.mode,
            "melody_program": self.melody_program,
            "melody_instrument": pretty_midi.program_to_instrument_name(self.melody_program),
            "melody_family": family_of(self.melody_program),
            "accomp_program": self.accomp_program,
            "accomp_instrument": pretty_midi.program_to_instrument_name(self.accomp_program),
            "accomp_family": family_of(self.accomp_program),
            "accomp_style": self.accomp_style, "drums": self.drums,
        }


def utt_id(split: str, index: int) -> str:
    """``<split>_<index:06d>``: unique across splits, sorted within one."""
    return f"{split}_{index:06d}"


def draw_clip(seed: int, split: str, index: int,
              families: Sequence[str] | None = None) -> ClipSpec:
    """Draw clip ``index`` of ``split``; depends only on (seed, split, index, families)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    fams = resolve_families(families)
    key = f"{seed}-{split}-{index}"
    rng = random.Random(key)
    bucket = rng.choice(TEMPO_BUCKETS)
    tempo = rng.randint(*TEMPO_RANGES[bucket])
    pitch_class = rng.choice(KEYS)
    mode = rng.choice(MODES)
    melody_family = rng.choice(fams)
    accomp_family = rng.choice([f for f in fams if f != melody_family])
    return ClipSpec(
        utt=utt_id(split, index), rng_key=key, tempo=tempo, key=pitch_class, mode=mode,
        progression=rng.choice(PROGRESSIONS[mode]),
        melody_program=rng.choice(FAMILY_PROGRAMS[melody_family]),
        accomp_program=rng.choice(FAMILY_PROGRAMS[accomp_family]),
        accomp_style=rng.choice(ACCOMP_STYLES), drums=rng.random() < 0.5,
        drum_pattern=rng.choice(tuple(DRUM_PATTERNS)))


def make_caption(fields: Mapping) -> str:
    """E.g. ``"a slow A minor piece at 72 BPM, piano melody over block-chord strings, no drums"``."""
    style = {"block": "block-chord", "arpeggio": "arpeggiated"}[fields["accomp_style"]]
    melody = fields["melody_family"].replace("_", " ")
    accomp = fields["accomp_family"].replace("_", " ")
    drums = "with drums" if fields["drums"] else "no drums"
    return (f"a {fields['tempo_bucket']} {fields['key']} {fields['mode']} piece at "
            f"{fields['tempo']} BPM, {melody} melody over {style} {accomp}, {drums}")


# --------------------------------------------------------------------------- MIDI


def _pitch(tonic: int, scale: tuple[int, ...], degree: int) -> int:
    """MIDI pitch of a scale ``degree`` (any integer) above the ``tonic`` pitch."""
    return tonic + 12 * (degree // 7) + scale[degree % 7]


def _add(inst: pretty_midi.Instrument, pitch: int, start: float, end: float, velocity: int,
         seconds: float) -> None:
    """Add a note, cut at ``seconds``; notes starting in the last 50 ms are dropped."""
    if start < seconds - 0.05:
        inst.notes.append(pretty_midi.Note(velocity, pitch, start, min(end, seconds)))


def _reflect(value: int, lo: int, hi: int) -> int:
    """Fold ``value`` back into [lo, hi] (steps are smaller than the range)."""
    return 2 * lo - value if value < lo else 2 * hi - value if value > hi else value


def _melody(spec: ClipSpec, rng: random.Random, tonic: int, beat: float, seconds: float
            ) -> pretty_midi.Instrument:
    """A scale random walk: each beat a quarter, two eighths or (rarely) a rest or a half."""
    scale = SCALES[spec.mode]
    inst = pretty_midi.Instrument(spec.melody_program, name="melody")
    lo, hi = MELODY_DEGREES
    degree = rng.choice((0, 2, 4, 7))
    b = 0
    while b * beat < seconds:
        chord = spec.progression[(b // 4) % 4]
        if b % 4 == 0:  # bar start: move to the nearest tone of the new chord
            degree = min((d for d in range(lo, hi + 1) if (d - chord) % 7 in (0, 2, 4)),
                         key=lambda d: (abs(d - degree), d))
        r = rng.random()
        if r < 0.06 and b % 4:
            b += 1
            continue
        lengths = (2.0,) if (r > 0.92 and b % 4 == 2) else (1.0,) if r < 0.6 else (0.5, 0.5)
        t = b * beat
        for i, length in enumerate(lengths):
            if i or b % 4:
                degree = _reflect(degree + rng.choice((-2, -1, -1, 0, 1, 1, 2, -3, 3)), lo, hi)
            _add(inst, _pitch(tonic, scale, degree), t, t + 0.95 * length * beat,
                 rng.randint(88, 108), seconds)
            t += length * beat
        b += int(sum(lengths))
    return inst


def _accompaniment(spec: ClipSpec, rng: random.Random, tonic: int, beat: float,
                   seconds: float) -> pretty_midi.Instrument:
    """Block chords (triad + octave on beats 1 and 3) or an eighth-note arpeggio, a chord a bar,
    an octave below the melody."""
    scale = SCALES[spec.mode]
    inst = pretty_midi.Instrument(spec.accomp_program, name="accompaniment")
    bar = 0
    while bar * 4 * beat < seconds:
        root = spec.progression[bar % 4]
        root = root - 7 if root >= 4 else root  # keep the chords around the tonic
        t0 = bar * 4 * beat
        if spec.accomp_style == "block":
            degrees = (root, root + 2, root + 4, root + 7)
            for half in (0, 2):
                velocity = rng.randint(58, 72)
                for d in degrees:
                    _add(inst, _pitch(tonic - 12, scale, d), t0 + half * beat,
                         t0 + (half + 1.9) * beat, velocity, seconds)
        else:
            for i, d in enumerate((0, 2, 4, 7, 4, 2, 0, 2)):
                t = t0 + i * beat / 2
                _add(inst, _pitch(tonic - 12, scale, root + d), t, t + 0.9 * beat,
                     rng.randint(58, 72), seconds)
        bar += 1
    return inst


def _drums(spec: ClipSpec, rng: random.Random, beat: float, seconds: float
           ) -> pretty_midi.Instrument:
    """The clip's drum pattern, repeated every bar (GM channel 10)."""
    inst = pretty_midi.Instrument(0, is_drum=True, name="drums")
    pattern = DRUM_PATTERNS[spec.drum_pattern]
    n_eighths = math.ceil(seconds / (beat / 2))
    for e in range(n_eighths):
        for drum, positions in pattern.items():
            if e % 8 in positions:
                velocity = rng.randint(55, 75) if drum == HIHAT else rng.randint(90, 110)
                _add(inst, drum, e * beat / 2, e * beat / 2 + 0.1, velocity, seconds)
    return inst


def build_midi(spec: ClipSpec, seconds: float) -> pretty_midi.PrettyMIDI:
    """The clip as MIDI: melody, accompaniment and (if ``spec.drums``) drums; all notes end by
    ``seconds``. The tempo event is ``spec.tempo``; note draws are seeded by ``spec.rng_key``."""
    if seconds <= 0:
        raise ValueError(f"seconds={seconds!r}: must be positive")
    rng = random.Random(spec.rng_key + "-notes")
    tonic = 57 + (KEYS.index(spec.key) - 9) % 12  # A3 .. G#4
    beat = 60.0 / spec.tempo
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(spec.tempo))
    midi.instruments.append(_melody(spec, rng, tonic, beat, seconds))
    midi.instruments.append(_accompaniment(spec, rng, tonic, beat, seconds))
    drums = _drums(spec, rng, beat, seconds)  # drawn either way: the pitched parts stay the same
    if spec.drums:
        midi.instruments.append(drums)
    return midi


# --------------------------------------------------------------------------- rendering


def find_soundfont(soundfont: str) -> str:
    """A soundfont name in ``SOUNDFONTS`` or a path → an existing absolute path, or
    MissingToolError naming the path and the Debian package that provides it."""
    path, package = SOUNDFONTS.get(soundfont, (soundfont, None))
    if os.path.isfile(path):
        return os.path.abspath(path)
    if package is None:
        for known_path, known_package in SOUNDFONTS.values():
            if os.path.basename(known_path) == os.path.basename(path):
                package = known_package
    hint = (f"install it with: apt-get install {package}" if package else
            "the GM soundfonts come from the Debian packages "
            + " and ".join(f"{p} ({os.path.basename(f)}: apt-get install {p})"
                           for f, p in SOUNDFONTS.values()))
    raise MissingToolError(f"soundfont {path} not found; {hint}")


def find_fluidsynth() -> str:
    """The fluidsynth executable on PATH, or MissingToolError (apt-get install fluidsynth)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise MissingToolError("fluidsynth not found on PATH; install it with: "
                               "apt-get install fluidsynth")
    return exe


def _lowpass_decimate2(x: np.ndarray) -> np.ndarray:
    """Halve the sample rate of ``x`` (T,): a 127-tap Kaiser-windowed sinc low-pass (flat to
    0.8 ×, -6 dB at 0.9 × and below -80 dB above the output's Nyquist frequency), then every
    second sample. Returns (ceil(T / 2),)."""
    n = np.arange(-63, 64)
    cutoff = 0.9 * 0.25  # cycles per input sample; the output's Nyquist frequency is 0.25
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(n.size, 8.0)
    taps /= taps.sum()
    return np.convolve(x, taps, mode="same")[::2]


def render_midi(midi_path: str, soundfont: str, sample_rate: int, fluidsynth: str = "fluidsynth"
                ) -> np.ndarray:
    """Render a MIDI file with the fluidsynth CLI at 2 × ``sample_rate`` and decimate.
    Returns mono float64 audio (T,) at ``sample_rate``, as long as fluidsynth made it."""
    with tempfile.TemporaryDirectory(prefix="music_render_") as tmp:
        out = os.path.join(tmp, "render.wav")
        cmd = [fluidsynth, "-ni", "-q", "-g", str(FLUIDSYNTH_GAIN), "-r", str(2 * sample_rate),
               "-O", "float", "-T", "wav", "-F", out, soundfont, midi_path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise RuntimeError(f"fluidsynth failed on {midi_path} (exit {proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        audio, sr = sf.read(out, dtype="float64", always_2d=True)
    assert sr == 2 * sample_rate, (sr, sample_rate)
    return _lowpass_decimate2(audio.mean(axis=1))


def finish_audio(audio: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Cut or zero-pad ``audio`` (T,) to ``round(seconds × sample_rate)`` samples, fade out the
    last 10 ms and scale to -20 dBFS RMS, less if the peak would exceed -1 dBFS. Returns (T',)
    float32; ValueError if the audio is silent."""
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    out[:min(n, audio.size)] = audio[:n]
    fade = min(n, int(FADE_OUT_SEC * sample_rate))
    out[n - fade:] *= np.linspace(1.0, 0.0, fade)
    peak = float(np.abs(out).max()) if n else 0.0
    if peak < SILENT_PEAK:
        raise ValueError(f"rendered audio is silent (peak {peak:.2e})")
    rms = float(np.sqrt(np.mean(out ** 2)))
    gain = min(10 ** (TARGET_RMS_DBFS / 20) / rms, 10 ** (MAX_PEAK_DBFS / 20) / peak)
    return (out * gain).astype(np.float32)


@dataclass(frozen=True)
class ClipJob:
    """One clip to make: its spec, the render options and where its files go."""

    spec: ClipSpec
    seconds: float
    sample_rate: int
    soundfont: str
    fluidsynth: str
    wav_path: str
    midi_path: str


def make_clip(job: ClipJob) -> bool:
    """Write the clip's MIDI and WAV (each via a temporary name); skip it if the WAV exists.
    Returns True if it was rendered, False if skipped."""
    if os.path.isfile(job.wav_path):
        return False
    with atomic_path(job.midi_path) as tmp_mid:
        build_midi(job.spec, job.seconds).write(str(tmp_mid))
    raw = render_midi(job.midi_path, job.soundfont, job.sample_rate, job.fluidsynth)
    try:
        audio = finish_audio(raw, job.sample_rate, job.seconds)
    except ValueError as e:
        raise RuntimeError(f"{job.midi_path} rendered with {job.soundfont}: {e}; "
                           "is the soundfont a valid GM .sf2?") from None
    with atomic_path(job.wav_path) as tmp_wav:
        sf.write(tmp_wav, audio, job.sample_rate, subtype="PCM_16", format="WAV")
    return True


# --------------------------------------------------------------------------- corpus


def corpus_tag(seconds: float, sample_rate: int, seed: int, soundfont: str,
               families: Sequence[str] | None = None) -> str:
    """A directory name for the options that define the audio (not the split sizes: clip
    ``i`` of a split is the same whatever the number of clips)."""
    fams = resolve_families(families)
    tag = (f"sec{seconds:g}_sr{sample_rate}_seed{seed}_"
           f"{os.path.splitext(os.path.basename(soundfont))[0]}")
    return tag if fams == FAMILIES else tag + "_" + "-".join(fams)


def draw_corpus(num_clips: Mapping[str, int], seed: int, families: Sequence[str] | None = None
                ) -> dict[str, list[ClipSpec]]:
    """Specs of every split: ``{split: [draw_clip(seed, split, i) for i < num_clips[split]]}``."""
    for split, n in num_clips.items():
        if split not in SPLITS or not isinstance(n, int) or n < 0:
            raise ValueError(f"num_clips[{split!r}]={n!r}: splits are {SPLITS}, counts ints ≥ 0")
    return {split: [draw_clip(seed, split, i, families) for i in range(n)]
            for split, n in num_clips.items()}


def class_balance(fields: Sequence[Mapping]) -> dict:
    """Counts of each categorical field's values (sorted), and tempo min/mean/max."""
    out: dict = {}
    for name in FIELD_NAMES:
        values = [f[name] for f in fields]
        if name == "tempo":
            out[name] = ({"min": min(values), "mean": round(sum(values) / len(values), 1),
                          "max": max(values)} if values else {})
        else:
            out[name] = {str(k): v for k, v in sorted(Counter(values).items())}
    return out


def write_data_dir(path: str, specs: Sequence[ClipSpec], wav_dir: str, seconds: float) -> None:
    """A Kaldi/ESPnet data dir for ``specs`` (utt2spk: each clip is its own speaker) with
    ``fields.jsonl``; every file sorted by utterance id and written atomically."""
    os.makedirs(path, exist_ok=True)
    specs = sorted(specs, key=lambda s: s.utt)
    rows = []
    for s in specs:
        fields = s.fields()
        rows.append({"utt": s.utt, "caption": make_caption(fields), **fields})
    wav = {s.utt: os.path.abspath(os.path.join(wav_dir, s.utt + ".wav")) for s in specs}
    write_lines(os.path.join(path, "wav.scp"), [f"{r['utt']} {wav[r['utt']]}" for r in rows])
    write_lines(os.path.join(path, "text"), [f"{r['utt']} {r['caption']}" for r in rows])
    write_lines(os.path.join(path, "utt2spk"), [f"{r['utt']} {r['utt']}" for r in rows])
    write_lines(os.path.join(path, "spk2utt"), [f"{r['utt']} {r['utt']}" for r in rows])
    write_lines(os.path.join(path, "utt2dur"), [f"{r['utt']} {seconds:.3f}" for r in rows])
    write_lines(os.path.join(path, "fields.jsonl"), [json.dumps(r) for r in rows])


def _check_config(out_dir: str, config: Mapping) -> None:
    """Record ``config`` in ``OUT_DIR/config.json``; refuse a directory built with other options."""
    path = os.path.join(out_dir, "config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{out_dir} holds clips made with other options "
                             f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                             "use another --out_dir")
        return
    write_json(path, config, indent=1)


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`build_corpus` did: clips per split, rendered vs skipped, wall time."""

    clips: dict
    rendered: int
    skipped: int
    seconds_wall: float
    out_dir: str
    datadir: str


def _run_jobs(jobs: Sequence[ClipJob], nj: int, progress: bool) -> Iterator[bool]:
    bar = dict(total=len(jobs), disable=not progress, desc="music clips", unit="clip")
    if nj == 1:
        yield from tqdm(map(make_clip, jobs), **bar)
        return
    # spawn, not fork: the caller may hold threads (torch, tqdm monitors)
    with ProcessPoolExecutor(nj, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from tqdm(pool.map(make_clip, jobs, chunksize=4), **bar)


def build_corpus(out_dir: str, datadir: str, num_train: int = 1200, num_dev: int = 100,
                 num_test: int = 100, seconds: float = 10.0, sample_rate: int = 16000,
                 seed: int = 0, nj: int = 1, soundfont: str = "TimGM6mb",
                 families: Sequence[str] | str | None = None, progress: bool = True
                 ) -> CorpusSummary:
    """Render the corpus into ``out_dir/{wav,midi}`` and write ``datadir/{train,dev,test}``
    and ``datadir/fields_stats.json``; clips whose WAV exists are skipped and temporary files
    left by a killed run are removed (so only one build may use an ``out_dir`` at a time)."""
    if not 0 < seconds <= 600:
        raise ValueError(f"seconds={seconds!r}: expected 0 < seconds ≤ 600")
    if not 8000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate={sample_rate!r}: expected 8000..48000 (rendered at 2×)")
    if nj < 1:
        raise ValueError(f"nj={nj!r}: expected ≥ 1")
    fams = resolve_families(families)
    sf_path = find_soundfont(soundfont)
    exe = find_fluidsynth()
    specs = draw_corpus({"train": num_train, "dev": num_dev, "test": num_test}, seed, fams)
    t0 = time.perf_counter()
    wav_dir, midi_dir = os.path.join(out_dir, "wav"), os.path.join(out_dir, "midi")
    for d in (wav_dir, midi_dir):
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):  # left by a killed run (one build per out_dir at a time)
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(d, name))
    _check_config(out_dir, {"generator_version": GENERATOR_VERSION, "seconds": seconds,
                            "sample_rate": sample_rate, "seed": seed,
                            "soundfont": os.path.basename(sf_path), "families": list(fams)})
    jobs = [ClipJob(s, seconds, sample_rate, sf_path, exe, os.path.join(wav_dir, s.utt + ".wav"),
                    os.path.join(midi_dir, s.utt + ".mid"))
            for split in SPLITS for s in specs[split]]
    rendered = sum(_run_jobs(jobs, nj, progress))
    for split in SPLITS:
        write_data_dir(os.path.join(datadir, split), specs[split], wav_dir, seconds)
    stats = {split: class_balance([s.fields() for s in specs[split]]) for split in SPLITS}
    write_json(os.path.join(datadir, "fields_stats.json"), stats, indent=1)
    return CorpusSummary({k: len(v) for k, v in specs.items()}, rendered, len(jobs) - rendered,
                         round(time.perf_counter() - t0, 2), os.path.abspath(out_dir),
                         os.path.abspath(datadir))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audio_gen.music", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_train", type=int, default=1200, help="training clips")
    p.add_argument("--num_dev", type=int, default=100, help="dev clips")
    p.add_argument("--num_test", type=int, default=100, help="test clips")
    p.add_argument("--seconds", type=float, default=10.0, help="length of every clip")
    p.add_argument("--sample_rate", type=int, default=16000, help="output sample rate (Hz)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same corpus (byte-identical)")
    p.add_argument("--nj", type=int, default=1, help="parallel rendering processes")
    p.add_argument("--soundfont", default="TimGM6mb",
                   help=f"a name ({', '.join(SOUNDFONTS)}) or a path to a GM .sf2")
    p.add_argument("--families", default=None,
                   help=f"comma-separated subset of the instrument families {','.join(FAMILIES)}")
    p.add_argument("--out_dir", default=None,
                   help="where WAV and MIDI go (default downloads/synth_music/<options tag>)")
    p.add_argument("--datadir", default="data", help="where the data dirs are written")
    p.add_argument("--fields_only", action="store_true",
                   help="only draw the fields and print their class balance (JSON); write nothing")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    try:
        if args.fields_only:
            specs = draw_corpus({"train": args.num_train, "dev": args.num_dev,
                                 "test": args.num_test}, args.seed, args.families)
            print(json.dumps({split: class_balance([s.fields() for s in ss])
                              for split, ss in specs.items()}, indent=1))
            return 0
        out_dir = args.out_dir or os.path.join("downloads", "synth_music", corpus_tag(
            args.seconds, args.sample_rate, args.seed, args.soundfont, args.families))
        summary = build_corpus(out_dir, args.datadir, args.num_train, args.num_dev, args.num_test,
                               args.seconds, args.sample_rate, args.seed, args.nj, args.soundfont,
                               args.families, progress=not args.no_progress)
    except (MissingToolError, ValueError) as e:
        logger.error("%s", e)
        return 1
    logger.info("%s", json.dumps(asdict(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
