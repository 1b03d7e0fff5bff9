"""Job-split decoding (issue #33): nar.base.jobs (local backend, the Slurm batch script, reruns of
failed jobs only), asr.bin.decode --split/--merge, and recipes/asr.sh --inference_nj."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.bin.decode import split_keys
from nar.base.jobs import JobsFailed, run_jobs, slurm_script
from nar.base.kaldi import read_kaldi_map
from tests.conftest import ROOT, _copy_recipe, recipe_env

# a job: appends its number to runs.txt, writes out.JOB, and fails while fail.JOB exists
JOB = ("import sys, pathlib; d = pathlib.Path(sys.argv[1]); j = sys.argv[2]; "
       "open(d / 'runs.txt', 'a').write(j + '\\n'); (d / f'out.{j}').write_text(j); "
       "print('working on', j); sys.exit(3 if (d / f'fail.{j}').exists() else 0)")


def _runs(d):
    return sorted(int(x) for x in (d / "runs.txt").read_text().split())


def test_local_jobs_a_failure_is_named_and_a_rerun_redoes_only_it(tmp_path):
    (tmp_path / "fail.2").touch()
    cmd = [sys.executable, "-c", JOB, str(tmp_path), "JOB"]
    log = str(tmp_path / "logs" / "job.JOB.log")
    with pytest.raises(JobsFailed) as err:
        run_jobs(cmd, 3, log)
    msg = str(err.value)
    assert "1 of 3 jobs failed" in msg and "job 2 (exit status 3)" in msg and "job.2.log" in msg
    assert "working on 2" in msg  # the log's tail
    assert _runs(tmp_path) == [1, 2, 3]
    (tmp_path / "fail.2").unlink()
    assert run_jobs(cmd, 3, log) == [2]  # only the failed job
    assert _runs(tmp_path) == [1, 2, 2, 3]
    assert run_jobs(cmd, 3, log) == []  # all done with this command
    # another command (e.g. other decode options) redoes every job
    assert run_jobs(cmd + ["--changed"], 3, log) == [1, 2, 3]


def test_local_jobs_respect_max_parallel_and_validate_arguments(tmp_path):
    cmd = [sys.executable, "-c", JOB, str(tmp_path), "JOB"]
    assert run_jobs(cmd, 4, str(tmp_path / "l.JOB.log"), max_parallel=1) == [1, 2, 3, 4]
    assert [(tmp_path / f"out.{j}").read_text() for j in (1, 2, 3, 4)] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="log must contain JOB"):
        run_jobs(cmd, 2, str(tmp_path / "one.log"))
    with pytest.raises(ValueError, match="must contain JOB"):
        run_jobs(["true"], 2, str(tmp_path / "x.JOB.log"))
    with pytest.raises(ValueError, match="backend"):
        run_jobs(cmd, 2, str(tmp_path / "x.JOB.log"), backend="pbs")


def test_slurm_batch_script_runs_the_array_task_it_is_given(tmp_path):
    """The script sbatch would get, run as Slurm runs it (SLURM_ARRAY_TASK_ID set), without Slurm."""
    cmds = {j: [sys.executable, "-c", JOB, str(tmp_path), str(j)] for j in (1, 3)}
    logs = {j: tmp_path / f"d.{j}.log" for j in cmds}
    markers = {j: tmp_path / f"d.{j}.log.done" for j in cmds}
    script = tmp_path / "batch.sh"
    script.write_text(slurm_script([1, 3], cmds, logs, markers, {j: " ".join(c) for j, c in cmds.items()}))
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="3")
    assert subprocess.run(["bash", str(script)], env=env).returncode == 0
    assert (tmp_path / "out.3").read_text() == "3" and markers[3].exists() and not markers[1].exists()
    assert "working on 3" in logs[3].read_text() and "exit status 0" in logs[3].read_text()
    (tmp_path / "fail.1").touch()
    env["SLURM_ARRAY_TASK_ID"] = "1"
    assert subprocess.run(["bash", str(script)], env=env).returncode == 3
    assert not markers[1].exists() and "exit status 3" in logs[1].read_text()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="sbatch present: the real-Slurm test applies")
def test_slurm_backend_without_slurm_says_so(tmp_path):
    with pytest.raises(JobsFailed, match="sbatch is not on PATH"):
        run_jobs(["echo", "JOB"], 2, str(tmp_path / "s.JOB.log"), backend="slurm")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=40), st.integers(1, 6), st.booleans())
def test_split_keys_partitions_contiguously_keeping_speakers_whole(speakers, parts, by_speaker):
    keys = [f"u{i:03d}" for i in range(len(speakers))]
    # utterances of a speaker adjacent, as in a sorted Kaldi data dir
    spk = {k: f"s{s}" for k, s in zip(keys, sorted(speakers))}
    out = split_keys(keys, spk if by_speaker else None, parts)
    assert len(out) == parts
    assert [k for part in out for k in part] == keys  # a partition, in order
    owner = {k: i for i, part in enumerate(out) for k in part}
    if by_speaker:
        for s in set(spk.values()):
            assert len({owner[k] for k in keys if spk[k] == s}) == 1
    else:  # no speakers: sizes differ by at most one
        sizes = [len(p) for p in out]
        assert max(sizes) - min(sizes) <= 1


def _recipe_beside(tiny_recipe, tmp_path, link_model: bool = True):
    """A copy of the recipe whose data, dumps, statistics and LMs are the tiny recipe's (symlinks)
    and whose exp/asr_train_tiny_char holds links to the tiny model's files (decode outputs then
    go into the copy), or is absent (``link_model=False``: to be trained)."""
    recipe = tmp_path / "egs" / "synth_en" / "asr1"
    recipe.parent.mkdir(parents=True)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    _copy_recipe("asr1", recipe)
    (recipe / "conf" / "train_tiny.yaml").write_text((tiny_recipe / "conf" / "train_tiny.yaml").read_text())
    for d in ("data", "dump"):
        (recipe / d).symlink_to(tiny_recipe / d)
    exp = recipe / "exp"
    exp.mkdir()
    for name in ("asr_stats_char", "ngram_char", "ngram_word"):
        (exp / name).symlink_to(tiny_recipe / "exp" / name)
    if link_model:
        (exp / "asr_train_tiny_char").mkdir()
        for f in (tiny_recipe / "exp" / "asr_train_tiny_char").iterdir():
            if f.suffix in (".pth", ".yaml", ".npz"):
                (exp / "asr_train_tiny_char" / f.name).symlink_to(f.resolve())
    return recipe


def test_recipe_stage6_in_jobs_equals_one_process(tiny_recipe, tmp_path):
    """run.sh --inference_nj 2 (local backend) decodes and scores the test set exactly as the tiny
    recipe's single-process stage 6 did; a job that fails is named and only it reruns."""
    recipe = _recipe_beside(tiny_recipe, tmp_path)
    exp = recipe / "exp"
    model = tiny_recipe / "exp" / "asr_train_tiny_char"
    cmd = ["./run.sh", "--asr_config", "conf/train_tiny.yaml", "--stage", "6", "--stop_stage", "7",
           "--test_sets", "test", "--inference_configs", "conf/decode_greedy.yaml conf/decode_beam.yaml",
           "--ngram_order", "3", "--inference_batch_size", "3", "--num_threads", "1", "--inference_nj", "2"]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for conf in ("decode_greedy", "decode_beam"):
        got = read_kaldi_map(str(exp / "asr_train_tiny_char" / conf / "test" / "text"), allow_empty_value=True)
        want = read_kaldi_map(str(model / conf / "test" / "text"), allow_empty_value=True)
        assert list(got) == list(want) and got == want, conf
        assert (exp / "asr_train_tiny_char" / conf / "test" / "scoring" / "scores.json").is_file()
    logs = exp / "asr_train_tiny_char" / "decode_logs"
    assert sorted(p.name for p in logs.glob("decode.*.log")) == ["decode.1.log", "decode.2.log"]
    # a job whose output dir cannot be written fails: named with its log; the rerun redoes only it
    cmd[cmd.index("--stop_stage") + 1] = "6"
    (logs / "decode.2.log.done").unlink()
    blocked = exp / "asr_train_tiny_char" / "decode_greedy" / "test" / "split2" / "2"
    shutil.rmtree(blocked)
    blocked.write_text("not a directory")
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "1 of 2 jobs failed" in r.stderr and "decode.2.log" in r.stderr
    blocked.unlink()
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "1 of 2 already done" in r.stderr, r.stderr[-2000:]


def test_recipe_trains_with_two_cpu_processes(tiny_recipe, tmp_path):
    """run.sh --train_procs 2: ESPnet's trainer under torchrun, DDP over gloo on the CPU (the path
    multi-GPU and multi-node runs take with NCCL): both ranks join, rank 0 writes the model."""
    recipe = _recipe_beside(tiny_recipe, tmp_path, link_model=False)
    cmd = ["./run.sh", "--asr_config", "conf/train_tiny.yaml", "--stage", "5", "--stop_stage", "5",
           "--num_threads", "1", "--train_procs", "2", "--record_model", "false"]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "launcher: torchrun --standalone --nproc_per_node 2" in r.stdout + r.stderr
    exp = recipe / "exp" / "asr_train_tiny_char"
    log = (exp / "train.log").read_text()
    assert "0/2] " in log and "2epoch results" in log  # rank 0 of a world of 2 logs the epochs
    state = __import__("torch").load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert state["reporter"]["epoch"] == 2
    assert (exp / "valid.loss.ave.pth").exists()
