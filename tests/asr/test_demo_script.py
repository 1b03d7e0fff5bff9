"""demo.sh stage 2 schedules the fine-tunings: a stand-in run.sh records its calls.

The stand-in logs each call's start and end time and its options; the real recipe is tested by
the tiny-tree recipe tests. Checks: every family is fine-tuned once from the CTC checkpoint with
its own tag, at most --finetune_jobs at once, one torch thread each when concurrent, the
recipe's threads when sequential, and a failing fine-tuning makes the demo exit non-zero with
its log's end on stderr while the others still finish.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
# stand-in for run.sh: record the call, take a while, fail for the config named in $FAIL_CONFIG
args="$*"
name=$(echo "$args" | sed -n 's/.*--asr_config conf\\/train_\\([a-z0-9_]*\\)\\.yaml.*/\\1/p')
echo "start ${name} $(date +%s.%N) ${args}" >> calls.txt
sleep 0.6
echo "end ${name} $(date +%s.%N)" >> calls.txt
if [ "${name}" = "${FAIL_CONFIG:-}" ]; then echo "boom in ${name}"; exit 3; fi
"""


@pytest.fixture
def demo_dir(tmp_path):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    recipe = tmp_path / "egs" / "synth_en" / "asr1"
    recipe.mkdir(parents=True)
    shutil.copy(ROOT / "egs/synth_en/asr1/demo.sh", recipe / "demo.sh")
    (recipe / "run.sh").write_text(STUB)
    (recipe / "run.sh").chmod(0o755)
    ckpt = recipe / "exp" / "asr_train_ctc_sp_char" / "valid.loss.ave.pth"  # the default --ctc_config
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    return recipe


def _run(recipe, *args, fail=""):
    env = dict(os.environ, FAIL_CONFIG=fail)
    return subprocess.run(["bash", "demo.sh", "--stage", "2", "--stop_stage", "2", *args],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=60)


def _calls(recipe):
    starts, ends = {}, {}
    for line in (recipe / "calls.txt").read_text().splitlines():
        kind, name, t, *rest = line.split(" ", 3)
        (starts if kind == "start" else ends)[name] = (float(t), rest[0] if rest else "")
    return starts, ends


def _max_concurrent(starts, ends):
    events = sorted([(t, 1) for t, _ in starts.values()] + [(t, -1) for t, _ in ends.values()],
                    key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("jobs", [3, 2])
def test_concurrent_finetunings(demo_dir, jobs):
    proc = _run(demo_dir, "--finetune_jobs", str(jobs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts, ends = _calls(demo_dir)
    assert sorted(starts) == sorted(ends) == ["aed", "cassnat", "paraformer_ctcfire"]
    assert _max_concurrent(starts, ends) == jobs
    for name, (_, args) in starts.items():
        assert f"--asr_tag ft_{name}_char" in args
        assert "--init_param exp/asr_train_ctc_sp_char/valid.loss.ave.pth:encoder:encoder" in args
        assert "--feats_normalize utterance_mvn" in args  # the CTC encoder's normalisation
        assert args.rstrip().endswith("--num_threads 1")
        assert (demo_dir / "exp" / f"demo_ft_{name}.log").exists()


def test_sequential_finetunings_keep_the_recipe_threads(demo_dir):
    proc = _run(demo_dir, "--finetune_jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts, ends = _calls(demo_dir)
    assert _max_concurrent(starts, ends) == 1
    assert all("--num_threads" not in args for _, args in starts.values())


def test_a_failed_finetuning_fails_the_demo_and_shows_its_log(demo_dir):
    proc = _run(demo_dir, fail="cassnat")
    assert proc.returncode == 1
    assert "boom in cassnat" in proc.stderr
    assert "fine-tuning failed for: cassnat" in proc.stdout
    starts, ends = _calls(demo_dir)
    assert sorted(ends) == ["aed", "cassnat", "paraformer_ctcfire"]  # the others still finished
