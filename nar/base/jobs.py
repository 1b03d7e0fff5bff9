"""Job-split work as ESPnet/Kaldi users know it: one command run as N jobs through a backend.

    python -m nar.base.jobs --nj 4 --backend local --log exp/x/logdir/decode.JOB.log \\
        -- python -m asr.bin.decode ... --split JOB/4

``JOB`` in the command and in ``--log`` becomes the job number (1..N), as in Kaldi's ``run.pl``
and ``slurm.pl``. Backends:

- ``local``: the jobs run as processes on this machine, at most ``--max_parallel`` at a time
  (default: all N);
- ``slurm``: one ``sbatch --wait --array`` submission (``--slurm_opts`` adds partition, GPUs,
  memory, time, e.g. ``"-p gpu --gres=gpu:1 --mem=16G"``); each array task runs its job.

A job that succeeds leaves a marker ``<log>.done`` holding its command line. A rerun skips the
jobs whose marker holds the same command and redoes the others, so after a failure only the
failed splits run again; a changed command (other options, data, model) redoes every job. A
failure stops with :class:`JobsFailed`, naming each failed job, its exit status and its log, with
the log's last lines.

Part of the base layer (:mod:`nar.base`): the standard library only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["BACKENDS", "JobsFailed", "run_jobs"]

BACKENDS = ("local", "slurm")


class JobsFailed(RuntimeError):
    """Some jobs of a split run failed; the message names them and their logs."""


def _subst(items: Sequence[str], job: int) -> list[str]:
    return [s.replace("JOB", str(job)) for s in items]


def _marker(log: Path) -> Path:
    return log.with_name(log.name + ".done")


def _done(log: Path, cmdline: str) -> bool:
    marker = _marker(log)
    try:
        return marker.read_text(encoding="utf-8") == cmdline + "\n"
    except OSError:
        return False


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return "    (no log written)"
    return "\n".join("    " + line for line in text[-lines:])


def _run_local(todo: list[int], cmds: dict[int, list[str]], logs: dict[int, Path],
               max_parallel: int) -> dict[int, int]:
    status: dict[int, int] = {}
    running: dict[int, tuple[subprocess.Popen, object]] = {}
    queue = list(todo)
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                job = queue.pop(0)
                out = open(logs[job], "w", encoding="utf-8")
                out.write(f"# {shlex.join(cmds[job])}\n# started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                out.flush()
                running[job] = (subprocess.Popen(cmds[job], stdout=out, stderr=subprocess.STDOUT), out)
            for job, (proc, out) in list(running.items()):
                if proc.poll() is not None:
                    out.write(f"# ended {time.strftime('%Y-%m-%d %H:%M:%S')} with exit status {proc.returncode}\n")
                    out.close()
                    status[job] = proc.returncode
                    del running[job]
            time.sleep(0.05)
    finally:  # interrupted: stop the jobs started here
        for proc, out in running.values():
            proc.kill()
            out.close()
    return status


def slurm_script(todo: list[int], cmds: dict[int, list[str]], logs: dict[int, Path], markers: dict[int, Path],
                 cmdlines: dict[int, str]) -> str:
    """The batch script of one ``sbatch --array`` submission: array task J runs job J, writes its
    log and, on success, its marker."""
    lines = ["#!/usr/bin/env bash", "set -u", 'case "${SLURM_ARRAY_TASK_ID}" in']
    for job in todo:
        lines.append(f"  {job})")
        lines.append(f"    {{ echo {shlex.quote('# ' + shlex.join(cmds[job]))}; "
                     f"echo \"# started $(date '+%Y-%m-%d %H:%M:%S') on $(hostname)\"; }} > {shlex.quote(str(logs[job]))}")
        lines.append(f"    {shlex.join(cmds[job])} >> {shlex.quote(str(logs[job]))} 2>&1")
        lines.append("    rc=$?")
        lines.append(f"    echo \"# ended $(date '+%Y-%m-%d %H:%M:%S') with exit status $rc\" >> {shlex.quote(str(logs[job]))}")
        lines.append(f"    [ $rc -eq 0 ] && printf '%s\\n' {shlex.quote(cmdlines[job])} > {shlex.quote(str(markers[job]))}")
        lines.append("    exit $rc ;;")
    lines += ["  *) echo \"no job ${SLURM_ARRAY_TASK_ID}\" >&2; exit 2 ;;", "esac", ""]
    return "\n".join(lines)


def _run_slurm(todo: list[int], cmds: dict[int, list[str]], logs: dict[int, Path], cmdlines: dict[int, str],
               max_parallel: int, slurm_opts: Sequence[str]) -> dict[int, int]:
    if shutil.which("sbatch") is None:
        raise JobsFailed("backend slurm: sbatch is not on PATH (is this a Slurm login node?); use --backend local")
    markers = {job: _marker(logs[job]) for job in todo}
    script_dir = logs[todo[0]].parent
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="jobs.", dir=script_dir, delete=False) as f:
        f.write(slurm_script(todo, cmds, logs, markers, cmdlines))
        script = f.name
    array = ",".join(str(j) for j in todo) + (f"%{max_parallel}" if max_parallel < len(todo) else "")
    sbatch = ["sbatch", "--wait", "--parsable", f"--array={array}", f"--output={script_dir}/slurm-%A_%a.out",
              *slurm_opts, script]
    start = time.time()
    proc = subprocess.run(sbatch, capture_output=True, text=True)
    # --wait: sbatch returns when every task has ended, non-zero if any failed; the markers say
    # which. No task log written since the submission: sbatch itself failed.
    started = [j for j in todo if logs[j].exists() and logs[j].stat().st_mtime >= start - 1]
    if proc.returncode != 0 and not started:
        raise JobsFailed(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}\n  command: {shlex.join(sbatch)}"
                         f"\n  script: {script}")
    os.unlink(script)
    return {job: 0 if _done(logs[job], cmdlines[job]) else _logged_status(logs[job]) for job in todo}


def _logged_status(log: Path) -> int:
    """The exit status a job's batch script logged (-1: it never got to log one, e.g. cancelled)."""
    try:
        last = log.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()[-1]
    except (OSError, IndexError):
        return -1
    status = last.rsplit("with exit status ", 1)
    return int(status[1]) if len(status) == 2 and status[1].strip().isdigit() else -1


