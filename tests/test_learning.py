"""Learning checks: real runs as a user would start them, several seeds in one process
(--num-seeds), judged over the seeds from their TensorBoard logs. A streaming method is judged
over seeds: one seed passes or fails with float rounding (another CPU, jaxlib or formula).
Marked slow (about 6 minutes on 2 cores); CI runs them."""

import numpy as np
import pytest
from conftest import read_all_scalars, run_script


def returns_per_seed(folder):
    """{seed: [(global_step, episodic_return), ...]} of every run under folder/runs."""
    return {
        seed: scalars["charts/episodic_return"]
        for seed, scalars in read_all_scalars(folder).items()
    }


def mean_return(returns, low, high):
    """Mean return of the episodes that ended in (low, high]."""
    return np.mean([value for step, value in returns if low < step <= high])


def cartpole_over_10_seeds(tmp_path, script, *flags):
    """({seed: best return}, {seed: mean return over (20k, 30k]}) of a 30k-step run of seeds 0-9."""
    flags = ["--env", "CartPole-v1", "--total-steps", "30000", "--num-seeds", "10", *flags]
    result = run_script(script, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    returns = returns_per_seed(tmp_path)
    assert sorted(returns) == list(range(10))
    best = {seed: max(value for _, value in r) for seed, r in returns.items()}
    return best, {seed: mean_return(r, 20_000, 30_000) for seed, r in returns.items()}


@pytest.mark.slow
@pytest.mark.parametrize("script", ["stream_q.py", "stream_sarsa.py", "stream_ac_discrete.py"])
def test_solves_cartpole_within_30k_steps_over_10_seeds(script, tmp_path):
    # The bars are ones the PyTorch reference meets on seeds 0-9 at 30k steps (measured 2026-12-01):
    # it reaches 1,000 on Q 6/10, SARSA 10/10, AC 6/10 seeds, and its median over seeds of the mean
    # return over (20k, 30k] is Q 1,351, SARSA 10,000, AC 2,402. This code on the same seeds (main,
    # 2026-12-01): Q 10/10 and 1,322, SARSA 10/10 and 8,151 (a' carried across resets as in the
    # reference; 9/10 and 1,841 when picked in the reset observation), AC 10/10 and 10,000.
    best, late = cartpole_over_10_seeds(tmp_path, script)
    assert sum(value >= 1000 for value in best.values()) >= 6, best
    assert np.median(list(late.values())) >= 300, late


@pytest.mark.slow
def test_stream_ac_continuous_improves_on_halfcheetah_over_5_seeds(tmp_path):
    result = run_script(
        "stream_ac_continuous.py",
        "--env",
        "HalfCheetah-v5",
        "--total-steps",
        "100000",
        "--num-seeds",
        "5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    returns = returns_per_seed(tmp_path)
    gains = {
        seed: mean_return(r, 80_000, 100_000) - mean_return(r, 0, 10_000)
        for seed, r in returns.items()
    }
    assert len(gains) == 5 and np.mean(list(gains.values())) >= 350, gains


@pytest.mark.slow
def test_stream_q_minatar_learns_breakout_over_3_seeds(tmp_path):
    # the PyTorch reference (150k-step run): 0.5 over the first 10k steps, about 4.7 over 80k-100k
    result = run_script(
        "stream_q_minatar.py",
        "--env",
        "MinAtar/Breakout-v1",
        "--total-steps",
        "100000",
        "--num-seeds",
        "3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    late = {seed: mean_return(r, 80_000, 100_000) for seed, r in returns_per_seed(tmp_path).items()}
    assert len(late) == 3 and np.mean(list(late.values())) >= 3.5, late
