"""The scripts as a user runs them: logs, seeds, errors, and running alone in an empty folder."""

import glob
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    ROOT,
    assert_one_line_error,
    load_run,
    read_all_scalars,
    read_scalars,
    record_run,
    run_script,
    unpack,
)

import stream_q

# script -> (default env, steps for a smoke run); every env
# of seeds 0 and 1 ends an episode within it
SCRIPTS = {
    "stream_q.py": ("CartPole-v1", 300),
    "stream_sarsa.py": ("CartPole-v1", 300),
    "stream_ac_discrete.py": ("CartPole-v1", 300),
    "stream_ac_continuous.py": ("HalfCheetah-v5", 1100),
    "stream_q_minatar.py": ("MinAtar/Breakout-v1", 300),
    "stream_q_atari.py": ("BreakoutNoFrameskip-v4", 600),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run_of_two_seeds_writes_the_expected_tags(script, tmp_path):
    # a greedy Breakout agent may never press FIRE after a
    # lost life: explore throughout the smoke run
    explore = ["--exploration-fraction", "1.0"] if script == "stream_q_atari.py" else []
    result = run_script(
        script,
        "--total-steps",
        str(SCRIPTS[script][1]),
        "--num-seeds",
        "2",
        "--debug",
        *explore,
        "--save-model",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "seed=0, global_step=" in result.stdout and "seed=1, global_step=" in result.stdout
    runs = sorted(os.listdir(tmp_path / "runs"), key=lambda run: run.split("__")[2])
    assert [run.split("__")[:3] for run in runs] == [
        [SCRIPTS[script][0].replace("/", "_"), script[:-3], seed] for seed in ("0", "1")
    ]
    for run in runs:
        scalars, accumulator = load_run(str(tmp_path / "runs" / run))
        assert {"charts/episodic_return", "charts/episodic_length"} <= set(scalars)
        assert ("charts/epsilon" in scalars) == ("sarsa" in script or "stream_q" in script)
        assert "hyperparameters/text_summary" in accumulator.Tags()["tensors"]
        assert all(step <= SCRIPTS[script][1] for step, _ in scalars["charts/episodic_return"])
        assert os.path.isfile(tmp_path / "runs" / run / f"{script[:-3]}.cleanrl_model")


def test_sps_and_the_diagnostics_are_logged_every_1000_steps(tmp_path):
    recorded = record_run("stream_q.py", "--total-steps", "3000", cwd=tmp_path)
    scalars, _ = read_scalars(tmp_path)
    for tag in ("charts/SPS", "losses/td_error", "charts/obgd_step_size"):
        assert [step for step, _ in scalars[tag]] == [1000, 2000, 3000]
    assert all(value > 0 for _, value in scalars["charts/SPS"])
    # the diagnostics are the means of |δ| and of ObGD's step
    # size over the steps since the last log:
    # the StepOutputs of train_step calls 1..3000 (call 0 is start)
    out = unpack(stream_q, np.concatenate(recorded["outs"][1:]))
    assert out.td_error.shape == (3000,)
    for field, tag in (("td_error", "losses/td_error"), ("step_size", "charts/obgd_step_size")):
        expected = np.abs(getattr(out, field)).reshape(3, 1000).mean(axis=1)
        np.testing.assert_allclose([value for _, value in scalars[tag]], expected, rtol=1e-5)
    assert all(
        0 < value <= 1.0 for _, value in scalars["charts/obgd_step_size"]
    )  # alpha / max(M, 1)


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_seed_gives_identical_returns(script, tmp_path):
    steps = "5000" if script == "stream_q_atari.py" else "2500"  # Breakout games are long
    returns = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        result = run_script(script, "--total-steps", steps, "--seed", "3", cwd=folder)
        assert result.returncode == 0, result.stderr
        returns.append(read_all_scalars(folder)[3]["charts/episodic_return"])
    assert len(returns[0]) >= 2 and returns[0] == returns[1]


def test_each_agents_jax_key_follows_its_seed(tmp_path):
    # an env that ignores its seed: two agents' runs differ only
    # through their JAX keys (weights, actions);
    # every script builds the keys with the same line of __main__ (test_shared_blocks)
    returns = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        result = run_script(
            "stream_q.py",
            "--env",
            "Test/Seedless-v0",
            "--total-steps",
            "2000",
            "--seed",
            "3",
            "--num-seeds",
            "2",
            cwd=folder,
            launcher=True,
        )
        assert result.returncode == 0, result.stderr
        returns.append(
            {
                seed: scalars["charts/episodic_length"]
                for seed, scalars in read_all_scalars(folder).items()
            }
        )
    assert returns[0] == returns[1]  # the same seeds, the same runs
    assert len(returns[0][3]) >= 20 and returns[0][3] != returns[0][4]


@pytest.mark.parametrize("script", SCRIPTS)
def test_runs_when_copied_alone_into_an_empty_folder(script, tmp_path):
    shutil.copy(os.path.join(ROOT, script), tmp_path)
    result = run_script(str(tmp_path / script), "--total-steps", "200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"runs", script} <= set(os.listdir(tmp_path))  # mujoco may add MUJOCO_LOG.TXT


@pytest.mark.parametrize(
    "script,env,needs",
    [
        ("stream_q.py", "HalfCheetah-v5", "needs Discrete actions"),
        ("stream_ac_continuous.py", "CartPole-v1", "Box action space"),
        (
            "stream_ac_continuous.py",
            "TestImageContinuous-v0",
            "needs flat Box actions and observations",
        ),
        ("stream_q.py", "TestImage-v0", "flat Box observations"),
        ("stream_sarsa.py", "HalfCheetah-v5", "needs Discrete actions"),
        ("stream_sarsa.py", "TestImage-v0", "flat Box observations"),
        ("stream_ac_discrete.py", "HalfCheetah-v5", "needs Discrete actions"),
        ("stream_ac_discrete.py", "TestImage-v0", "flat Box observations"),
        ("stream_q_minatar.py", "CartPole-v1", "(10, 10, C) observations"),
        ("stream_q_minatar.py", "TestImage-v0", "(10, 10, C) observations"),
        ("stream_q_minatar.py", "HalfCheetah-v5", "needs Discrete actions"),
        ("stream_q_atari.py", "CartPole-v1", "Atari (ALE) env"),
        ("stream_q_atari.py", "HalfCheetah-v5", "Atari (ALE) env"),
    ],
)
def test_wrong_spaces_give_one_line_error(script, env, needs, tmp_path):
    result = run_script(script, "--env", env, "--total-steps", "10", cwd=tmp_path, launcher=True)
    assert_one_line_error(result, needs, env)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "flags,words",
    [
        (["--total-steps", "0"], ["--total-steps", "positive"]),
        (["--env", "NoSuchEnv-v0"], ["--env", "NoSuchEnv-v0"]),
        (["--num-seeds", "0"], ["--num-seeds", "positive"]),
        (["--save-every", "0"], ["--save-every", "positive"]),
    ],
)
def test_bad_flags_give_one_line_error(script, flags, words, tmp_path):
    assert_one_line_error(run_script(script, *flags, cwd=tmp_path), *words)
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--device", "tpu"], ["tpu", "--device", "cpu", "gpu"]),
        (["--total-steps", "ten"], ["ten", "--total-steps"]),
    ],
)
def test_an_unknown_choice_or_a_wrong_type_gets_tyros_message(flags, words, tmp_path):
    result = run_script("stream_q.py", *flags, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())  # tyro draws a box around its words
    assert all(word in message for word in words), result.stderr


