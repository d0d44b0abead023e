"""Speed of each script next to the raw env-only speed of the same env, as a ratio.

    python tests/benchmark_sps.py                         # every script on its default env, 1 agent
    python tests/benchmark_sps.py stream_q --num-seeds 1 8 32
    python tests/benchmark_sps.py stream_q --steps 50000 --root ../old-checkout --root .

Each (root, script, num-seeds) gets its own process, which (1) steps the script's own
`make_env(env)` on pre-drawn random actions (drawing them is no agent's cost), (2) runs the script
exactly as `python SCRIPT --env ENV --total-steps N --num-seeds K` would, in a temporary folder,
and (3) reads its speed after warm-up off the wall times of its `charts/SPS` events (the first
one, which includes compilation, starts the timed span), then times the env again. Raw steps/s
is the mean of the two env-only runs; agent-steps/s counts every agent's steps. With several
--root folders (say an old checkout and this one) the rows alternate between them. Not a pytest
test: machines are noisy, so compare ratios from one run, not figures across runs.
"""

import argparse
import contextlib
import glob
import importlib.util
import os
import runpy
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# script -> (default env, steps to run); each script logs
# charts/SPS every 1,000 steps (5,000 before)
DEFAULTS = {
    "stream_q": ("CartPole-v1", 40_000),
    "stream_sarsa": ("CartPole-v1", 40_000),
    "stream_ac_discrete": ("CartPole-v1", 40_000),
    "stream_ac_continuous": ("HalfCheetah-v5", 20_000),
    "stream_q_minatar": ("MinAtar/Breakout-v1", 20_000),
    "stream_q_atari": ("BreakoutNoFrameskip-v4", 15_000),
}


def env_only_sps(make_env, env_id: str, steps: int) -> float:
    """Steps/s of make_env(env_id) stepped on pre-drawn random actions, resets included."""
    env = make_env(env_id)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def run_rows(tool: str, scripts, num_seeds_list, roots, steps: int | None) -> None:
    """One process per (script, num-seeds, root), roots alternated: `tool SCRIPT --one ROOT N`."""
    for script in scripts:
        for num_seeds in num_seeds_list:
            for root in roots:
                command = [sys.executable, tool, script, "--one", root, str(num_seeds)]
                command += ["--steps", str(steps)] if steps else []
                subprocess.run(command, check=True, stderr=subprocess.DEVNULL)


def run_as_user(path: str, env_id: str, steps: int, num_seeds: int) -> None:
    """In this process and folder: `python PATH --env ENV --total-steps N [--num-seeds K]`."""
    sys.argv = [path, "--env", env_id, "--total-steps", str(steps)]
    if num_seeds != 1:  # an older checkout may not know the flag
        sys.argv += ["--num-seeds", str(num_seeds)]
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        runpy.run_path(path, run_name="__main__")


def run_one(root: str, script: str, env_id: str, steps: int, num_seeds: int) -> None:
    """In this process: env-only speed, the script's speed, env-only again; prints one row."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = os.path.abspath(root)  # the run chdirs to a temporary folder
    path = os.path.join(root, f"{script}.py")
    spec = importlib.util.spec_from_file_location(script, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw_before = env_only_sps(module.make_env, env_id, min(steps, 20_000))
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        run_as_user(path, env_id, steps, num_seeds)
        run = sorted(glob.glob(os.path.join("runs", "*")))[0]
        accumulator = EventAccumulator(run)
        accumulator.Reload()
        events = accumulator.Scalars("charts/SPS")
    raw_after = env_only_sps(module.make_env, env_id, min(steps, 20_000))
    first, last = events[0], events[-1]
    sps = num_seeds * (last.step - first.step) / (last.wall_time - first.wall_time)
    raw = (raw_before + raw_after) / 2
    label = os.path.basename(root)
    row = f"{label:12s} {script:22s} {env_id:22s} {num_seeds:4d} {sps:10.0f} {raw:9.0f}"
    print(f"{row} {sps / raw:6.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scripts", nargs="*", help="scripts to time (default: all that exist)")
    parser.add_argument(
        "--steps", type=int, help="steps per agent (default: per script, >= 15,000)"
    )
    parser.add_argument(
        "--num-seeds", type=int, nargs="+", default=[1], help="agents per run, one row each"
    )
    parser.add_argument(
        "--root", action="append", help="folder holding the scripts (repeatable; default: here)"
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.one:
        root, num_seeds = cli.one[0], int(cli.one[1])
        script = cli.scripts[0]
        run_one(root, script, DEFAULTS[script][0], cli.steps or DEFAULTS[script][1], num_seeds)
        sys.exit()
    roots = cli.root or [ROOT]
    scripts = cli.scripts or [s for s in DEFAULTS if os.path.exists(os.path.join(ROOT, f"{s}.py"))]
    header = f"{'root':12s} {'script':22s} {'env':22s} {'N':>4s} {'agent-st/s':>10s}"
    print(f"{header} {'env-only':>9s} {'ratio':>6s}", flush=True)
    run_rows(os.path.abspath(__file__), scripts, cli.num_seeds, roots, cli.steps)
