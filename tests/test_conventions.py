"""CleanRL's run conventions (--track, --capture-video, --save-model, --load-model and the evaluation)
and the paper's other env families (dm_control, ALE v5, Box2D), as a user runs them."""
import glob
import os

import cv2
import flax.serialization
import jax
import numpy as np
import pytest
from conftest import assert_one_line_error, read_all_scalars, read_scalars, run_script


def decode(path):
    """The frames of a video file, (n, height, width, 3) uint8, decoded by OpenCV's ffmpeg."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.array(frames)
        frames.append(frame)


def read_model(path):
    """The dict a --save-model file holds: script, env, hidden_size and the agent's state dict."""
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def run_folders(cwd):
    return sorted(glob.glob(os.path.join(cwd, "runs", "*")), key=lambda run: int(run.split("__")[2]))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A stream_q CartPole model saved after 300 steps (no evaluation)."""
    cwd = tmp_path_factory.mktemp("small_model")
    result = run_script("stream_q.py", "--total-steps", "300", "--save-model", "--eval-episodes", "0", cwd=cwd)
    assert result.returncode == 0, result.stderr
    (path,) = glob.glob(str(cwd / "runs" / "*" / "stream_q.cleanrl_model"))
    return path


def test_track_logs_the_run_and_its_videos_to_wandb(tmp_path):
    result = run_script("stream_q.py", "--total-steps", "2000", "--track", "--wandb-project-name", "stream-x-test",
                        "--capture-video", cwd=tmp_path, extra_env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()  # nor pygame's "error: XDG_RUNTIME_DIR is invalid"
    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    with open(log, "rb") as f:
        data = f.read()
    for word in (b"stream-x-test", b"charts/episodic_return", b"losses/td_error", b"charts/obgd_step_size"):
        assert word in data, word
    videos = glob.glob(str(tmp_path / "videos" / "*" / "*.mp4"))
    assert len(glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "videos" / "*.mp4"))) == \
        len(videos) >= 2
    assert len(read_scalars(tmp_path)[0]["charts/episodic_return"]) >= 10  # the TensorBoard run is kept too


@pytest.mark.parametrize("script,env,steps", [
    ("stream_q.py", "CartPole-v1", 300), ("stream_sarsa.py", "CartPole-v1", 300),
    ("stream_ac_discrete.py", "LunarLander-v3", 300), ("stream_ac_continuous.py", "LunarLanderContinuous-v3", 300),
    ("stream_q_minatar.py", "MinAtar/Breakout-v1", 300), ("stream_q_atari.py", "ALE/Breakout-v5", 600),
])
def test_capture_video_films_the_first_agent(script, env, steps, tmp_path):
    explore = ["--exploration-fraction", "1.0"] if "_ac_" not in script else []  # Breakout: FIRE after a lost life
    result = run_script(script, "--env", env, "--total-steps", str(steps), "--num-seeds", "2", "--capture-video",
                        *explore, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first_run = os.path.basename(run_folders(tmp_path)[0])
    assert os.listdir(tmp_path / "videos") == [first_run]  # the first agent's env only
    frames = decode(tmp_path / "videos" / first_run / "rl-video-episode-0.mp4")
    assert frames.shape[0] >= 5 and frames.shape[-1] == 3 and min(frames.shape[1:3]) >= 160
    assert frames.std() > 0  # not a blank screen


def test_dm_control_runs_saves_and_evaluates(tmp_path):
    # the "done when", scaled down: dm_control through shimmy, a model file and the evaluation
    result = run_script("stream_ac_continuous.py", "--env", "dm_control/cheetah-run-v0", "--save-model",
                        "--total-steps", "1000", "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = run_folders(tmp_path)
    assert os.path.basename(run).startswith("dm_control_cheetah-run-v0__stream_ac_continuous__0__")
    scalars, _ = read_scalars(tmp_path)
    assert [step for step, _ in scalars["charts/episodic_length"]] == [1000]  # T = 1000: one full episode
    assert len(scalars["eval/episodic_return"]) == 1
    saved = read_model(os.path.join(run, "stream_ac_continuous.cleanrl_model"))
    assert (saved["script"], saved["env"], int(saved["agent"]["global_step"])) == \
        ("stream_ac_continuous.py", "dm_control/cheetah-run-v0", 1000)
    assert saved["agent"]["obs_stats"]["mean"].shape == (17,)  # position (8) and velocity (9), flattened


def test_dm_control_video_renders_headless(tmp_path, monkeypatch):
    # 26 ms a frame in software (EGL): a part of the first episode, written when the run closes its env
    monkeypatch.delenv("MUJOCO_GL", raising=False)  # the script picks EGL itself
    result = run_script("stream_ac_continuous.py", "--env", "dm_control/cheetah-run-v0", "--capture-video",
                        "--total-steps", "200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (video,) = glob.glob(str(tmp_path / "videos" / "*" / "rl-video-episode-0.mp4"))
    frames = decode(video)
    assert frames.shape[0] >= 150 and frames.std() > 0


def test_save_model_then_load_model_goes_on_from_the_saved_agent(tmp_path):
    (tmp_path / "save").mkdir(), (tmp_path / "load").mkdir()
    result = run_script("stream_q.py", "--total-steps", "30000", "--num-seeds", "3", "--save-model",
                        "--eval-episodes", "2", cwd=tmp_path / "save")
    assert result.returncode == 0, result.stderr
    evals = {}
    for run in run_folders(tmp_path / "save"):
        saved = read_model(os.path.join(run, "stream_q.cleanrl_model"))
        assert (saved["script"], saved["env"], saved["hidden_size"]) == ("stream_q.py", "CartPole-v1", 32)
        assert int(saved["agent"]["global_step"]) == 30000 and float(saved["agent"]["obs_stats"]["count"]) > 30000
    for seed, scalars in read_all_scalars(tmp_path / "save").items():
        assert [step for step, _ in scalars["eval/episodic_return"]] == [0, 1]
        evals[seed] = np.mean([value for _, value in scalars["eval/episodic_return"]])
    best = max(evals, key=evals.get)
    assert evals[best] >= 500, evals  # 9 of 10 seeds reach 1,000 within 30k steps (test_learning)
    (model,) = glob.glob(str(tmp_path / "save" / "runs" / f"*__{best}__*" / "stream_q.cleanrl_model"))
    result = run_script("stream_q.py", "--total-steps", "3000", "--load-model", model, "--eval-episodes", "0",
                        "--seed", "7", cwd=tmp_path / "load")
    assert result.returncode == 0, result.stderr
    scalars, _ = read_scalars(tmp_path / "load")
    assert [step for step, _ in scalars["charts/SPS"]] == [31000, 32000, 33000]  # the global step goes on
    # from scratch the first episodes return about 20; a loaded agent's first ones (if any end within
    # 3,000 steps) return 500 or more, with epsilon where the saved run left it
    assert all(value >= 500 for _, value in scalars.get("charts/episodic_return", [])), scalars
    assert all(value == pytest.approx(0.01) for _, value in scalars.get("charts/epsilon", []))


def test_load_model_with_no_steps_evaluates_and_films(small_model, tmp_path):
    # README, "Watch a trained agent"
    result = run_script("stream_q.py", "--load-model", small_model, "--total-steps", "0", "--eval-episodes", "2",
                        "--capture-video", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scalars, _ = read_scalars(tmp_path)
    assert "charts/episodic_return" not in scalars and len(scalars["eval/episodic_return"]) == 2
    (video,) = glob.glob(str(tmp_path / "videos" / "*-eval" / "rl-video-episode-0.mp4"))
    assert decode(video).shape[0] >= 5


@pytest.mark.parametrize("script,flags,words", [
    ("stream_q.py", ["--load-model", "no/such.cleanrl_model"], ["--load-model", "No such file"]),
    ("stream_q.py", ["--load-model", "EVENTS"], ["--load-model", "not a file written by --save-model"]),
    ("stream_q.py", ["--load-model", "MODEL", "--env", "Acrobot-v1"], ["--load-model", "CartPole-v1", "Acrobot-v1"]),
    ("stream_q.py", ["--load-model", "MODEL", "--hidden-size", "16"], ["--load-model", "--hidden-size 32", "16"]),
    ("stream_sarsa.py", ["--load-model", "MODEL"], ["--load-model", "stream_q.py", "stream_sarsa.py"]),
    ("stream_ac_discrete.py", ["--load-model", "MODEL"], ["--load-model", "stream_q.py", "stream_ac_discrete.py"]),
])
def test_a_model_that_does_not_fit_gives_one_line_error_and_no_run_folder(script, flags, words, small_model,
                                                                        tmp_path):
    events = glob.glob(os.path.join(os.path.dirname(small_model), "events.*"))[0]
    flags = [{"MODEL": small_model, "EVENTS": events}.get(flag, flag) for flag in flags]
    assert_one_line_error(run_script(script, *flags, cwd=tmp_path), *words)
    assert not os.path.exists(tmp_path / "runs")


def test_a_model_from_another_version_of_the_script_gives_one_line_error(small_model, tmp_path):
    saved = read_model(small_model)
    saved["agent"]["obs"] = saved["agent"].pop("norm_obs")  # the field's name before this version
    with open(tmp_path / "old.cleanrl_model", "wb") as f:
        f.write(flax.serialization.msgpack_serialize(saved))
    result = run_script("stream_q.py", "--load-model", str(tmp_path / "old.cleanrl_model"), cwd=tmp_path)
    assert_one_line_error(result, "--load-model", "does not hold this version's agent state")


@pytest.mark.parametrize("script,env,words", [
    ("stream_q.py", "MinAtar/Breakout-v1", ["stream_q_minatar.py"]),
    ("stream_sarsa.py", "ALE/Breakout-v5", ["stream_q_atari.py"]),
    ("stream_ac_discrete.py", "dm_control/cheetah-run-v0", ["stream_ac_continuous.py"]),
    ("stream_q.py", "LunarLanderContinuous-v3", ["Discrete action space", "stream_ac_continuous.py"]),
    ("stream_ac_continuous.py", "LunarLander-v3", ["continuous", "stream_ac_discrete.py"]),
    ("stream_ac_continuous.py", "dm_control/cheetah-fly-v0", ["dm_control/cheetah-fly-v0"]),
    ("stream_q_atari.py", "CartPole-v1", ["Atari (ALE) env", "ALE/Breakout-v5"]),
    ("stream_q_atari.py", "ALE/NoSuchGame-v5", ["ALE/NoSuchGame-v5"]),
    ("stream_q_minatar.py", "CartPole-v1", ["MinAtar/<Game>-v1"]),
])
def test_an_env_of_another_family_names_the_script_that_runs_it(script, env, words, tmp_path):
    assert_one_line_error(run_script(script, "--env", env, "--total-steps", "10", cwd=tmp_path), "--env", env, *words)


def test_ale_v5_ids_skip_frames_once_and_keep_sticky_actions():
    import stream_q_atari

    for env_id, sticky in [("ALE/Pong-v5", 0.25), ("PongNoFrameskip-v4", 0.0)]:
        env = stream_q_atari.make_env(env_id)
        assert env.unwrapped._frameskip == 1  # AtariPreprocessing does the skipping: 4 frames, max-pooled
        assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (84, 84)
        env.close()


@pytest.mark.parametrize("script,env,steps", [
    ("stream_q.py", "CartPole-v1", 100), ("stream_sarsa.py", "CartPole-v1", 100),
    ("stream_ac_discrete.py", "CartPole-v1", 100), ("stream_ac_continuous.py", "HalfCheetah-v5", 100),
    ("stream_q_minatar.py", "MinAtar/Breakout-v1", 100), ("stream_q_atari.py", "BreakoutNoFrameskip-v4", 100),
])
def test_a_loaded_agent_is_the_saved_one(script, env, steps, tmp_path):
    # save; load with no steps and save again: the same weights, reward statistics and global step
    for folder, flags in (("a", ["--total-steps", str(steps)]), ("b", ["--total-steps", "0", "--load-model", "MODEL"])):
        (tmp_path / folder).mkdir()
        flags = [glob.glob(str(tmp_path / "a" / "runs" / "*" / "*.cleanrl_model"))[0] if f == "MODEL" else f
                 for f in flags]
        result = run_script(script, "--env", env, *flags, "--save-model", "--eval-episodes", "0", cwd=tmp_path / folder)
        assert result.returncode == 0, result.stderr
    saved, loaded = [read_model(path)["agent"]
                     for path in sorted(glob.glob(str(tmp_path / "*" / "runs" / "*" / "*.cleanrl_model")))]
    assert int(saved["global_step"]) == int(loaded["global_step"]) == steps
    params = [name for name in saved if name.endswith("params")]
    assert params and saved["reward_stats"]["count"] > 0
    for name in params + ["reward_stats"]:
        for a, b in zip(jax.tree.leaves(saved[name]), jax.tree.leaves(loaded[name])):
            np.testing.assert_array_equal(a, b)
    # the observation statistics go on: one more sample, the reset observation of the new run
    assert float(loaded["obs_stats"]["count"]) == float(saved["obs_stats"]["count"]) + 1
