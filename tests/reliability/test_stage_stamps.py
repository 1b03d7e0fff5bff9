"""A recipe stage is skipped only if every input it read is unchanged (nar.base.stamps).

Stage 2 of the recipes (asr.bin.format_data) used to skip a set whose ``dump/raw/<set>/.done``
was newer than ``data/<set>/text``: an edited ``wav.scp`` (or utt2spk, segments, the audio,
--min_duration) was silently ignored and dump/ kept the stale paths. Now ``.done`` is a stamp
of what the run read; these tests change each kind of input and check the rerun and its reason,
and that an unchanged rerun is skipped without rewriting anything.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asr.bin import format_data
from nar.base import stamps
from nar.base.kaldi import DataDirError, read_kaldi_map, write_data_dir
from nar.base.stamps import StageStamp, audio_files_of_scp, signature
from tests.conftest import ROOT, _copy_recipe, recipe_env

SR = 16000


def _wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).normal(size=int(SR * seconds)).astype(np.float32) * 0.1
    soundfile.write(path, audio, SR, format="WAV")
    return path


def _data_dir(root: Path, name: str, durations: list[float], audio_dir: Path | None = None) -> Path:
    """A data dir ``root/name`` of speaker-prefixed utterances s-u0, s-u1, ... with absolute wav paths."""
    audio_dir = audio_dir or root / "audio" / name
    wavs, text, spk = {}, {}, {}
    for i, d in enumerate(durations):
        utt = f"s-u{i}"
        wavs[utt] = str(_wav(audio_dir / f"{utt}.wav", d, seed=i))
        text[utt], spk[utt] = "hello world", "s"
    write_data_dir(str(root / name), wavs, text, spk)
    return root / name


def _bump_mtime(path: Path, seconds: float = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def _stage(tmp_path: Path, n: int = 2):
    """Inputs of a made-up stage: two small files and n audio files referenced by a wav.scp."""
    d = tmp_path / "in"
    d.mkdir()
    wav_scp = d / "wav.scp"
    audio = [_wav(tmp_path / f"a{i}.wav", 0.1, seed=i) for i in range(n)]
    wav_scp.write_text("".join(f"s-u{i} {p}\n" for i, p in enumerate(audio)))
    (d / "text").write_text("".join(f"s-u{i} hello\n" for i in range(n)))
    inputs = {"wav.scp": wav_scp, "text": d / "text", "segments": d / "segments"}  # segments: absent
    return inputs, audio


def _changes(stamp, inputs, options, **kw):
    audio = [f for name, p in inputs.items() if name == "wav.scp" for f in audio_files_of_scp(p)]
    return stamp.changes(signature(inputs, options, audio), **kw)


# --------------------------------------------------------------------------- the stamp module


def test_unchanged_inputs_give_no_reason_and_a_touch_is_not_a_change(tmp_path):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / "out" / ".done")
    assert _changes(stamp, inputs, {"a": 1}) == ["no stamp: first run"]
    stamp.write(signature(inputs, {"a": 1}, audio))
    assert _changes(stamp, inputs, {"a": 1}) == []
    _bump_mtime(inputs["text"])  # same content: the hash decides for small files
    assert _changes(stamp, inputs, {"a": 1}) == []
    data = json.loads(stamp.path.read_text())
    assert data["format"] == stamps.STAMP_FORMAT and data["written"]
    assert data["inputs"]["segments"]["missing"] is True
    assert set(data["inputs"]["wav.scp"]) == {"path", "size", "mtime_ns", "sha256"}
    assert data["audio"][str(audio[0])] == [audio[0].stat().st_size, audio[0].stat().st_mtime_ns]


def test_each_kind_of_input_change_is_named(tmp_path):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature(inputs, {}, audio))
    # a transcript edited
    inputs["text"].write_text("s-u0 hello\ns-u1 other\n")
    assert _changes(stamp, inputs, {}) == ["text changed (sha256 differs)"]
    stamp.write(signature(inputs, {}, audio))
    # segments appear, then go
    inputs["segments"].write_text("s-u0 s-u0 0 0.1\n")
    assert _changes(stamp, inputs, {}) == ["segments added"]
    stamp.write(signature(inputs, {}, audio))
    inputs["segments"].unlink()
    assert _changes(stamp, inputs, {}) == ["segments removed"]
    stamp.write(signature(inputs, {}, audio))
    # an input that the stamped run did not read / no longer reads
    extra = dict(inputs, utt2spk=inputs["text"])
    assert _changes(stamp, extra, {}) == ["utt2spk was not an input of the stamped run"]
    assert _changes(stamp, {k: v for k, v in inputs.items() if k != "text"}, {}) == ["text is no longer an input"]
    # the same name read from elsewhere
    other = tmp_path / "other_text"
    other.write_bytes(inputs["text"].read_bytes())
    assert _changes(stamp, dict(inputs, text=other), {}) == [f"text is now {other} (was {inputs['text']})"]


def test_wav_scp_pointing_elsewhere_names_the_list_and_the_audio(tmp_path):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature(inputs, {}, audio))
    new = _wav(tmp_path / "new.wav", 0.3)
    inputs["wav.scp"].write_text(f"s-u0 {new}\ns-u1 {audio[1]}\n")
    assert _changes(stamp, inputs, {}) == [
        "wav.scp changed (sha256 differs)",
        f"1 audio file newly referenced: {new}",
        f"1 audio file no longer referenced: {audio[0]}",
    ]


def test_option_changes_are_named_with_both_values(tmp_path):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature(inputs, {"min_duration": 0.1, "max_duration": float("inf"), "old": "x"}, audio))
    assert _changes(stamp, inputs, {"min_duration": 0.1, "max_duration": float("inf"), "old": "x"}) == []
    assert _changes(stamp, inputs, {"min_duration": 0.5, "max_duration": float("inf"), "new": [1, 2]}) == [
        "option min_duration 0.1 -> 0.5", "option new added (= [1, 2])", "option old removed (was 'x')"]


def test_audio_replaced_with_same_size_but_new_mtime_is_a_change(tmp_path):
    inputs, audio = _stage(tmp_path, n=3)
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature(inputs, {}, audio))
    size = audio[0].stat().st_size
    _wav(audio[0], 0.1, seed=99)  # other samples, same length: same size
    _bump_mtime(audio[0])  # (a file system with coarse timestamps could give the same mtime)
    assert audio[0].stat().st_size == size
    assert _changes(stamp, inputs, {}) == [f"1 audio file changed: {audio[0]} (mtime)"]
    _wav(audio[1], 0.2)  # longer: size (and mtime)
    audio[2].unlink()
    assert _changes(stamp, inputs, {}) == [f"3 audio files changed, e.g. {audio[0]} (mtime)"]
    stamp.write(signature(inputs, {}, audio))
    _wav(audio[1], 0.3)
    assert _changes(stamp, inputs, {}) == [f"1 audio file changed: {audio[1]} (size, mtime)"]
    _wav(audio[2], 0.1)
    assert _changes(stamp, inputs, {}) == [f"2 audio files changed, e.g. {audio[1]} (size, mtime)"]
    audio[1].unlink()
    assert _changes(stamp, inputs, {}) == [f"2 audio files changed, e.g. {audio[1]} (missing)"]


def test_outputs_edited_or_deleted_since_the_stamp_are_a_change(tmp_path):
    inputs, audio = _stage(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "wav.scp").write_text("x y\n")
    (out / "text").write_text("x hello\n")
    outputs = {"wav.scp": out / "wav.scp", "text": out / "text"}
    stamp = StageStamp(out / ".done")
    stamp.write(signature(inputs, {}, audio), outputs=outputs)
    assert _changes(stamp, inputs, {}, outputs=outputs) == []
    (out / "wav.scp").write_text("x z\n")
    (out / "text").unlink()
    assert _changes(stamp, inputs, {}, outputs=outputs) == [
        "output wav.scp changed since the stage wrote it (sha256 differs)", f"output text missing: {out / 'text'}"]


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty (a bare completion marker of an older version): rerun"),
    (b'{"format": 1, "inputs": {', "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b'{"format": 0, "inputs": {}, "options": {}, "audio": {}, "outputs": {}}', "has format 0, expected 1: rerun"),
    (b'{"format": 1, "inputs": {}}', "lacks its 'options' section: rerun"),
    (b"[1, 2]", "has format 'list', expected 1"),
])
def test_a_corrupt_or_foreign_stamp_means_rerun_with_the_reason(tmp_path, content, reason):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    stamp.path.write_bytes(content)
    [why] = _changes(stamp, inputs, {})
    assert why.startswith(f"stamp {stamp.path} ") and reason in why and why.endswith(": rerun")
    assert stamp.written() == ""


def test_the_stamp_is_written_atomically(tmp_path, monkeypatch):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature(inputs, {"v": 1}, audio))
    before = stamp.path.read_bytes()

    def dump_half_then_fail(obj, f, **kw):
        f.write('{"format": 1, "inp')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", dump_half_then_fail)  # what nar.base.files.write_json calls
    with pytest.raises(OSError, match="disk full"):
        stamp.write(signature(inputs, {"v": 2}, audio))
    monkeypatch.undo()
    assert stamp.path.read_bytes() == before  # the previous complete stamp, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == [".done", "a0.wav", "a1.wav", "in"]
    assert _changes(stamp, inputs, {"v": 2}) == ["option v 1 -> 2"]


def test_an_input_edited_while_the_stage_runs_is_seen_next_time(tmp_path):
    inputs, audio = _stage(tmp_path)
    stamp = StageStamp(tmp_path / ".done")
    sig = signature(inputs, {}, audio)  # signed before the work reads the inputs
    inputs["text"].write_text("s-u0 edited meanwhile\ns-u1 hello\n")
    stamp.write(sig)
    assert _changes(stamp, inputs, {}) == ["text changed (sha256 differs)"]


def test_audio_files_of_scp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scp = tmp_path / "wav.scp"
    scp.write_bytes(b"a /abs/a.wav\nb rel/b.wav\nc sox x.wav -t wav - |\nd feats.ark:123\n\ne\nf caf\xe9.wav\n")
    assert audio_files_of_scp(scp) == ["/abs/a.wav", str(tmp_path / "rel/b.wav"), str(tmp_path / "feats.ark"),
                                       os.path.abspath(b"caf\xe9.wav".decode("utf-8", "surrogateescape"))]
    assert audio_files_of_scp(tmp_path / "missing") == []
    # a Latin-1 file name: stat'ed under its real name, stored printable in the JSON stamp
    latin = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")
    Path(latin).write_bytes(_wav(tmp_path / "plain.wav", 0.1).read_bytes())
    scp.write_bytes(b"a " + os.fsencode(latin) + b"\n")
    stamp = StageStamp(tmp_path / ".done")
    stamp.write(signature({"wav.scp": scp}, {}, audio_files_of_scp(scp)))
    assert json.loads(stamp.path.read_text())["audio"] == {
        f"{tmp_path}/caf\\xe9.wav": [os.stat(latin).st_size, os.stat(latin).st_mtime_ns]}
    assert stamp.changes(signature({"wav.scp": scp}, {}, audio_files_of_scp(scp))) == []


def test_command_line_check_and_write(tmp_path, capsys):
    inputs, audio = _stage(tmp_path)
    out = tmp_path / "stats"
    out.mkdir()
    (out / "shape").write_text("s-u0 1600\n")
    args = ["--stamp", str(out / ".stamp.json"), "--what", "stats", "--audio_scp", str(inputs["wav.scp"]),
            "--input", f"text={inputs['text']}", "--option", "args=--foo 1", "--output", f"shape={out / 'shape'}"]
    assert stamps.main(["check", *args]) == 1
    assert "stats: rerun: no stamp: first run" in capsys.readouterr().err
    assert stamps.main(["write", *args]) == 0
    assert stamps.main(["check", *args]) == 0
    assert "stats: inputs unchanged since " in capsys.readouterr().err
    assert stamps.main(["check", *args[:-4], "--option", "args=--foo 2", *args[-2:]]) == 1
    assert "option args '--foo 1' -> '--foo 2'" in capsys.readouterr().err
    _wav(audio[1], 0.5)
    assert stamps.main(["check", *args]) == 1
    assert f"1 audio file changed: {audio[1]} (size, mtime)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        stamps.main(["check", "--stamp", "x", "--input", "no-equals-sign"])


# --------------------------------------------------------------------------- format_data (stage 2)


def _snapshot(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()}


def _run(src: Path, dst: Path, caplog, *extra: str) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert format_data.main(["--src", str(src), "--dst", str(dst), *extra]) == 0
    return caplog.text


def test_format_data_reruns_when_wav_scp_changes_and_skips_when_nothing_did(tmp_path, caplog, monkeypatch):
    src = _data_dir(tmp_path, "train", [0.5, 0.6, 0.7])
    dst = tmp_path / "dump" / "train"
    log = _run(src, dst, caplog)
    assert "rebuilding: no stamp: first run" in log
    assert read_kaldi_map(dst / "utt2num_samples") == {"s-u0": "8000", "s-u1": "9600", "s-u2": "11200"}
    assert json.loads((dst / ".done").read_text())["tool"] == "asr.bin.format_data"

    # unchanged: skipped, nothing rewritten, no audio opened
    before = _snapshot(dst)
    monkeypatch.setattr(format_data.soundfile, "info", lambda *a, **k: pytest.fail("audio opened on a skip"))
    log = _run(src, dst, caplog)
    monkeypatch.undo()
    assert f"{dst}: inputs unchanged since " in log and ", skipped" in log
    assert _snapshot(dst) == before

    # wav.scp now points s-u1 at another (longer) recording: rebuilt, and dump/ follows
    new = _wav(tmp_path / "elsewhere" / "s-u1.wav", 1.25, seed=7)
    wav_scp = (src / "wav.scp").read_text().splitlines()
    wav_scp[1] = f"s-u1 {new}"
    (src / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    log = _run(src, dst, caplog)
    assert f"{dst}: rebuilding: wav.scp changed (sha256 differs); 1 audio file newly referenced: {new}; " in log
    assert read_kaldi_map(dst / "wav.scp")["s-u1"] == str(new)
    assert read_kaldi_map(dst / "utt2num_samples")["s-u1"] == "20000"
    assert read_kaldi_map(dst / "utt2dur")["s-u1"] == "1.250"
    assert "inputs unchanged" in _run(src, dst, caplog)


def test_format_data_reruns_for_audio_options_outputs_and_force(tmp_path, caplog):
    src = _data_dir(tmp_path, "train", [0.5, 0.6])
    dst = tmp_path / "dump" / "train"
    _run(src, dst, caplog)
    # the audio file itself re-recorded under the same name (wav.scp unchanged)
    wav = Path(read_kaldi_map(src / "wav.scp")["s-u0"])
    _wav(wav, 0.9)
    log = _run(src, dst, caplog)
    assert f"rebuilding: 1 audio file changed: {wav} (size, mtime)" in log
    assert read_kaldi_map(dst / "utt2num_samples")["s-u0"] == "14400"
    # an option
    log = _run(src, dst, caplog, "--min_duration", "0.7")
    assert "rebuilding: option min_duration 0.0 -> 0.7" in log
    assert list(read_kaldi_map(dst / "wav.scp")) == ["s-u0"]
    assert "inputs unchanged" in _run(src, dst, caplog, "--min_duration", "0.7")
    # utt2spk (a new speaker name) and an output deleted by hand
    (src / "utt2spk").write_text("s-u0 s\ns-u1 s\n")  # same content: no rerun
    assert "inputs unchanged" in _run(src, dst, caplog, "--min_duration", "0.7")
    (dst / "utt2dur").unlink()
    log = _run(src, dst, caplog, "--min_duration", "0.7")
    assert f"rebuilding: output utt2dur missing: {dst / 'utt2dur'}" in log
    assert (dst / "utt2dur").is_file()
    # --force
    before = _snapshot(dst)
    assert "rebuilding (--force)" in _run(src, dst, caplog, "--min_duration", "0.7", "--force")
    assert _snapshot(dst)["wav.scp"] != before["wav.scp"]


def test_format_data_reruns_after_an_older_version_bare_done(tmp_path, caplog):
    src = _data_dir(tmp_path, "dev", [0.5])
    dst = tmp_path / "dump" / "dev"
    dst.mkdir(parents=True)
    (dst / ".done").touch()  # the marker the previous format_data wrote
    log = _run(src, dst, caplog)
    assert "is empty (a bare completion marker of an older version): rerun" in log
    assert (dst / "wav.scp").is_file() and json.loads((dst / ".done").read_text())["format"] == 1


def test_a_failed_rebuild_leaves_no_stamp_that_would_skip_it(tmp_path, caplog):
    src = _data_dir(tmp_path, "train", [0.5, 0.6])
    dst = tmp_path / "dump" / "train"
    _run(src, dst, caplog)
    (src / "wav.scp").write_text(f"s-u0 {tmp_path / 'gone.wav'}\ns-u1 {tmp_path / 'gone.wav'}\n")
    with pytest.raises(DataDirError):
        format_data.main(["--src", str(src), "--dst", str(dst)])
    with pytest.raises(DataDirError):  # still a rerun, still the error: never "skipped"
        format_data.main(["--src", str(src), "--dst", str(dst)])


@pytest.mark.parametrize("name", ["text", "utt2spk"])
def test_a_data_dir_file_that_is_not_utf8_names_the_file_line_and_fix(tmp_path, name):
    src = _data_dir(tmp_path, "train", [0.5, 0.6])
    f = src / name
    lines = f.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"hello", "h\xe9llo".encode("latin-1")) if name == "text" else b"s-u1 s\xe9"
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(DataDirError) as e:
        format_data.main(["--src", str(src), "--dst", str(tmp_path / "dst")])
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: not valid UTF-8: byte 0xe9 at byte offset ")
    assert f"iconv -f latin1 -t utf-8 {f} > {f}.utf8 && mv {f}.utf8 {f}" in msg
    assert not (tmp_path / "dst" / ".done").exists()


def test_a_byte_order_mark_is_named(tmp_path):
    src = _data_dir(tmp_path, "train", [0.5])
    (src / "text").write_bytes(b"\xef\xbb\xbf" + (src / "text").read_bytes())
    with pytest.raises(DataDirError, match=r"text:1: starts with a UTF-8 byte order mark"):
        format_data.main(["--src", str(src), "--dst", str(tmp_path / "dst")])


# --------------------------------------------------------------------------- the recipe's stage 2


def test_recipe_stage_2_picks_up_an_edited_wav_scp(tmp_path):
    """egs/synth_en/asr1 (recipes/asr.sh) stage 2 alone, twice, on a hand-made tiny corpus. The
    training set is also the validation and the test set: it is formatted once per run, with the
    duration filter of a training set (s-u0, 0.05 s, is dropped)."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    recipe = tmp_path / "egs" / "synth_en" / "asr1"
    _copy_recipe("asr1", recipe)
    data = recipe / "data"
    _data_dir(data, "train", [0.05, 0.5, 0.6], audio_dir=tmp_path / "audio")
    cmd = ["./run.sh", "--stage", "2", "--stop_stage", "2", "--asr_config", "conf/train_ctc.yaml",
           "--train_set", "train", "--valid_set", "train", "--test_sets", "train"]

    def run() -> str:
        r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout + r.stderr

    out = run()
    assert out.count("dump/raw/train: rebuilding: no stamp: first run") == 1
    dump = recipe / "dump" / "raw" / "train"
    assert list(read_kaldi_map(dump / "wav.scp")) == ["s-u1", "s-u2"]
    new = _wav(tmp_path / "new.wav", 1.0, seed=5)
    (data / "train" / "wav.scp").write_text(
        (data / "train" / "wav.scp").read_text().replace(str(tmp_path / "audio" / "s-u1.wav"), str(new)))
    out = run()
    assert out.count("dump/raw/train: rebuilding: wav.scp changed (sha256 differs)") == 1
    assert "inputs unchanged" not in out  # the same set is not formatted again without its filter
    assert read_kaldi_map(dump / "wav.scp") == {"s-u1": str(new), "s-u2": str(tmp_path / "audio" / "s-u2.wav")}
    assert read_kaldi_map(dump / "utt2num_samples")["s-u1"] == "16000"


