"""Where one loop step's microseconds go, for each script at each number of agents.

    python tests/profile_step.py                              # every script, 1 and 8 agents
    python tests/profile_step.py stream_q_minatar --num-seeds 1 8 --root ../old --root .

Each (root, script, num-seeds) gets its own process. It runs the script as
`python SCRIPT --env ENV --total-steps N --num-seeds K` would, in a temporary folder, with three
timers slipped in: around each env's step and reset (`RecordEpisodeStatistics`, every script's
outermost wrapper), around gymnasium's `SyncVectorEnv.step`, and around the jitted step (the one
`jax.jit` call with `donate_argnums=0`). Past the first 2,000 steps (compilation and warm-up), a
step's wall time splits into:

    env          the N envs' own steps and resets
    vector       SyncVectorEnv.step less those (info merging, copies)
    python       the rest of the loop: numpy, the outputs, logging (stderr is not a terminal,
                 so no progress bar), and the timers themselves
    call         the cost of any jitted call with the step's arguments and outputs: dispatch,
                 argument checks, host transfers. Timed apart, after the run, as an empty jitted
                 function that takes the same (donated) state and inputs and returns them.
    compute      the jitted step's time in the run less that: XLA's compute, and whatever the
                 run's cold caches add to the call

All in µs per loop step (one step of each of the N agents). Not a pytest test: time it on a
quiet core (`taskset -c 0`) and compare rows of one run only.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_sps import DEFAULTS, ROOT, run_as_user, run_rows  # noqa: E402

WARMUP = 2_000  # steps left out of the timed span


def profile_one(root: str, script: str, env_id: str, steps: int, num_seeds: int) -> None:
    """In this process: run the script with its timers, then time its compiled step; one row."""
    import gymnasium as gym
    import jax

    root = os.path.abspath(root)
    path = os.path.join(root, f"{script}.py")

    timers = {"env": 0.0, "vector": 0.0, "call": 0.0, "calls": 0, "start": None, "end": None}
    captured = {}
    statistics, vector_step = gym.wrappers.RecordEpisodeStatistics, gym.vector.SyncVectorEnv.step
    env_step, env_reset = statistics.step, statistics.reset

    def timed(step, key):  # step, its time added to timers[key] once the timed span started
        def timed_step(*args, **kwargs):
            begin = time.perf_counter()
            result = step(*args, **kwargs)
            if timers["start"] is not None:
                timers[key] += time.perf_counter() - begin
            return result

        return timed_step

    jit = jax.jit

    def timed_jit(fn, **kwargs):
        compiled = jit(fn, **kwargs)
        if kwargs.get("donate_argnums") != 0:
            return compiled

        def call(state, *inputs):
            begin = time.perf_counter()
            new_state, out = compiled(state, *inputs)
            end = time.perf_counter()
            timers["calls"] += 1
            if timers["calls"] == WARMUP:  # the timed span starts after this call
                timers["start"] = end
            elif timers["start"] is not None:
                timers["call"] += end - begin
                timers["end"] = end
            captured.update(inputs=inputs, state=new_state, out=out)
            return new_state, out

        return call

    statistics.step, statistics.reset = timed(env_step, "env"), timed(env_reset, "env")
    gym.vector.SyncVectorEnv.step = timed(vector_step, "vector")
    jax.jit = timed_jit
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            run_as_user(path, env_id, steps, num_seeds)
    finally:
        statistics.step, statistics.reset = env_step, env_reset
        gym.vector.SyncVectorEnv.step, jax.jit = vector_step, jit

    # the call alone: an empty jitted function of the same arguments (donated, and transferred
    # though unused) and outputs
    empty = jit(
        lambda state, *inputs: (state, jax.numpy.zeros_like(captured["out"])),
        donate_argnums=0,
        keep_unused=True,
    )
    state, inputs = captured["state"], captured["inputs"]
    for _ in range(100):  # compiled, warmed
        state, out = empty(state, *inputs)
    begin = time.perf_counter()
    for _ in range(2_000):
        state, out = empty(state, *inputs)
    empty_us = (time.perf_counter() - begin) / 2_000 * 1e6

    timed_steps = timers["calls"] - WARMUP
    total_us = (timers["end"] - timers["start"]) / timed_steps * 1e6
    env_us, vector_us, call_us = (timers[k] / timed_steps * 1e6 for k in ("env", "vector", "call"))
    parts = [
        env_us,
        vector_us - env_us,
        total_us - vector_us - call_us,
        empty_us,
        call_us - empty_us,
        total_us,
    ]
    row = f"{os.path.basename(root):10s} {script:22s} {num_seeds:3d} "
    row += " ".join(f"{part:9.0f}" for part in parts)
    print(f"{row} {num_seeds * 1e6 / total_us:10.0f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scripts", nargs="*", help="scripts to profile (default: all)")
    parser.add_argument("--steps", type=int, help="steps per agent (default: per script)")
    parser.add_argument("--num-seeds", type=int, nargs="+", default=[1, 8], help="agents per run")
    parser.add_argument("--root", action="append", help="folder holding the scripts (repeatable)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.steps is not None and cli.steps <= WARMUP:
        parser.error(f"--steps must be more than the {WARMUP:,} warm-up steps")
    if cli.one:
        script = cli.scripts[0]
        steps = cli.steps or DEFAULTS[script][1]
        profile_one(cli.one[0], script, DEFAULTS[script][0], steps, int(cli.one[1]))
        sys.exit()
    print(
        f"{'root':10s} {'script':22s} {'N':>3s} "
        + " ".join(
            f"{name:>9s}" for name in ("env", "vector", "python", "call", "compute", "total µs")
        )
        + f" {'agent-st/s':>10s}",
        flush=True,
    )
    tool = os.path.abspath(__file__)
    run_rows(tool, cli.scripts or list(DEFAULTS), cli.num_seeds, cli.root or [ROOT], cli.steps)