def test_device_gpu_without_a_gpu_gives_one_line_error(tmp_path):
    # asked of a fresh process: this one runs JAX on the CPU whatever the machine has
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.default_backend())"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() == "gpu":
        pytest.skip("this machine has a GPU: --device gpu runs")
    assert_one_line_error(
        run_script("stream_q.py", "--device", "gpu", cwd=tmp_path), "--device gpu", "no GPU"
    )


@pytest.mark.parametrize(
    "script,env",
    [
        ("stream_q.py", "Test/Nan-v0"),
        ("stream_sarsa.py", "Test/Nan-v0"),
        ("stream_ac_discrete.py", "Test/Nan-v0"),
        ("stream_ac_continuous.py", "TestNanContinuous-v0"),
        ("stream_q_minatar.py", "TestNanMinAtar-v0"),
    ],
)
def test_non_finite_td_error_stops_and_keeps_logs(script, env, tmp_path):
    result = run_script(script, "--env", env, "--total-steps", "1000", cwd=tmp_path, launcher=True)
    assert_one_line_error(result, "non-finite TD error", "global_step=101", "seed 0")
    scalars, accumulator = read_scalars(tmp_path)
    assert (
        len(scalars["charts/episodic_return"]) == 5
    )  # the episodes before the NaN (20 steps each)
    (events,) = glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    assert os.path.basename(os.path.dirname(events)).startswith(
        env.replace("/", "_") + "__"
    )  # path-safe