def run_jobs(command: Sequence[str], num_jobs: int, log: str, backend: str = "local",
             max_parallel: Optional[int] = None, slurm_opts: Sequence[str] = ()) -> list[int]:
    """Run ``command`` (``JOB`` replaced by 1..``num_jobs``) as ``num_jobs`` jobs.

    Args:
        command: the command line (a list), containing ``JOB`` where the job number goes.
        num_jobs: N >= 1.
        log: the log path of a job, containing ``JOB``; its directory is created.
        backend: ``local`` or ``slurm`` (see the module docstring).
        max_parallel: at most this many jobs at a time (default: all).
        slurm_opts: extra ``sbatch`` options (backend slurm).

    Returns:
        the jobs that ran (those not already done with the same command).

    Raises:
        JobsFailed: a job exited non-zero (every failed job is named with its log), or the
            backend cannot run.
        ValueError: bad arguments.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(num_jobs, bool) or not isinstance(num_jobs, int) or num_jobs < 1:
        raise ValueError(f"num_jobs must be an integer >= 1, got {num_jobs!r}")
    if "JOB" not in log:
        raise ValueError(f"log must contain JOB (one log per job), got {log!r}")
    if num_jobs > 1 and not any("JOB" in c for c in command):
        raise ValueError(f"the command must contain JOB (each job must do its own part): {shlex.join(command)}")
    max_parallel = num_jobs if max_parallel is None else max(1, int(max_parallel))
    cmds = {j: _subst(command, j) for j in range(1, num_jobs + 1)}
    cmdlines = {j: shlex.join(c) for j, c in cmds.items()}
    logs = {j: Path(log.replace("JOB", str(j))) for j in cmds}
    for path in logs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    todo = [j for j in cmds if not _done(logs[j], cmdlines[j])]
    skipped = num_jobs - len(todo)
    if skipped:
        print(f"jobs: {skipped} of {num_jobs} already done with this command (their .done markers), "
              f"running {len(todo)}: {' '.join(map(str, todo)) or 'none'}", file=sys.stderr)
    if not todo:
        return []
    for j in todo:
        _marker(logs[j]).unlink(missing_ok=True)
    if backend == "local":
        status = _run_local(todo, cmds, logs, max_parallel)
        for j, rc in status.items():
            if rc == 0:
                _marker(logs[j]).write_text(cmdlines[j] + "\n", encoding="utf-8")
    else:
        status = _run_slurm(todo, cmds, logs, cmdlines, max_parallel, slurm_opts)
    failed = sorted(j for j, rc in status.items() if rc != 0)
    if failed:
        detail = "\n".join(f"  job {j} (exit status {status[j]}): {logs[j]}\n{_tail(logs[j])}" for j in failed)
        raise JobsFailed(f"{len(failed)} of {num_jobs} jobs failed; a rerun redoes only those:\n{detail}")
    return todo


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m nar.base.jobs --nj N --log DIR/name.JOB.log [--backend local|slurm] "
              "[--max_parallel P] [--slurm_opts OPTS] -- COMMAND ... JOB ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m nar.base.jobs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, required=True, help="number of jobs")
    p.add_argument("--log", required=True, help="log file of a job, with JOB")
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--max_parallel", type=int, default=None, help="jobs at a time (default: all)")
    p.add_argument("--slurm_opts", default="", help="extra sbatch options, one string")
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        p.error("no command after --")
    try:
        ran = run_jobs(command, args.nj, args.log, args.backend, args.max_parallel, shlex.split(args.slurm_opts))
    except (JobsFailed, ValueError) as err:
        print(f"nar.base.jobs: error: {err}", file=sys.stderr)
        return 1
    print(f"jobs: {len(ran)} of {args.nj} ran and succeeded ({args.backend})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
