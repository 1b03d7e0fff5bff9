"""nar.base.jobs against a real Slurm: a one-node cluster (Debian's slurm-wlm and munge, installed
by tools/install_debian.sh) started on localhost by the fixture, in a temporary directory with
its own ports, munge socket and state. Skipped, with the reason, only where the daemons cannot
run (not root, binaries missing, or they do not come up)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nar.base.jobs import JobsFailed, run_jobs

JOB = ("import sys, pathlib; d = pathlib.Path(sys.argv[1]); j = sys.argv[2]; "
       "open(d / 'runs.txt', 'a').write(j + '\\n'); print('working on', j); "
       "sys.exit(3 if (d / f'fail.{j}').exists() else 0)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip(reason: str):
    print(f"test_slurm: skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    tools = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
    missing = [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        _skip(f"{' '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        _skip("slurmd must run as root to start jobs; run the tests as root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = d / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=nartest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/ctld.pid
SlurmdPidFile={d}/d.pid
SlurmctldLogFile={d}/log/ctld.log
SlurmdLogFile={d}/log/d.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"/usr/sbin:{os.environ.get('PATH', '')}")
    started = []
    try:
        for cmd in (["munged", f"--key-file={key}", f"--socket={sock}", f"--pid-file={d}/munge/munged.pid",
                     f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed", "--force"],
                    ["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf)]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                _skip(f"{cmd[0]} did not start ({r.returncode}): {r.stderr.strip()[-300:]}")
            started.append(cmd[0])
        deadline = time.time() + 30
        state = ""
        while time.time() < deadline:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=10)
            state = r.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            log = (d / "log" / "d.log").read_text()[-500:] if (d / "log" / "d.log").exists() else ""
            _skip(f"the Slurm node did not become idle in 30 s (state {state!r}): {log}")
        try:  # a job must run at all (a node that accepts no job would hang sbatch --wait)
            r = subprocess.run(["sbatch", "--wait", "--parsable", f"--output={d}/probe.out", "--wrap", "true"],
                               env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
            _skip("the one-node Slurm started but ran no job within 60 s")
        if r.returncode != 0:
            _skip(f"the one-node Slurm refused a trivial job ({r.returncode}): {r.stderr.strip()[-300:]}")
        yield env
    finally:
        for pid_file in (d / "d.pid", d / "ctld.pid", d / "munge" / "munged.pid"):
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass


def test_jobs_through_a_real_slurm_fail_named_and_rerun_only_the_failed(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    monkeypatch.setenv("PATH", slurm["PATH"])
    (tmp_path / "fail.2").touch()
    cmd = [sys.executable, "-c", JOB, str(tmp_path), "JOB"]
    log = str(tmp_path / "logs" / "job.JOB.log")
    with pytest.raises(JobsFailed) as err:
        run_jobs(cmd, 3, log, backend="slurm", slurm_opts=["--time=5"])
    msg = str(err.value)
    assert "1 of 3 jobs failed" in msg and "job 2 (exit status 3)" in msg and "job.2.log" in msg and "working on 2" in msg
    assert sorted((tmp_path / "runs.txt").read_text().split()) == ["1", "2", "3"]
    (tmp_path / "fail.2").unlink()
    assert run_jobs(cmd, 3, log, backend="slurm", max_parallel=1) == [2]
    assert sorted((tmp_path / "runs.txt").read_text().split()) == ["1", "2", "2", "3"]
    assert "on " in (tmp_path / "logs" / "job.2.log").read_text()  # the task's host, written by the batch script