def test_non_finite_td_error_in_one_agent_names_its_seed_and_keeps_every_log(tmp_path):
    # Test/NanSeed1-v0 gives NaN rewards after 100 steps only in the env seeded with 1
    result = run_script(
        "stream_q.py",
        "--env",
        "Test/NanSeed1-v0",
        "--total-steps",
        "1000",
        "--num-seeds",
        "3",
        cwd=tmp_path,
        launcher=True,
    )
    assert_one_line_error(
        result, "non-finite TD error", "global_step=101", "seed 1", "__stream_q__1__"
    )
    runs = read_all_scalars(tmp_path)
    assert sorted(runs) == [0, 1, 2]
    assert all(len(scalars["charts/episodic_return"]) == 5 for scalars in runs.values())


@pytest.mark.parametrize("script,steps", [("stream_q.py", 300), ("stream_ac_continuous.py", 25)])
def test_an_agent_in_a_batch_acts_and_learns_as_it_does_alone(script, steps, tmp_path):
    # seed 6 as the middle agent of --num-seeds 3 --seed 5,
    # and alone: the same actions, and the same
    # TD errors up to float rounding (vmap, and the unbatched one-agent path, may round differently;
    # a continuous agent's actions carry that rounding on, and after about 30 steps it shows)
    runs = {}
    for name, flags in (("batch", ["--num-seeds", "3", "--seed", "5"]), ("alone", ["--seed", "6"])):
        (tmp_path / name).mkdir()
        runs[name] = record_run(script, "--total-steps", str(steps), *flags, cwd=tmp_path / name)[
            "outs"
        ]
    # the packed StepOutputs of the train_step calls (call 0 is start), (steps, agents, fields)
    batch, alone = np.stack(runs["batch"][1:])[:, 1], np.stack(runs["alone"][1:])[:, 0]
    assert batch.shape == alone.shape == (steps, batch.shape[-1])
    if script == "stream_q.py":
        batch_out, alone_out = unpack(stream_q, batch), unpack(stream_q, alone)
        np.testing.assert_array_equal(batch_out.action, alone_out.action)
        np.testing.assert_array_equal(batch_out.epsilon, alone_out.epsilon)
        np.testing.assert_allclose(batch_out.td_error, alone_out.td_error, rtol=1e-4, atol=1e-5)
    else:  # actions, δ and step sizes
        np.testing.assert_allclose(batch, alone, rtol=1e-3, atol=1e-4)
    # and the other agents of the batch run streams of their own
    others = np.stack(runs["batch"][1:])[:, [0, 2]]
    assert not np.allclose(others[:, 0], batch) and not np.allclose(others[:, 1], batch)


@pytest.mark.parametrize(
    "script,env",
    [("stream_q.py", "Test/NanSeed1-v0"), ("stream_ac_continuous.py", "TestNanContinuousSeed1-v0")],
)
def test_a_nan_in_one_agent_leaves_the_other_agents_updates_unchanged(script, env, tmp_path):
    # seed 1's env gives a NaN reward from its 101st step on, which makes that agent's TD error and
    # weights NaN; seeds 0 and 2 must act and learn exactly as in a run of the same envs with no NaN
    runs = {}
    clean_env = "Test/CleanContinuous-v0" if "Continuous" in env else "Test/Clean-v0"
    for name, env_id in (("nan", env), ("clean", clean_env)):
        (tmp_path / name).mkdir()
        flags = ["--env", env_id, "--total-steps", "150", "--num-seeds", "3"]
        recorded = record_run(script, *flags, cwd=tmp_path / name, check=False)
        runs[name] = np.stack(recorded["outs"][1:])  # train_step calls, (calls, agents, fields)
        assert (recorded["returncode"] != 0) == (name == "nan")
    nan = runs["nan"]
    clean = runs["clean"][: len(nan)]
    assert len(nan) == 101  # train_step up to the 101st: agent 1's δ stops the run
    assert not np.isfinite(nan[-1, 1]).all() and np.isfinite(nan[:-1]).all()
    np.testing.assert_array_equal(nan[:, [0, 2]], clean[:, [0, 2]])


def test_ctrl_c_ends_the_run_with_every_log_flushed(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "stream_q.py"), "--num-seeds", "2", "--debug"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore"),
        start_new_session=True,
    )
    seeds_seen = set()
    for line in process.stdout:  # both agents have ended an episode
        seeds_seen |= {line.split(",")[0]} if line.startswith("seed=") else set()
        if len(seeds_seen) == 2:
            break
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")][0].startswith(
        "error: interrupted"
    )
    runs = read_all_scalars(tmp_path)
    assert sorted(runs) == [0, 1] and all(
        scalars["charts/episodic_return"] for scalars in runs.values()
    )


