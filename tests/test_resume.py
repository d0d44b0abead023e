"""--resume, --save-every and the save at a stop (Ctrl-C, SIGTERM), as a user runs them."""

import glob
import os
import re
import signal
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, read_all_scalars, record_run, run_script
from test_conventions import RUNS

ENV = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")


def read_model(path):
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def stream_q(*flags):
    """The command line of stream_q.py with --save-model --resume --debug and flags."""
    return [
        sys.executable,
        os.path.join(ROOT, "stream_q.py"),
        *flags,
        "--save-model",
        "--resume",
        "--debug",
    ]


def start_until(command, cwd, step):
    """command started in cwd, its stdout read until an agent's episode ends past step."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    for line in process.stdout:
        if line.startswith("seed=") and int(line.split("global_step=")[1].split(",")[0]) > step:
            return process
    raise AssertionError(process.communicate()[1])


@pytest.mark.parametrize("script,env,steps", RUNS)
def test_a_resumed_agent_starts_from_the_whole_state_it_saved(script, env, steps, tmp_path):
    flags = ["--env", env, "--total-steps", str(steps), "--save-model"]
    assert run_script(script, *flags, cwd=tmp_path).returncode == 0
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "*.cleanrl_model"))
    saved = read_model(path)
    # the same command with --resume and twice the steps: start() is the first jitted call
    flags[3] = str(2 * steps)
    started = record_run(script, *flags, "--resume", cwd=tmp_path)["started"][0]
    assert sorted(started) == sorted(saved)
    for name in saved:  # what it has learned, leaf for leaf
        if name.endswith(("params", "reward_stats", "reward_trace", "global_step", "key")):
            jax.tree.map(np.testing.assert_array_equal, started[name], saved[name])
    for name in (n for n in saved if n.endswith("opt_state")):  # a new episode: z = 0
        assert not any(np.any(z) for z in jax.tree.leaves(started[name]["eligibility_trace"]))
        assert any(np.any(z) for z in jax.tree.leaves(saved[name]["eligibility_trace"]))
    assert int(started.get("episode_step", 0)) == 0
    # the normaliser goes on from its saved count, with the new episode's first observation
    assert started["obs_stats"]["count"] == saved["obs_stats"]["count"] + 1
    assert len(glob.glob(str(tmp_path / "runs" / "*"))) == 1  # the same run folder


def test_sigterm_saves_and_the_same_command_goes_on_in_the_same_folders(tmp_path):
    command = stream_q("--num-seeds", "3", "--total-steps", "40000")
    process = start_until(command, tmp_path, 20_000)
    process.send_signal(signal.SIGTERM)  # as SLURM does at a time limit, scancel or preemption
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr
    stop = int(re.search(r"error: interrupted at global_step=(\d+)", stderr).group(1))
    models = sorted(glob.glob(str(tmp_path / "runs" / "*" / "stream_q.cleanrl_model")))
    assert len(models) == 3 and all(int(read_model(m)["global_step"]) == stop for m in models)

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stderr
    assert "global_step=40000 reached" in again.stdout
    assert len(glob.glob(str(tmp_path / "runs" / "*"))) == 3  # no new folders
    fresh, before, resumed = [], [], []
    for seed, scalars in sorted(read_all_scalars(tmp_path).items()):
        steps = [step for step, _ in scalars["charts/episodic_return"]]
        assert steps == sorted(set(steps)), seed  # the curve goes on, never back
        assert scalars["charts/SPS"][-1][0] == 40_000
        returns = [value for _, value in scalars["charts/episodic_return"]]
        after = [value for step, value in scalars["charts/episodic_return"] if step > stop]
        fresh.append(np.mean(returns[:5]))
        before.append(np.mean([v for t, v in scalars["charts/episodic_return"] if t <= stop][-5:]))
        resumed.append(np.mean(after[:5]))
    # a resumed agent plays as the trained agent it was, far above a new one, over three seeds
    print(
        f"mean of 5 episodes: the first {fresh}, the last before {stop} {before}, the first after"
    )
    print(resumed)
    assert np.median(resumed) > 5 * np.median(fresh), (fresh, resumed)


def test_a_run_that_reached_total_steps_says_so_and_does_nothing(tmp_path):
    flags = ["--total-steps", "500", "--save-model", "--resume"]
    assert run_script("stream_q.py", *flags, cwd=tmp_path).returncode == 0
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "stream_q.cleanrl_model"))
    before = open(path, "rb").read()
    again = run_script("stream_q.py", *flags, cwd=tmp_path)
    assert again.returncode == 0 and "global_step=500 reached" in again.stdout, again.stderr
    assert open(path, "rb").read() == before


def test_save_every_saves_during_the_run_so_a_killed_run_resumes_from_there(tmp_path):
    command = stream_q("--total-steps", "100000", "--save-every", "2000")
    process = start_until(command, tmp_path, 5_000)  # SIGKILL, a node failure: no save at the stop
    process.kill()
    process.wait()
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "stream_q.cleanrl_model"))
    saved = int(read_model(path)["global_step"])
    assert saved >= 4000 and saved % 2000 == 0
    command[command.index("100000")] = str(saved + 1000)
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stderr
    first = int(again.stdout.split("global_step=")[1].split(",")[0])
    assert saved < first <= saved + 1000  # its first episode ends after the saved step
    assert int(read_model(path)["global_step"]) == saved + 1000


@pytest.mark.parametrize(
    "first,flags",
    [
        ("stream_ac_discrete.py", []),  # another script's state, saved under this exp_name
        ("stream_q.py", ["--hidden-size", "16"]),  # another network
    ],
)
def test_a_model_that_does_not_fit_gives_one_line_error_naming_the_file(first, flags, tmp_path):
    saving = run_script(
        first,
        "--exp-name",
        "stream_q",
        "--total-steps",
        "300",
        "--save-model",
        *flags,
        cwd=tmp_path,
    )
    assert saving.returncode == 0, saving.stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "stream_q.cleanrl_model"))
    result = run_script("stream_q.py", "--total-steps", "600", "--resume", cwd=tmp_path)
    assert_one_line_error(result, "--resume", os.path.relpath(path, tmp_path), "do not fit")
