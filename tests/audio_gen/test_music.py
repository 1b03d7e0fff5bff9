"""audio_gen.music: the music corpus is deterministic, captioned from its fields, rendered to
the right format, resumable and kill-safe, and fails clearly on bad input."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from audio_gen import music

ROOT = Path(__file__).resolve().parents[2]
needs_fluidsynth = pytest.mark.skipif(
    not (music.shutil.which("fluidsynth") and os.path.isfile(music.SOUNDFONTS["TimGM6mb"][0])),
    reason="apt-get install fluidsynth timgm6mb-soundfont")
TINY = dict(num_train=3, num_dev=1, num_test=1, seconds=2.0, sample_rate=16000, seed=3,
            progress=False)
CAPTION = re.compile(r"a (slow|moderate|fast) ([A-G][b#]?) (major|minor) piece at (\d+) BPM, "
                     r"(.+) melody over (block-chord|arpeggiated) (.+), (with drums|no drums)")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _read_fields(datadir, split):
    with open(os.path.join(datadir, split, "fields.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _files(out_dir, sub):
    d = os.path.join(out_dir, sub)
    return {name: Path(d, name).read_bytes() for name in sorted(os.listdir(d))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("music")
    out, data = str(base / "dl"), str(base / "data")
    summary = music.build_corpus(out, data, nj=1, **TINY)
    return out, data, summary


# --------------------------------------------------------------------------- fields


def test_constants():
    assert music.FAMILIES == tuple(music.FAMILY_PROGRAMS) and len(music.FAMILIES) == 8
    assert music.TEMPO_BUCKETS == ("slow", "moderate", "fast")
    programs = [p for ps in music.FAMILY_PROGRAMS.values() for p in ps]
    assert len(programs) == len(set(programs))
    for lo_bucket, (lo, hi) in music.TEMPO_RANGES.items():
        assert music.tempo_bucket(lo) == music.tempo_bucket(hi) == lo_bucket


def test_caption_agrees_with_fields():
    for i in range(300):
        spec = music.draw_clip(0, "train", i)
        f = spec.fields()
        assert tuple(f) == music.FIELD_NAMES
        m = CAPTION.fullmatch(music.make_caption(f))
        assert m, music.make_caption(f)
        bucket, key, mode, tempo, mel, style, acc, drums = m.groups()
        assert (bucket, key, mode, int(tempo)) == (f["tempo_bucket"], f["key"], f["mode"], f["tempo"])
        assert f["tempo_bucket"] == music.tempo_bucket(f["tempo"])
        assert mel == f["melody_family"].replace("_", " ")
        assert acc == f["accomp_family"].replace("_", " ")
        assert style == {"block": "block-chord", "arpeggio": "arpeggiated"}[f["accomp_style"]]
        assert (drums == "with drums") is f["drums"]
        assert f["melody_family"] != f["accomp_family"]
        for part in ("melody", "accomp"):
            program = f[f"{part}_program"]
            assert music.family_of(program) == f[f"{part}_family"]
            assert f[f"{part}_instrument"] == pretty_midi.program_to_instrument_name(program)
            assert music.program_of(f[f"{part}_instrument"]) == program


def test_draws_independent_of_order_and_split_sizes():
    forward = [music.draw_clip(7, "dev", i) for i in range(20)]
    backward = [music.draw_clip(7, "dev", i) for i in reversed(range(20))][::-1]
    assert forward == backward
    small = music.draw_corpus({"train": 5, "dev": 3}, 7)
    large = music.draw_corpus({"train": 9, "dev": 20, "test": 2}, 7)
    assert small["dev"] == large["dev"][:3] and small["train"] == large["train"][:5]
    assert forward[:3] == small["dev"]
    assert music.draw_clip(7, "train", 0).fields() != music.draw_clip(8, "train", 0).fields()
    subset = [music.draw_clip(0, "test", i, "piano,brass").fields() for i in range(30)]
    assert {f["melody_family"] for f in subset} | {f["accomp_family"] for f in subset} == {"piano", "brass"}


def test_midi_respects_fields():
    for i in range(10):
        spec = music.draw_clip(1, "train", i)
        midi = music.build_midi(spec, 3.0)
        programs = [(inst.program, inst.is_drum) for inst in midi.instruments]
        assert programs[:2] == [(spec.melody_program, False), (spec.accomp_program, False)]
        assert (len(programs) == 3 and programs[2][1]) if spec.drums else len(programs) == 2
        notes = [n for inst in midi.instruments for n in inst.notes]
        assert max(n.end for n in notes) <= 3.0 and min(n.start for n in notes) >= 0.0
        tonic = music.KEYS.index(spec.key)
        scale = {(tonic + s) % 12 for s in music.SCALES[spec.mode]}
        assert {n.pitch % 12 for inst in midi.instruments[:2] for n in inst.notes} <= scale


def test_decimation_passes_the_band_and_removes_aliases():
    t = np.arange(32000) / 32000
    for freq, lo_db, hi_db in ((1000, -0.1, 0.1), (6000, -0.1, 0.1), (8200, -300, -80), (13000, -300, -80)):
        y = music._lowpass_decimate2(np.sin(2 * np.pi * freq * t))[200:-200]
        assert y.size < 16000 and lo_db < 20 * np.log10(np.sqrt(2 * np.mean(y ** 2))) < hi_db, freq


# --------------------------------------------------------------------------- bad input


def test_unknown_names():
    with pytest.raises(ValueError, match=r"'kazoo'.*valid families: piano, organ"):
        music.resolve_families(["piano", "kazoo"])
    with pytest.raises(ValueError, match="at least two"):
        music.resolve_families("piano")
    with pytest.raises(ValueError, match=r"GM program 200 .*40 \(Violin\)"):
        music.family_of(200)
    with pytest.raises(ValueError, match=r"unknown instrument 'Kazoo'.*Violin"):
        music.program_of("Kazoo")
    cli = subprocess.run([sys.executable, "-m", "audio_gen.music", "--families", "piano,kazoo",
                          "--fields_only"], capture_output=True, text=True, env=_env())
    assert cli.returncode == 1 and "'kazoo'" in cli.stderr


def test_missing_soundfont(tmp_path):
    path = str(tmp_path / "TimGM6mb.sf2")
    hint = re.escape(path) + ".*apt-get install timgm6mb-soundfont"
    with pytest.raises(music.MissingToolError, match=hint):
        music.build_corpus(str(tmp_path / "o"), str(tmp_path / "d"), soundfont=path, **TINY)
    with pytest.raises(music.MissingToolError, match="fluid-soundfont-gm"):
        music.find_soundfont(str(tmp_path / "mine.sf2"))
    if not os.path.isfile(music.SOUNDFONTS["FluidR3_GM"][0]):
        with pytest.raises(music.MissingToolError, match="apt-get install fluid-soundfont-gm"):
            music.find_soundfont("FluidR3_GM")
    assert not (tmp_path / "o").exists()


def test_missing_fluidsynth(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(music.MissingToolError, match="apt-get install fluidsynth"):
        music.build_corpus(str(tmp_path / "o"), str(tmp_path / "d"), **TINY)


# --------------------------------------------------------------------------- rendering


@needs_fluidsynth
def test_corpus_layout_and_audio(corpus):
    out, data, summary = corpus
    assert (summary.rendered, summary.skipped) == (5, 0)
    for split, n in (("train", 3), ("dev", 1), ("test", 1)):
        rows = _read_fields(data, split)
        utts = [r["utt"] for r in rows]
        assert utts == sorted(utts) and len(utts) == n
        for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
            lines = Path(data, split, name).read_text().splitlines()
            assert [line.split()[0] for line in lines] == utts
        text = dict(line.split(" ", 1) for line in Path(data, split, "text").read_text().splitlines())
        for r in rows:
            assert r["caption"] == text[r["utt"]] == music.make_caption(r)
            assert set(r) == {"utt", "caption", *music.FIELD_NAMES}
        for line in Path(data, split, "wav.scp").read_text().splitlines():
            utt, path = line.split()
            info = sf.info(path)
            assert os.path.isabs(path) and path.endswith(f"/wav/{utt}.wav")
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 32000, "PCM_16")
            audio, _ = sf.read(path)
            assert np.sqrt(np.mean(audio ** 2)) > 0.05 and np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-4
    stats = json.loads(Path(data, "fields_stats.json").read_text())
    assert sum(stats["train"]["tempo_bucket"].values()) == 3


@needs_fluidsynth
def test_tempo_field_equals_midi_tempo(corpus):
    out, data, _ = corpus
    for split in music.SPLITS:
        for r in _read_fields(data, split):
            midi = pretty_midi.PrettyMIDI(os.path.join(out, "midi", r["utt"] + ".mid"))
            _, tempi = midi.get_tempo_changes()
            assert len(tempi) == 1 and round(tempi[0]) == r["tempo"]
            assert (any(i.is_drum for i in midi.instruments)) is r["drums"]
            assert [i.program for i in midi.instruments if not i.is_drum] == \
                [r["melody_program"], r["accomp_program"]]


@needs_fluidsynth
def test_deterministic_whatever_nj(corpus, tmp_path):
    out, data, _ = corpus
    out2, data2 = str(tmp_path / "dl"), str(tmp_path / "data")
    summary = music.build_corpus(out2, data2, nj=2, **TINY)
    assert summary.rendered == 5
    for split in music.SPLITS:
        assert _read_fields(data, split) == _read_fields(data2, split)
    assert _files(out, "wav") == _files(out2, "wav")
    assert _files(out, "midi") == _files(out2, "midi")


def _hf_energy(audio, sr, hop):
    """Energy above 5 kHz per frame of ``hop`` samples."""
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    spec = np.abs(np.fft.rfft(frames * np.hanning(hop), axis=1)) ** 2
    return spec[:, np.fft.rfftfreq(hop, 1 / sr) > 5000].sum(axis=1)


@needs_fluidsynth
def test_drums_add_high_frequency_energy_at_midi_drum_onsets(tmp_path):
    sr, hop, seconds = 16000, 320, 3.0
    spec = next(s for s in (music.draw_clip(0, "train", i) for i in range(50))
                if s.drums and s.drum_pattern == "rock")
    sf2, exe = music.find_soundfont("TimGM6mb"), music.find_fluidsynth()
    renders = {}
    for drums in (False, True):
        mid = str(tmp_path / f"{drums}.mid")
        music.build_midi(dataclasses.replace(spec, drums=drums), seconds).write(mid)
        renders[drums] = music.finish_audio(music.render_midi(mid, sf2, sr, exe), sr, seconds)
    spectra = {d: np.abs(np.fft.rfft(a)) ** 2 for d, a in renders.items()}
    high = np.fft.rfftfreq(int(sr * seconds), 1 / sr) > 5000
    share = {d: s[high].sum() / s.sum() for d, s in spectra.items()}
    assert share[True] > share[False]
    # the high-frequency energy of the drum clip peaks at the drum onsets read from its MIDI
    drums = pretty_midi.PrettyMIDI(str(tmp_path / "True.mid")).instruments[2]
    energy = _hf_energy(renders[True], sr, hop)
    at_onset = np.zeros(energy.size, bool)
    for note in drums.notes:
        at_onset[int(note.start * sr) // hop: int(note.start * sr) // hop + 2] = True
    assert energy[at_onset].mean() > energy[~at_onset[: energy.size]].mean()


# --------------------------------------------------------------------------- resuming


@needs_fluidsynth
def test_rerun_skips_and_resumes(corpus, tmp_path):
    out, data, _ = corpus
    wavs = _files(out, "wav")
    mtimes = {n: os.stat(os.path.join(out, "wav", n)).st_mtime_ns for n in wavs}
    again = music.build_corpus(out, data, nj=1, **TINY)
    assert (again.rendered, again.skipped) == (0, 5)
    assert {n: os.stat(os.path.join(out, "wav", n)).st_mtime_ns for n in wavs} == mtimes
    os.remove(os.path.join(out, "wav", "train_000001.wav"))
    Path(out, "wav", ".train_000002.wav.x1.tmp").write_bytes(b"truncated")  # a killed write
    resumed = music.build_corpus(out, data, nj=1, **TINY)
    assert (resumed.rendered, resumed.skipped) == (1, 4)
    assert _files(out, "wav") == wavs and not Path(out, "wav", ".train_000002.wav.x1.tmp").exists()
    with pytest.raises(ValueError, match="seconds: 2.0 there, 3.0 now"):
        music.build_corpus(out, data, nj=1, **{**TINY, "seconds": 3.0})


@needs_fluidsynth
def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    spec = music.draw_clip(0, "dev", 0)
    job = music.ClipJob(spec, 1.0, 16000, music.find_soundfont("TimGM6mb"), music.find_fluidsynth(),
                        str(tmp_path / "a.wav"), str(tmp_path / "a.mid"))

    def half_write(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF")
        raise KeyboardInterrupt

    monkeypatch.setattr(music.sf, "write", half_write)
    with pytest.raises(KeyboardInterrupt):
        music.make_clip(job)
    assert sorted(os.listdir(tmp_path)) == ["a.mid"]
    monkeypatch.undo()
    assert music.make_clip(job) and not music.make_clip(job)
    assert sf.info(job.wav_path).frames == 16000


@needs_fluidsynth
def test_killed_cli_leaves_only_complete_files(tmp_path):
    out, data = tmp_path / "dl", tmp_path / "data"
    cmd = [sys.executable, "-m", "audio_gen.music", "--out_dir", str(out), "--datadir", str(data),
           "--num_train", "6", "--num_dev", "0", "--num_test", "0", "--seconds", "1",
           "--no_progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(out.glob("wav/*.wav"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("wav/*.wav"))
    assert done and all(sf.info(str(p)).frames == 16000 for p in done)
    assert not (data / "train").exists() or len(done) == 6
    summary = music.build_corpus(str(out), str(data), 6, 0, 0, seconds=1.0, progress=False)
    assert summary.skipped == len(done) and summary.rendered == 6 - len(done)
    assert len(list((out / "wav").iterdir())) == 6
    assert len(Path(data, "train", "wav.scp").read_text().splitlines()) == 6


@needs_fluidsynth
def test_recipe_data_sh(tmp_path):
    script = ROOT / "egs" / "synth_music" / "gen1" / "local" / "data.sh"
    subprocess.run(["bash", str(script), "--num_train", "2", "--num_dev", "1", "--num_test", "1",
                    "--seconds", "1", "--nj", "1", "--families", "piano,strings",
                    "--datadir", str(tmp_path / "data")], cwd=tmp_path, env=_env(), check=True,
                   capture_output=True)
    out = tmp_path / "downloads" / "synth_music" / "sec1_sr16000_seed0_TimGM6mb_piano-strings"
    assert len(list((out / "wav").glob("*.wav"))) == 4
    rows = _read_fields(str(tmp_path / "data"), "train")
    assert {r["melody_family"] for r in rows} <= {"piano", "strings"}