@pytest.mark.parametrize(
    "script,env,steps,time_limit",
    [
        (
            "stream_q.py",
            "CartPole-v1",
            300,
            10_000,
        ),  # the reference's 10,000-step limit for classic control
        ("stream_ac_continuous.py", "HalfCheetah-v5", 1010, 1000),  # MuJoCo: the env's own limit
        (
            "stream_ac_continuous.py",
            "dm_control/cartpole-balance-v0",
            1010,
            1000,
        ),  # no limit in its spec: 1000
    ],
)
def test_the_time_feature_counts_the_episode_in_units_of_the_scripts_own_time_limit(
    script, env, steps, time_limit, tmp_path
):
    recorded = record_run(
        script, "--env", env, "--total-steps", str(steps), cwd=tmp_path, field="norm_obs"
    )
    # call 0 is start, (agents, obs_dim + 1); one agent's state has no agent axis after it
    features = np.array([norm_obs[..., -1].ravel()[0] for norm_obs in recorded["fields"]])
    dones = [False] + [bool(args[2][0]) for args in recorded["calls"][1:]]
    t, expected = 0, []
    for done in dones:
        t = 0 if done else t + (len(expected) > 0)
        expected.append(-0.5 + t / time_limit)
    assert len(expected) == steps + 1
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-6)
    if time_limit == 1000:  # an episode ended at its limit, and the feature restarted
        assert dones[1000] and features[999] == pytest.approx(0.499) and features[1000] == -0.5


@pytest.mark.parametrize("game", ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"])
def test_every_minatar_game_runs(game, tmp_path):
    result = run_script(
        "stream_q_minatar.py", "--env", f"MinAtar/{game}-v1", "--total-steps", "300", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "global_step=300 reached" in result.stdout


def test_atari_life_loss_ends_the_episode_for_learning_only(tmp_path):
    # TestAle-v0: 3 lives, one lost every 40 frames, reward 1 per frame; no-op reset (1-30 frames)
    # and FIRE (4 frames) come first, so a game gives the agent 86-115 frames in 22-29 steps
    record = tmp_path / "record.pkl"
    result = run_script(
        "stream_q_atari.py",
        "--env",
        "TestAle-v0",
        "--total-steps",
        "200",
        cwd=tmp_path,
        launcher=True,
        extra_env={"RECORD_CALLS": str(record)},
    )
    assert result.returncode == 0, result.stderr
    recorded = pickle.loads(record.read_bytes())
    recorded["calls"] = recorded["calls"][1:]  # the first call is start(keys, obs)
    # train_step(state, next_obs, reward, done, reset_obs,
    # game_over), each argument (num_seeds, ...)
    dones = [i for i, args in enumerate(recorded["calls"]) if args[2][0]]
    game_overs = [i for i, args in enumerate(recorded["calls"]) if args[4][0]]
    assert len(recorded["calls"]) == 200 and len(game_overs) >= 6
    assert recorded["resets"] == 1 + len(game_overs)  # the env is reset only at game over
    assert set(game_overs) <= set(dones)
    for start, end in zip(
        [-1] + game_overs, game_overs
    ):  # each game: two lives lost, then game over
        assert len([i for i in dones if start < i <= end]) == 3
    returns = read_scalars(tmp_path)[0]["charts/episodic_return"]
    assert [step for step, _ in returns] == [i + 1 for i in game_overs]
    assert all(86 <= value <= 115 for _, value in returns), (
        returns
    )  # all three lives, not one (<= 40)


def test_atari_non_finite_td_error_stops_and_keeps_logs(tmp_path):
    result = run_script(
        "stream_q_atari.py",
        "--env",
        "TestNanAle-v0",
        "--total-steps",
        "1000",
        cwd=tmp_path,
        launcher=True,
    )
    assert_one_line_error(result, "non-finite TD error")
    assert len(read_scalars(tmp_path)[0]["charts/episodic_return"]) >= 2  # the games before the NaN


def test_profile_step_times_every_part_of_a_step(tmp_path):
    # tests/profile_step.py: one row of µs per step; each timer must have caught its part
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "profile_step.py"), "stream_q"]
        + ["--num-seeds", "2", "--steps", "3000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split()[3:9] == ["env", "vector", "python", "call", "compute", "total"]
    _, script, num_seeds, *numbers = row.split()
    env, vector, python, call, compute, total, agent_steps = [float(n) for n in numbers]
    assert (script, num_seeds) == ("stream_q", "2")
    # every timer caught its part: the env's inside the vector env's, the loop's around both, the
    # step's (call + compute) and the empty call's. Compute alone is a difference of two timings
    # taken apart, so on a busy core it can come out below 0: not asserted
    assert min(env, vector, python, call, call + compute) > 0, row
    assert 1_000 < agent_steps < 1_000_000, row
