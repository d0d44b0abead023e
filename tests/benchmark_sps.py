"""Speed of each script next to the raw env-only speed of the same env, as a ratio.

    python tests/benchmark_sps.py                       # every script on its default env
    python tests/benchmark_sps.py stream_q --steps 50000

Each script gets its own process, which (1) steps the script's own `make_env(env)` with random
actions, (2) runs the script exactly as `python SCRIPT --env ENV --total-steps N` would, in a
temporary folder, and (3) reads its speed after warm-up off the wall times of its `charts/SPS`
events (the first one, which includes compilation, is the start of the timed span), then
times the env again. Raw steps/s is the mean of the two env-only runs. Not a pytest test:
machines are noisy, so compare ratios from one run, not figures across runs.
"""
import argparse
import contextlib
import importlib.util
import os
import runpy
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# script -> (default env, steps to run); each script logs charts/SPS every 5,000 steps
DEFAULTS = {
    "stream_q": ("CartPole-v1", 40_000),
    "stream_sarsa": ("CartPole-v1", 40_000),
    "stream_ac_discrete": ("CartPole-v1", 40_000),
    "stream_ac_continuous": ("HalfCheetah-v5", 20_000),
    "stream_q_minatar": ("MinAtar/Breakout-v1", 20_000),
    "stream_q_atari": ("BreakoutNoFrameskip-v4", 15_000),
}


def env_only_sps(make_env, env_id: str, steps: int) -> float:
    """Steps/s of make_env(env_id) stepped with random actions, resets included."""
    env = make_env(env_id)
    env.action_space.seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def run_one(script: str, env_id: str, steps: int) -> None:
    """In this process: env-only speed, the script's speed, env-only again; prints one row."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = os.path.join(ROOT, f"{script}.py")
    spec = importlib.util.spec_from_file_location(script, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw_before = env_only_sps(module.make_env, env_id, min(steps, 20_000))
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        sys.argv = [path, "--env", env_id, "--total-steps", str(steps)]
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            runpy.run_path(path, run_name="__main__")
        (run,) = os.listdir("runs")
        accumulator = EventAccumulator(os.path.join("runs", run))
        accumulator.Reload()
        events = accumulator.Scalars("charts/SPS")
    raw_after = env_only_sps(module.make_env, env_id, min(steps, 20_000))
    first, last = events[0], events[-1]
    sps = (last.step - first.step) / (last.wall_time - first.wall_time)
    raw = (raw_before + raw_after) / 2
    print(f"{script:22s} {env_id:24s} {sps:9.0f} {raw:9.0f} {sps / raw:6.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="*", help="scripts to time (default: all that exist)")
    parser.add_argument("--steps", type=int, help="steps per script (default: per script, >= 10,000)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.one:
        script = cli.scripts[0]
        run_one(script, DEFAULTS[script][0], cli.steps or DEFAULTS[script][1])
        sys.exit()
    scripts = cli.scripts or [s for s in DEFAULTS if os.path.exists(os.path.join(ROOT, f"{s}.py"))]
    print(f"{'script':22s} {'env':24s} {'steps/s':>9s} {'env-only':>9s} {'ratio':>6s}", flush=True)
    for script in scripts:
        command = [sys.executable, os.path.abspath(__file__), script, "--one"]
        if cli.steps:
            command += ["--steps", str(cli.steps)]
        subprocess.run(command, check=True, stdout=None, stderr=subprocess.DEVNULL)
