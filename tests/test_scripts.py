"""The scripts as a user runs them: logs, seeds, errors, and running alone in an empty folder."""
import glob
import json
import os
import shutil

import pytest
from conftest import ROOT, assert_one_line_error, read_scalars, run_script

# script -> (default env, steps for a smoke run); both envs end episodes within the smoke run
SCRIPTS = {
    "stream_q.py": ("CartPole-v1", 300),
    "stream_sarsa.py": ("CartPole-v1", 300),
    "stream_ac_discrete.py": ("CartPole-v1", 300),
    "stream_ac_continuous.py": ("HalfCheetah-v5", 1100),
    "stream_q_minatar.py": ("MinAtar/Breakout-v1", 300),
    "stream_q_atari.py": ("BreakoutNoFrameskip-v4", 400),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run_writes_the_expected_tags(script, tmp_path):
    result = run_script(script, "--total-steps", str(SCRIPTS[script][1]), "--debug", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "episodic_return=" in result.stdout
    (run,) = os.listdir(tmp_path / "runs")
    assert run.startswith(f"{SCRIPTS[script][0].replace('/', '_')}__{script[:-3]}__0__")
    scalars, accumulator = read_scalars(tmp_path)
    assert {"charts/episodic_return", "charts/episodic_length"} <= set(scalars)
    assert ("charts/epsilon" in scalars) == ("sarsa" in script or "stream_q" in script)
    assert "hyperparameters/text_summary" in accumulator.Tags()["tensors"]
    assert all(step <= SCRIPTS[script][1] for step, _ in scalars["charts/episodic_return"])


def test_sps_is_logged_every_5000_steps(tmp_path):
    result = run_script("stream_q.py", "--total-steps", "10000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _ = read_scalars(tmp_path)
    assert [step for step, _ in scalars["charts/SPS"]] == [5000, 10000]
    assert all(value > 0 for _, value in scalars["charts/SPS"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_seed_gives_identical_returns(script, tmp_path):
    returns, steps = [], "5000" if script == "stream_q_atari.py" else "2500"  # Breakout games are long
    for i in range(2):
        folder = tmp_path / str(i)
        folder.mkdir()
        result = run_script(script, "--total-steps", steps, "--seed", "3", cwd=folder)
        assert result.returncode == 0, result.stderr
        scalars, _ = read_scalars(folder)
        returns.append(scalars["charts/episodic_return"])
    assert len(returns[0]) >= 2 and returns[0] == returns[1]
    # and a different seed gives a different run
    other = tmp_path / "other"
    other.mkdir()
    run_script(script, "--total-steps", steps, "--seed", "4", cwd=other)
    assert read_scalars(other)[0]["charts/episodic_return"] != returns[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_runs_when_copied_alone_into_an_empty_folder(script, tmp_path):
    shutil.copy(os.path.join(ROOT, script), tmp_path)
    result = run_script(str(tmp_path / script), "--total-steps", "200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"runs", script} <= set(os.listdir(tmp_path))  # mujoco may add MUJOCO_LOG.TXT


@pytest.mark.parametrize("script,env,needs", [
    ("stream_q.py", "HalfCheetah-v5", "Discrete action space"),
    ("stream_ac_continuous.py", "CartPole-v1", "flat Box (continuous) action space"),
    ("stream_q.py", "TestImage-v0", "flat Box observation"),
    ("stream_sarsa.py", "HalfCheetah-v5", "Discrete action space"),
    ("stream_sarsa.py", "TestImage-v0", "flat Box observation"),
    ("stream_ac_discrete.py", "HalfCheetah-v5", "Discrete action space"),
    ("stream_ac_discrete.py", "TestImage-v0", "flat Box observation"),
    ("stream_q_minatar.py", "CartPole-v1", "(10, 10, C) Box observation"),
    ("stream_q_minatar.py", "TestImage-v0", "(10, 10, C) Box observation"),
    ("stream_q_minatar.py", "HalfCheetah-v5", "Discrete action space"),
    ("stream_q_atari.py", "CartPole-v1", "Atari (ALE) env"),
    ("stream_q_atari.py", "HalfCheetah-v5", "Atari (ALE) env"),
])
def test_wrong_spaces_give_one_line_error(script, env, needs, tmp_path):
    result = run_script(script, "--env", env, "--total-steps", "10", cwd=tmp_path, launcher=True)
    assert_one_line_error(result, needs, env)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flags,words", [
    (["--total-steps", "0"], ["--total-steps", "0"]),
    (["--device", "tpu"], ["--device", "cpu", "gpu", "tpu"]),
    (["--env", "NoSuchEnv-v0"], ["--env", "NoSuchEnv-v0"]),
])
def test_bad_flags_give_one_line_error(script, flags, words, tmp_path):
    assert_one_line_error(run_script(script, *flags, cwd=tmp_path), *words)


def test_device_gpu_without_a_gpu_gives_one_line_error(tmp_path):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run_script("stream_q.py", "--device", "gpu", cwd=tmp_path), "--device gpu", "no GPU")


@pytest.mark.parametrize("script,env", [("stream_q.py", "Test/Nan-v0"), ("stream_sarsa.py", "Test/Nan-v0"),
                                        ("stream_ac_discrete.py", "Test/Nan-v0"),
                                        ("stream_ac_continuous.py", "TestNanContinuous-v0"),
                                        ("stream_q_minatar.py", "TestNanMinAtar-v0")])
def test_non_finite_td_error_stops_and_keeps_logs(script, env, tmp_path):
    result = run_script(script, "--env", env, "--total-steps", "1000", cwd=tmp_path, launcher=True)
    assert_one_line_error(result, "non-finite TD error", "global_step=101")
    scalars, accumulator = read_scalars(tmp_path)
    assert len(scalars["charts/episodic_return"]) == 5  # the episodes before the NaN (20 steps each)
    (events,) = glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    assert os.path.basename(os.path.dirname(events)).startswith(env.replace("/", "_") + "__")  # path-safe


@pytest.mark.parametrize("game", ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"])
def test_every_minatar_game_runs(game, tmp_path):
    result = run_script("stream_q_minatar.py", "--env", f"MinAtar/{game}-v1", "--total-steps", "300", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finished 300 steps" in result.stdout


def test_atari_life_loss_ends_the_episode_for_learning_only(tmp_path):
    # TestAle-v0: 3 lives, one lost every 40 frames, reward 1 per frame; no-op reset (1-30 frames)
    # and FIRE (4 frames) come first, so a game gives the agent 86-115 frames in 22-29 steps
    record = tmp_path / "record.json"
    result = run_script("stream_q_atari.py", "--env", "TestAle-v0", "--total-steps", "200", cwd=tmp_path,
                        launcher=True, extra_env={"RECORD_STEPS": str(record)})
    assert result.returncode == 0, result.stderr
    recorded = json.loads(record.read_text())
    dones = [i for i, (done, _) in enumerate(recorded["calls"]) if done]
    game_overs = [i for i, (_, game_over) in enumerate(recorded["calls"]) if game_over]
    assert len(recorded["calls"]) == 200 and len(game_overs) >= 6
    assert recorded["resets"] == 1 + len(game_overs)  # the env is reset only at game over
    assert set(game_overs) <= set(dones)
    for start, end in zip([-1] + game_overs, game_overs):  # each game: two lives lost, then game over
        assert len([i for i in dones if start < i <= end]) == 3
    returns = read_scalars(tmp_path)[0]["charts/episodic_return"]
    assert [step for step, _ in returns] == [i + 1 for i in game_overs]
    assert all(86 <= value <= 115 for _, value in returns), returns  # all three lives, not one (<= 40)


def test_atari_non_finite_td_error_stops_and_keeps_logs(tmp_path):
    result = run_script("stream_q_atari.py", "--env", "TestNanAle-v0", "--total-steps", "1000", cwd=tmp_path,
                        launcher=True)
    assert_one_line_error(result, "non-finite TD error")
    assert len(read_scalars(tmp_path)[0]["charts/episodic_return"]) >= 2  # the games before the NaN
