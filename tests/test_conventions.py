"""CleanRL's run conventions (--track, --capture-video, --save-model) and the paper's other env
families (dm_control, ALE v5, Box2D), as a user runs them."""

import glob
import os

import cv2
import flax.serialization
import jax
import numpy as np
import pytest
from conftest import assert_one_line_error, read_scalars, run_script


def decode(path):
    """The frames of a video file, (n, height, width, 3) uint8, decoded by OpenCV's ffmpeg."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.array(frames)
        frames.append(frame)


def read_model(path):
    """The state dict of the AgentState a --save-model file holds."""
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def run_folders(cwd):
    return sorted(
        glob.glob(os.path.join(cwd, "runs", "*")), key=lambda run: int(run.split("__")[2])
    )


def test_track_logs_the_run_and_its_videos_to_wandb(tmp_path):
    result = run_script(
        "stream_q.py",
        "--total-steps",
        "2000",
        "--track",
        "--wandb-project-name",
        "stream-x-test",
        "--capture-video",
        cwd=tmp_path,
        extra_env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()  # nor pygame's "error: XDG_RUNTIME_DIR is invalid"
    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    with open(log, "rb") as f:
        data = f.read()
    for word in (
        b"stream-x-test",
        b"charts/episodic_return",
        b"losses/td_error",
        b"charts/obgd_step_size",
    ):
        assert word in data, word
    videos = glob.glob(str(tmp_path / "videos" / "*" / "*.mp4"))
    assert (
        len(
            glob.glob(
                str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "videos" / "*.mp4")
            )
        )
        == len(videos)
        >= 2
    )
    assert (
        len(read_scalars(tmp_path)[0]["charts/episodic_return"]) >= 10
    )  # the TensorBoard run is kept too


# a run of each script, on an env of each family it takes
RUNS = [
    ("stream_q.py", "CartPole-v1", 300),
    ("stream_sarsa.py", "CartPole-v1", 300),
    ("stream_ac_discrete.py", "LunarLander-v3", 300),
    ("stream_ac_continuous.py", "LunarLanderContinuous-v3", 300),
    ("stream_q_minatar.py", "MinAtar/Breakout-v1", 300),
    ("stream_q_atari.py", "ALE/Breakout-v5", 600),
]


@pytest.mark.parametrize("script,env,steps", RUNS)
def test_capture_video_films_the_first_agent(script, env, steps, tmp_path):
    explore = (
        ["--exploration-fraction", "1.0"] if "_ac_" not in script else []
    )  # Breakout: FIRE after a lost life
    result = run_script(
        script,
        "--env",
        env,
        "--total-steps",
        str(steps),
        "--num-seeds",
        "2",
        "--capture-video",
        *explore,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    first_run = os.path.basename(run_folders(tmp_path)[0])
    assert os.listdir(tmp_path / "videos") == [first_run]  # the first agent's env only
    frames = decode(tmp_path / "videos" / first_run / "rl-video-episode-0.mp4")
    assert frames.shape[0] >= 5 and frames.shape[-1] == 3 and min(frames.shape[1:3]) >= 160
    assert frames.std() > 0  # not a blank screen


def test_dm_control_runs_and_saves(tmp_path):
    result = run_script(
        "stream_ac_continuous.py",
        "--env",
        "dm_control/cheetah-run-v0",
        "--save-model",
        "--total-steps",
        "1000",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run,) = run_folders(tmp_path)
    assert os.path.basename(run).startswith("dm_control_cheetah-run-v0__stream_ac_continuous__0__")
    scalars, _ = read_scalars(tmp_path)
    assert [step for step, _ in scalars["charts/episodic_length"]] == [1000]  # one full episode
    saved = read_model(os.path.join(run, "stream_ac_continuous.cleanrl_model"))
    assert int(saved["global_step"]) == 1000
    assert saved["obs_stats"]["mean"].shape == (17,)  # position (8) and velocity (9), flattened


def test_dm_control_video_renders_headless(tmp_path, monkeypatch):
    # 26 ms a frame in software (EGL): a part of the first
    # episode, written when the run closes its env
    monkeypatch.delenv("MUJOCO_GL", raising=False)  # the script picks EGL itself
    result = run_script(
        "stream_ac_continuous.py",
        "--env",
        "dm_control/cheetah-run-v0",
        "--capture-video",
        "--total-steps",
        "200",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (video,) = glob.glob(str(tmp_path / "videos" / "*" / "rl-video-episode-0.mp4"))
    frames = decode(video)
    assert frames.shape[0] >= 150 and frames.std() > 0


@pytest.mark.parametrize("script,env,steps", RUNS)
def test_save_model_writes_each_agents_final_state_for_flax_to_restore(
    script, env, steps, tmp_path
):
    import importlib

    module = importlib.import_module(script[:-3])
    result = run_script(
        script,
        "--env",
        env,
        "--total-steps",
        str(steps),
        "--num-seeds",
        "2",
        "--save-model",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    states = []
    for run in run_folders(tmp_path):
        with open(os.path.join(run, f"{script[:-3]}.cleanrl_model"), "rb") as f:
            data = f.read()
        saved = flax.serialization.msgpack_restore(data)
        assert sorted(saved) == sorted(
            module.AgentState._fields
        )  # the whole AgentState of one agent
        assert int(saved["global_step"]) == steps and float(saved["obs_stats"]["count"]) > steps
        states.append(saved)
    # two agents, two different sets of weights
    params = [name for name in states[0] if name.endswith("params")]
    assert params and not all(
        np.array_equal(a, b)
        for name in params
        for a, b in zip(jax.tree.leaves(states[0][name]), jax.tree.leaves(states[1][name]))
    )


@pytest.mark.parametrize(
    "script,env,words",
    [
        (
            "stream_q.py",
            "MinAtar/Breakout-v1",
            ["cannot be made"],
        ),  # MinAtar registers with its own script
        ("stream_sarsa.py", "ALE/Breakout-v5", ["cannot be made"]),
        ("stream_ac_discrete.py", "dm_control/cheetah-run-v0", ["cannot be made"]),
        ("stream_q.py", "LunarLanderContinuous-v3", ["Discrete actions"]),
        ("stream_ac_continuous.py", "LunarLander-v3", ["Box action space"]),
        ("stream_ac_continuous.py", "dm_control/cheetah-fly-v0", ["cannot be made"]),
        ("stream_q_atari.py", "CartPole-v1", ["Atari (ALE) env", "BreakoutNoFrameskip-v4"]),
        ("stream_q_atari.py", "ALE/NoSuchGame-v5", ["cannot be made"]),
        ("stream_q_minatar.py", "CartPole-v1", ["(10, 10, C) observations"]),
    ],
)
def test_an_env_of_another_family_gives_one_line_error(script, env, words, tmp_path):
    assert_one_line_error(
        run_script(script, "--env", env, "--total-steps", "10", cwd=tmp_path), "--env", env, *words
    )


def test_ale_v5_ids_skip_frames_once_and_keep_sticky_actions():
    import stream_q_atari

    for env_id, sticky in [("ALE/Pong-v5", 0.25), ("PongNoFrameskip-v4", 0.0)]:
        env = stream_q_atari.make_env(env_id)
        assert (
            env.unwrapped._frameskip == 1
        )  # AtariPreprocessing does the skipping: 4 frames, max-pooled
        assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (84, 84)
        env.close()
