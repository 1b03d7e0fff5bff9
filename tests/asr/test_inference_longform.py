"""asr.Speech2Text on many inputs and on long audio: duration batching keeps the input order
and equals decoding each input alone; windowed long-audio decoding equals decoding the whole
file (a model with a local receptive field) and the parts of a concatenation away from the joins."""

import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from asr import Speech2Text
from asr.audio import as_waveform
from nar.base.kaldi import read_kaldi_map
from asr.longform import Piece, pack_batches, plan_segments, stitch
from asr.task import NARASRTask

RATE = 16000
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def ctc_dir(tiny_recipe):
    return tiny_recipe / "exp/asr_train_tiny_char"


@pytest.fixture(scope="module")
def utterances(tiny_recipe):
    """The tiny recipe's dev and test waveforms (8 utterances of a few seconds)."""
    wavs = []
    for dset in ("dev", "test"):
        scp = read_kaldi_map(str(tiny_recipe / f"dump/raw/{dset}/wav.scp"))
        wavs += [as_waveform(p, RATE, name=k) for k, p in sorted(scp.items())]
    return wavs


@pytest.fixture(scope="module")
def local_ctc_dir(ctc_dir, tmp_path_factory):
    """A CTC model whose encoder has no blocks (conv2d subsampling only): each output frame
    depends on ~0.1 s of audio, so windowed decoding has an exact truth, the whole-file
    decoding. Random weights (seeded), the CTC head scaled so that many tokens come out."""
    config = yaml.safe_load((ctc_dir / "config.yaml").read_text())
    config["model_conf"] = {"interctc_weight": 0.0}
    config["encoder_conf"].update(num_blocks=0, interctc_layer_idx=[], interctc_use_conditioning=False)
    dst = tmp_path_factory.mktemp("local_ctc")
    (dst / "feats_stats.npz").write_bytes((ctc_dir / "feats_stats.npz").read_bytes())
    config["normalize_conf"]["stats_file"] = str(dst / "feats_stats.npz")
    torch.manual_seed(0)
    model = NARASRTask.build_model_from_dict(config)
    state = model.state_dict()
    state["ctc.ctc_lo.weight"] *= 8
    torch.save(state, dst / "model.pth")
    (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return dst


def _grid(s2t):
    return round(s2t.frame_shift * s2t.sample_rate)


@pytest.mark.parametrize("family", ["ctc", "paraformer"])
def test_duration_batching_keeps_order_and_equals_decoding_alone(family, ctc_dir, tiny_paraformer_recipe, utterances):
    model_dir = ctc_dir if family == "ctc" else tiny_paraformer_recipe / "exp/asr_train_tiny_paraformer_char"
    rng = random.Random(0)
    inputs = [w[: rng.randint(len(w) // 3, len(w))] for w in utterances] + list(utterances)
    rng.shuffle(inputs)
    search = {"ctc": "beam", "paraformer": "greedy"}[family]
    s2t = Speech2Text(model_dir, search=search, beam_size=4, batch_seconds=12.0)
    assert len(pack_batches([len(w) / RATE for w in inputs], 12.0)) >= 3
    batched = s2t(inputs)
    assert len(batched) == len(inputs)
    for x, hyp in zip(inputs, batched):
        alone = s2t(x)
        assert alone.token_ids == hyp.token_ids
        assert alone.timestamps == hyp.timestamps
        assert alone.score == pytest.approx(hyp.score, abs=1e-3)
    capped = Speech2Text(model_dir, search=search, beam_size=4, batch_size=2)(inputs)
    assert [h.token_ids for h in capped] == [h.token_ids for h in batched]


def _long_file(utterances, align, seconds=120.0):
    """Utterances padded to the model's frame grid and repeated until ``seconds``; the parts."""
    parts = [torch.nn.functional.pad(w, (0, -len(w) % align)) for w in utterances]
    out = []
    while sum(len(p) for p in out) < seconds * RATE:
        out += parts
    return out


def test_long_audio_equals_whole_file_and_parts_for_a_local_model(local_ctc_dir, utterances):
    windowed = Speech2Text(local_ctc_dir, max_seconds=20.0, overlap_seconds=4.0, batch_seconds=60.0)
    whole = Speech2Text(local_ctc_dir, max_seconds=None, batch_seconds=1e9)
    parts = _long_file(utterances, _grid(windowed))
    long = torch.cat(parts)
    assert len(plan_segments([len(long)], RATE, 20.0, 4.0, _grid(windowed))) >= 7
    hyp, truth = windowed(long), whole(long)
    assert len(truth.token_ids) > 300
    assert hyp.token_ids == truth.token_ids
    assert hyp.timestamps == truth.timestamps  # whole-file time, not window time
    starts = [s for s, _ in hyp.timestamps]
    assert starts == sorted(starts) and all(s <= e for s, e in hyp.timestamps)
    assert 0 <= starts[0] and hyp.timestamps[-1][1] <= len(long) / RATE + 1e-6
    # the parts decoded on their own give the same tokens away from the joins (0.3 s margin)
    offset = 0.0
    for part, alone in zip(parts, whole(parts)):
        lo, hi = offset + 0.3, offset + len(part) / RATE - 0.3

        def inner(ids, stamps, shift):
            return [t for t, (s, e) in zip(ids, stamps) if lo <= s + shift and e + shift <= hi]

        assert inner(alone.token_ids, alone.timestamps, offset) == inner(hyp.token_ids, hyp.timestamps, 0.0)
        offset += len(part) / RATE


@pytest.mark.parametrize("family", ["ctc", "paraformer"])
def test_long_audio_stitches_windows_decoded_in_batches(family, ctc_dir, tiny_paraformer_recipe, utterances):
    """A trained (global-attention) model: the long-audio result is the stitch of its windows
    each decoded alone, in whole-file time, with monotonic timestamps, also when the long input
    shares batches with short ones."""
    model_dir = ctc_dir if family == "ctc" else tiny_paraformer_recipe / "exp/asr_train_tiny_paraformer_char"
    s2t = Speech2Text(model_dir, max_seconds=20.0, overlap_seconds=4.0, batch_seconds=60.0, timestamps=False)
    long = torch.cat(_long_file(utterances, _grid(s2t)))
    segs = plan_segments([len(long)], RATE, 20.0, 4.0, _grid(s2t))
    pieces = []
    for seg in segs:
        best = s2t.decode_batch([long[seg.start : seg.end]], timestamps=True)[0][0]
        pieces.append(Piece(seg, best.token_ids, best.timestamps, best.score))
    ids, stamps, score = stitch(pieces, RATE)
    short = utterances[0]
    hyp, hyp_short = s2t([long, short])
    assert hyp.token_ids == ids and hyp.timestamps == ()  # timestamps only when asked for
    assert hyp.score == pytest.approx(score, abs=1e-2)
    assert hyp_short.token_ids == s2t(short).token_ids and hyp_short.timestamps == ()
    with_times = Speech2Text(model_dir, max_seconds=20.0, overlap_seconds=4.0)(long)
    assert with_times.timestamps == stamps
    starts = [s for s, _ in stamps]
    assert starts == sorted(starts) and all(s <= e for s, e in stamps)
    if stamps:
        assert stamps[-1][1] <= len(long) / RATE + 1e-6


def test_window_and_batch_options_are_checked(ctc_dir):
    with pytest.raises(ValueError, match="batch_seconds"):
        Speech2Text(ctc_dir, batch_seconds=0.0)
    with pytest.raises(ValueError, match="overlap_seconds"):
        Speech2Text(ctc_dir, max_seconds=10.0, overlap_seconds=6.0)
    with pytest.raises(ValueError, match="batch_size"):
        Speech2Text(ctc_dir, batch_size=0)


def test_auto_window_is_the_longest_training_utterance(ctc_dir, local_ctc_dir):
    """The default window comes from the recipe's training shape file (ESPnet's relative path,
    resolved from the model dir); a model dir moved away from its recipe falls back to 30 s."""
    config = yaml.safe_load((ctc_dir / "config.yaml").read_text())
    shape_file = ctc_dir.parent.parent / config["train_shape_file"][0]
    longest = max(int(line.split()[1]) for line in shape_file.read_text().splitlines()) / RATE
    s2t = Speech2Text(ctc_dir)
    assert s2t.max_seconds == pytest.approx(max(4.0, math.ceil(longest * 10) / 10))
    assert s2t.overlap_seconds == pytest.approx(s2t.max_seconds / 4)
    assert str(shape_file) in s2t.window_source
    moved = Speech2Text(local_ctc_dir)
    assert (moved.max_seconds, moved.overlap_seconds) == (30.0, 4.0) and "unknown" in moved.window_source


def test_infer_cli_decodes_long_and_short_files(local_ctc_dir, utterances, tmp_path, capsys):
    import json

    import soundfile

    from asr.bin import infer

    long = torch.cat(_long_file(utterances, 640, seconds=45.0))
    paths = [tmp_path / "long.wav", tmp_path / "short.wav"]
    soundfile.write(paths[0], long.numpy(), RATE)
    soundfile.write(paths[1], utterances[0].numpy(), RATE)
    infer.main(["--model_dir", str(local_ctc_dir), "--json", "--timestamps", "--max_seconds", "20",
                "--num_threads", "1", *map(str, paths)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == list(map(str, paths))
    whole = Speech2Text(local_ctc_dir, max_seconds=None)
    for r, x in zip(rows, (long, utterances[0])):
        truth = whole(x)
        assert r["text"] == truth.text
        assert [tuple(t) for t in r["timestamps"]] == list(truth.timestamps)


def test_infer_cli_json_stdout_is_json_only_in_a_fresh_process(local_ctc_dir, utterances, tmp_path):
    """ESPnet prints a line to stdout when it is first imported; the CLI's stdout must still be
    one JSON object per line (a fresh interpreter, so the import happens inside the CLI)."""
    import json
    import subprocess
    import sys

    import soundfile

    path, bad = tmp_path / "short.wav", tmp_path / "bad.wav"
    soundfile.write(path, utterances[0].numpy(), RATE)
    bad.write_bytes(b"RIFF not really a wav")
    cmd = [sys.executable, "-m", "asr.bin.infer", "--model_dir", str(local_ctc_dir), "--json", "--num_threads", "1"]
    out = subprocess.run(cmd + [str(path)], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(path)]
    assert rows[0]["text"] == Speech2Text(local_ctc_dir)(utterances[0]).text
    # one unreadable file among good ones: reported (stderr and a JSON error entry), the others
    # decoded in input order, exit status 1
    out = subprocess.run(cmd + [str(bad), str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(bad), str(path)]
    assert "cannot read audio" in rows[0]["error"] and rows[1]["text"] == Speech2Text(local_ctc_dir)(utterances[0]).text
    assert f"{bad}: error:" in out.stderr and "1 of 2 files could not be decoded" in out.stderr


def test_joined_pairs_bench_scores_joined_and_apart_decoding(ctc_dir, tiny_recipe, tmp_path):
    """bench/asr_joined_pairs.py: the 'apart' column is the per-utterance decoding scored
    against the joined references, the 'joined' column the whole-pair decoding."""
    import importlib.util
    import json

    from asr.scoring import score

    spec = importlib.util.spec_from_file_location("asr_joined_pairs", BENCH / "asr_joined_pairs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = tiny_recipe / "dump/raw/test"
    out = tmp_path / "pairs.json"
    assert bench.main(["--exp_dir", str(ctc_dir.parent), "--data_dir", str(data), "--utts", "4", "--threads", "1",
                       "--systems", f"ctc={ctc_dir.name}:greedy", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    scp = read_kaldi_map(str(data / "wav.scp"))
    refs = read_kaldi_map(str(data / "text"))
    keys = sorted(scp)[:4]
    s2t = Speech2Text(ctc_dir, max_seconds=None)
    wavs = [as_waveform(scp[k], RATE, name=k) for k in keys]
    apart = [h.text for h in s2t(wavs)]
    joined = [h.text for h in s2t([torch.cat(wavs[i : i + 2]) for i in (0, 2)])]
    ref = {str(i): f"{refs[keys[i]]} {refs[keys[i + 1]]}" for i in (0, 2)}
    want_apart, _ = score(ref, {str(i): f"{apart[i]} {apart[i + 1]}" for i in (0, 2)})
    want_joined, _ = score(ref, {"0": joined[0], "2": joined[1]})
    assert row["pairs"] == 2
    assert row["apart_wer"] == pytest.approx(100 * want_apart.wer, abs=0.01)
    assert row["joined_wer"] == pytest.approx(100 * want_joined.wer, abs=0.01)
    assert (tmp_path / "pairs.md").read_text().startswith("| system | pairs |")
