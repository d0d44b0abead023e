"""The README's SLURM job array, run on a real one-node SLURM (Debian's slurm-wlm and munge) that
this test starts on localhost and stops after. Needs root and the packages (.ci/run installs
them); without them the test is skipped with the reason, except under CI=true, where it fails."""

import collections
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, load_run

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


def readme_sbatch_script() -> str:
    """The first bash block of the README's "Many machines" section that is an sbatch script."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("\n## Many machines\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return next(b for b in blocks if b.startswith("#!/bin/bash") and "#SBATCH" in b)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable() -> str:
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM is not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd and munged here needs root"
    return ""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM for this host, all its files under a temporary folder; yields the
    environment (SLURM_CONF, the test's python first on PATH) for its client commands."""
    reason = unavailable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the SLURM test: {reason}")
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = d / "munge.socket"
    subprocess.run(
        [
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={munge_socket}",
            f"--pid-file={d}/munged.pid",
            f"--log-file={d}/log/munged.log",
            f"--seed-file={d}/munged.seed",
        ],
        check=True,
    )
    host = socket.gethostname()
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    (d / "slurm.conf").write_text(f"""ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb * 3 // 4}
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(d / "slurm.conf"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    for key in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del env[key]  # a test run inside a SLURM job must not hand its job's settings on
    started = time.monotonic()
    try:
        subprocess.run(["slurmctld"], env=env, check=True)
        subprocess.run(["slurmd"], env=env, check=True)
        while (
            "idle"
            not in subprocess.run(
                ["sinfo", "-h", "-o", "%T"],
                env=env,
                capture_output=True,
                text=True,
            ).stdout.split()  # "idle", not "idle*" (not responding)
        ):
            if time.monotonic() - started > 60:
                logs = "".join(p.read_text()[-2000:] for p in sorted((d / "log").iterdir()))
                pytest.fail(f"the SLURM node did not come up within 60 s:\n{logs}")
            time.sleep(0.5)
        print(f"SLURM up in {time.monotonic() - started:.1f} s")
        yield env
    finally:  # stop what this test started: slurmctld's shutdown, then SIGTERM, then SIGKILL
        pids = [int(f.read_text()) for f in d.glob("*.pid") if f.read_text().strip().isdigit()]
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        for signal in (None, 15, 9):
            for pid in pids if signal else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal)
            deadline = time.monotonic() + 5
            while (pids := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
                time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_job_array_runs_every_seed_once_and_plot_draws_them(slurm, tmp_path):
    """4 envs x 2 blocks of 2 seeds, 1,100 steps each: 8 array tasks, 16 run folders."""
    (tmp_path / "grid.sh").write_text(readme_sbatch_script())
    shutil.copy(os.path.join(ROOT, "stream_ac_continuous.py"), tmp_path)
    env = dict(slurm, K="2", BLOCKS="2", TOTAL_STEPS="1100")
    submit = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--array=0-7", "grid.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    outputs = "".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("slurm-*.out")))
    assert submit.returncode == 0, submit.stderr + outputs
    job = submit.stdout.strip().split(";")[0]
    tasks = subprocess.run(
        ["scontrol", "show", "job", "-o", job],
        env=slurm,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    states = sorted(
        re.search(r"ArrayTaskId=(\d+) .*JobState=(\S+) .*ExitCode=(\S+)", t).groups() for t in tasks
    )
    assert states == [(str(i), "COMPLETED", "0:0") for i in range(8)], outputs
    assert len(list(tmp_path.glob("slurm-*.out"))) == 8

    folders = collections.Counter(p.name.rsplit("__", 1)[0] for p in (tmp_path / "runs").iterdir())
    expected = {
        f"{e}__stream_ac_continuous__{s}"
        for e in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
        for s in range(4)
    }
    assert set(folders) == expected and set(folders.values()) == {1}, folders

    draw = subprocess.run(
        [sys.executable, os.path.join(ROOT, "plot.py"), "--runs-dir", "runs", "--out", "grid.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert draw.returncode == 0, draw.stderr
    assert "16 runs, 4 envs" in draw.stdout
    assert (tmp_path / "grid.png").stat().st_size > 10_000


def job_state(job: str, env) -> dict:
    """JobState, ExitCode and Restarts of one (array) job, from scontrol."""
    line = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"\b(JobState|ExitCode|Restarts)=(\S+)", line))


def test_a_requeued_task_resumes_where_it_stopped_and_ends_with_exit_code_0(slurm, tmp_path):
    """One task of 2 seeds, 40,000 steps: `scontrol requeue` it while it runs, as preemption would;
    it starts again with the same command, resumes, and finishes in the same two run folders."""
    (tmp_path / "grid.sh").write_text(readme_sbatch_script())
    shutil.copy(os.path.join(ROOT, "stream_ac_continuous.py"), tmp_path)
    env = dict(slurm, K="2", BLOCKS="1", TOTAL_STEPS="40000")
    submit = subprocess.run(
        ["sbatch", "--parsable", "--array=0", "grid.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0] + "_0"
    started = time.monotonic()
    while len(list(tmp_path.glob("runs/*"))) < 2:  # it runs: its agents have made their folders
        assert time.monotonic() - started < 300, job_state(job, slurm)
        time.sleep(1)
    time.sleep(15)  # some thousands of steps
    requeue = subprocess.run(
        ["scontrol", "requeue", job], env=slurm, capture_output=True, text=True
    )
    assert requeue.returncode == 0, requeue.stderr
    while job_state(job, slurm).get("JobState") not in ("COMPLETED", "FAILED", "CANCELLED"):
        assert time.monotonic() - started < 900, job_state(job, slurm)
        time.sleep(2)
    output = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    print(output)  # both starts: the save at SIGTERM, then the resumed run to its end
    assert job_state(job, slurm) == {"JobState": "COMPLETED", "Restarts": "1", "ExitCode": "0:0"}
    stop = int(re.search(r"error: interrupted at global_step=(\d+)", output).group(1))
    assert 0 < stop < 40_000 and "global_step=40000 reached" in output
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name.split("__")[2] for run in runs] == ["0", "1"]  # one folder per seed
    for run in runs:
        scalars, _ = load_run(str(run))
        steps = [step for step, _ in scalars["charts/SPS"]]
        assert steps == sorted(set(steps)) and steps[-1] == 40_000, steps
        assert any(step > stop for step, _ in scalars["charts/episodic_return"])