#: stand-in for python in the codec recipe test: ESPnet's codec trainer is replaced (its statistics
#: run writes the two shape files and is logged), everything else runs in the real interpreter
CODEC_STUB = r"""#!/usr/bin/env bash
set -euo pipefail
if [ "${1:-}" = -m ] && [ "${2:-}" = audio_gen.bin.codec_train ]; then
  out=""; prev=""
  for a in "$@"; do [ "${prev}" = --output_dir ] && out=${a}; prev=${a}; done
  case " $* " in
    *" --collect_stats true "*)
      echo "collect_stats" >> "${STUB_LOG}"
      mkdir -p "${out}/train" "${out}/valid"
      echo "s-u0 8000" > "${out}/train/audio_shape"; echo "s-u0 8000" > "${out}/valid/audio_shape" ;;
    *) echo "train" >> "${STUB_LOG}" ;;
  esac
  exit 0
fi
exec "${REAL_PYTHON}" "$@"
"""


def test_codec_recipe_stage_7_recollects_statistics_when_its_inputs_change(tmp_path):
    """recipes/codec.sh stage 7 kept ESPnet's statistics whenever stats/train/audio_shape existed;
    now a stamp of the dumped lists, their audio, the config and --codec_args decides."""
    import sys

    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    for name in ("asr1", "codec1"):
        _copy_recipe(name, tmp_path / "egs" / "synth_en" / name)
    recipe = tmp_path / "egs" / "synth_en" / "codec1"
    dump = recipe / "dump" / "raw"
    for name in ("train", "dev"):
        _data_dir(dump, name, [0.5], audio_dir=tmp_path / "audio" / name)
        (dump / name / "utt2num_samples").write_text("s-u0 8000\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(CODEC_STUB)
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "calls.txt"
    env = dict(recipe_env(), PATH=f"{bin_dir}{os.pathsep}{recipe_env()['PATH']}", STUB_LOG=str(log),
               REAL_PYTHON=sys.executable)

    def run(*extra: str) -> tuple[list[str], str]:
        log.write_text("")
        r = subprocess.run(["./run.sh", "--stage", "7", "--stop_stage", "7",
                            "--codec_config", "conf/train_codec_smoke.yaml", *extra],
                           cwd=recipe, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return log.read_text().split(), r.stdout + r.stderr

    calls, out = run()
    assert calls == ["collect_stats", "train"] and "rerun: no stamp: first run" in out
    calls, out = run()
    assert calls == ["train"] and "statistics exp/codec_train_codec_smoke/stats: inputs unchanged since " in out
    _wav(tmp_path / "audio" / "train" / "s-u0.wav", 0.7)  # a training recording replaced
    calls, out = run()
    assert calls == ["collect_stats", "train"]
    assert f"1 audio file changed: {tmp_path / 'audio' / 'train' / 's-u0.wav'} (size, mtime)" in out


def test_format_data_names_a_truncated_wav(tmp_path):
    """A wav cut in the middle (an interrupted copy) stops stage 2 with the utterance and file named,
    instead of entering dump/ with the duration of the part that is there."""
    import numpy as np
    import soundfile

    from asr.bin.format_data import main as format_main
    from nar.base.kaldi import DataDirError

    src = tmp_path / "data"
    src.mkdir()
    wav = tmp_path / "a.wav"
    soundfile.write(wav, (0.1 * np.cos(np.arange(16000) * 0.05)).astype(np.float32), 16000, subtype="PCM_16")
    wav.write_bytes(wav.read_bytes()[:20000])
    (src / "wav.scp").write_text(f"u1 {wav}\n")
    (src / "text").write_text("u1 hello\n")
    (src / "utt2spk").write_text("u1 s1\n")
    (src / "spk2utt").write_text("s1 u1\n")
    with pytest.raises(DataDirError) as err:
        format_main(["--src", str(src), "--dst", str(tmp_path / "dump")])
    msg = str(err.value)
    assert "wav.scp: u1:" in msg and str(wav) in msg and "truncated" in msg
