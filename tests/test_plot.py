"""plot.py on real runs and on synthetic events, against a NumPy computation written here."""

import os

import numpy as np
import pytest
from conftest import assert_one_line_error, run_script

import plot


def make_event_runs(folder, runs):
    """runs: {run name: [(step, value), ...]} -> TensorBoard event files under folder/runs."""
    from tensorboardX import SummaryWriter

    for name, events in runs.items():
        writer = SummaryWriter(os.path.join(folder, "runs", name))
        for step, value in events:
            writer.add_scalar("charts/episodic_return", value, step)
        writer.close()


def test_plot_of_real_runs_of_two_scripts_with_two_seeds(tmp_path):
    for script in ("stream_q.py", "stream_sarsa.py"):
        for seed in ("0", "1"):
            result = run_script(script, "--total-steps", "3000", "--seed", seed, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
    runs = sorted(os.listdir(tmp_path / "runs"))
    groups = {
        plot.read_run(str(tmp_path / "runs" / run), "charts/episodic_return")[:2] for run in runs
    }
    assert groups == {("CartPole-v1", "stream_q"), ("CartPole-v1", "stream_sarsa")}

    result = run_script("plot.py", "--out", "curves.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 runs, 1 envs" in result.stdout
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[:2] == (360, 500)  # one panel, 5 x 3.6 inches at 100 dpi
    colours = np.unique(image[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 20 and (image[..., :3] < 0.9).any(axis=-1).mean() > 0.01  # not blank

    result = run_script("plot.py", "--x", "wall", "--out", "wall.png", "--pdf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wall.png").stat().st_size > 10_000 and (tmp_path / "wall.pdf").exists()


@pytest.mark.parametrize("flags, size", [([], (720, 1500)), (["--columns", "2"], (720, 1000))])
def test_panels_per_row(flags, size, tmp_path):
    """Four envs: 3 columns by default (two rows, one panel left blank), 2 x 2 with --columns 2."""
    make_event_runs(tmp_path, {f"Env{i}-v0__algo__0__1": [(1, 1.0), (2, 2.0)] for i in range(4)})
    result = run_script("plot.py", "--out", "grid.png", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "grid.png").shape[:2] == size  # 5 x 3.6 in a panel


def test_binning_mean_and_standard_error_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    runs = {
        f"Env-v0__algo__{seed}__1": sorted(
            (int(s), float(rng.normal(s / 10, 3)))
            for s in rng.choice(np.arange(1, 100), 25, replace=False)
        )
        for seed in range(3)
    }
    runs["Env-v0__algo__3__1"] = [(5, 1.0), (95, 2.0)]  # a run with empty windows in between
    make_event_runs(tmp_path, runs)
    loaded = [
        plot.read_run(str(tmp_path / "runs" / name), "charts/episodic_return")
        for name in sorted(runs)
    ]
    assert all(run[:2] == ("Env-v0", "algo") for run in loaded)
    centres, mean, stderr, n = plot.bin_runs(
        [(steps, values) for _, _, steps, _, values in loaded], 10
    )

    window, expected, last = 10, [], {}
    for k in range(1, 11):  # window k is ((k-1)*10, k*10]
        per_run = []
        for name, events in runs.items():
            inside = [v for s, v in events if (k - 1) * window < s <= k * window]
            if inside:
                last[name] = np.mean(inside)
            if name in last:  # a window without an episode end keeps the run's last value
                per_run.append(last[name])
        if per_run:
            sem = np.std(per_run, ddof=1) / np.sqrt(len(per_run)) if len(per_run) > 1 else 0.0
            expected.append(((k - 0.5) * window, np.mean(per_run), sem, len(per_run)))
    expected = np.array(expected)
    np.testing.assert_allclose(centres, expected[:, 0])
    np.testing.assert_allclose(mean, expected[:, 1], rtol=1e-6)
    np.testing.assert_allclose(stderr, expected[:, 2], rtol=1e-6)
    np.testing.assert_array_equal(n, expected[:, 3])
    assert n[4] == 4  # the sparse run carries its first value forward


def test_default_window_is_a_round_fraction_of_the_run():
    assert plot.nice_window(50_000) == 1000
    assert plot.nice_window(200_000) == 5000
    assert plot.nice_window(5_000_000) == 100_000


@pytest.mark.parametrize(
    "setup,flags,words",
    [
        ("empty", [], ["no TensorBoard runs", "--runs-dir"]),
        ("runs", ["--tag", "charts/nope"], ["charts/nope"]),
        (
            "runs",
            ["--out", "no/such/folder/curves.png"],
            ["cannot write", "--out", "no/such/folder/curves.png"],
        ),
        ("runs", ["--x", "time"], ["--x", "step", "wall"]),
        ("runs", ["--columns", "0"], ["--columns", "at least 1"]),
    ],
)
def test_errors_are_one_line(setup, flags, words, tmp_path):
    (tmp_path / "runs").mkdir()
    if setup == "runs":
        make_event_runs(tmp_path, {"Env-v0__algo__0__1": [(1, 1.0), (2, 2.0)]})
    result = run_script("plot.py", *flags, cwd=tmp_path)
    assert_one_line_error(result, *words)
