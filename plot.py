"""Learning curves from the TensorBoard logs the stream-x scripts write.

    python plot.py                                   # every run under runs/ -> learning_curves.png
    python plot.py --x wall --out wall.png --pdf     # against wall-clock seconds, PNG and PDF
    python plot.py --runs-dir grid --columns 2       # four envs as 2 x 2 panels

Runs are grouped by env (one panel each) and by script (one line each, from the run's logged
hyperparameters, else from its name runs/{env}__{exp_name}__{seed}__{time}). Each run's episodes
are binned into windows of --window steps (or seconds): the run's value in a window is the mean
return of the episodes that ended in it; the line is the mean over runs, the band ± one standard
error across runs, and the legend gives the number of runs (seeds).
"""

import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import matplotlib
import matplotlib.ticker
import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding one subfolder of TensorBoard events per run"""
    out: str = "learning_curves.png"
    """where to write the PNG"""
    pdf: bool = False
    """also write a PDF next to the PNG (same name, .pdf)"""
    tag: str = "charts/episodic_return"
    """scalar tag to plot"""
    x: str = "step"
    """x axis: step (global step) or wall (seconds since the run started)"""
    columns: int = 3
    """panels per row (at most; fewer when there are fewer envs)"""
    window: Optional[float] = None
    """bin width in steps (or seconds with --x wall); default: about 1/40 of the longest run in each
    panel"""


def read_run(path: str, tag: str):
    """One run's events: (env, script, steps, wall seconds since start, values), the last three
    float64 arrays of equal length; None if the run has no events of tag. env and script come from
    the logged hyperparameters, else from the run name {env}__{exp_name}__{seed}__{time}."""
    accumulator = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return None
    name_parts = os.path.basename(path).rsplit("__", 3)
    hyperparameters = {}
    if "hyperparameters/text_summary" in accumulator.Tags()["tensors"]:
        table = (
            accumulator.Tensors("hyperparameters/text_summary")[0]
            .tensor_proto.string_val[0]
            .decode()
        )
        hyperparameters = dict(
            row.strip("|").split("|", 1) for row in table.splitlines()[2:] if row.count("|") >= 3
        )
    env = hyperparameters.get("env", name_parts[0])
    script = hyperparameters.get(
        "exp_name", name_parts[1] if len(name_parts) == 4 else name_parts[0]
    )
    events = accumulator.Scalars(tag)
    steps = np.array([e.step for e in events], np.float64)
    wall = np.array([e.wall_time for e in events], np.float64) - accumulator.FirstEventTimestamp()
    return env, script, steps, wall, np.array([e.value for e in events], np.float64)


def nice_window(longest: float) -> float:
    """A round bin width (1, 2 or 5 times a power of ten) near longest / 40."""
    target = max(longest / 40, 1e-9)
    power = 10 ** math.floor(math.log10(target))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda w: abs(math.log(w / target)))


def bin_runs(runs, window: float):
    """runs: list of (x, values) float arrays, one pair per run; window > 0 (x units).
    Window k covers ((k-1)*window, k*window]; a run's value there is the mean of its values whose
    x falls in it or, if none does, its value in the last window before that had one (a long
    episode spans several windows); before its first value a run does not count. Returns (centres,
    mean over runs, standard error across runs (ddof 1, 0 for one run), number of runs) as float64
    arrays over the windows from the first with a value to the last."""
    per_run = []
    for x, values in runs:
        bins = np.maximum(np.ceil(x / window), 1).astype(int)
        per_run.append({b: values[bins == b].mean() for b in np.unique(bins)})
    windows = range(min(min(run) for run in per_run), max(max(run) for run in per_run) + 1)
    for run in per_run:  # carry each run's last value forward through the windows without one
        for b in range(min(run) + 1, windows[-1] + 1):
            run.setdefault(b, run[b - 1])
    table = [[run[b] for run in per_run if b in run] for b in windows]
    mean = np.array([np.mean(v) for v in table])
    n = np.array([len(v) for v in table])
    stderr = np.array([np.std(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in table])
    return (np.array(windows) - 0.5) * window, mean, stderr, n


def fail(message: str):
    """Exit with a one-line error on stderr."""
    sys.exit(f"error: {message}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.x not in ("step", "wall"):
        fail(f"--x must be one of step, wall; got {args.x!r}")
    if args.columns < 1:
        fail(f"--columns must be at least 1, got {args.columns}")
    if args.window is not None and args.window <= 0:
        fail(f"--window must be positive, got {args.window}")
    folders = sorted(
        root for root, _, files in os.walk(args.runs_dir) if any("tfevents" in f for f in files)
    )
    if not folders:
        fail(f"no TensorBoard runs under --runs-dir {args.runs_dir}")
    panels = defaultdict(lambda: defaultdict(list))  # env -> script -> [(x, values)]
    for folder in folders:
        run = read_run(folder, args.tag)
        if run is not None:
            env, script, steps, wall, values = run
            panels[env][script].append((steps if args.x == "step" else wall, values))
    if not panels:
        fail(f"none of the {len(folders)} runs under {args.runs_dir} has the tag {args.tag!r}")

    columns = min(args.columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, (env, scripts) in zip(axes.flat, sorted(panels.items())):
        window = args.window or nice_window(
            max(x.max() for runs in scripts.values() for x, _ in runs)
        )
        for script, runs in sorted(scripts.items()):
            centres, mean, stderr, _ = bin_runs(runs, window)
            (line,) = ax.plot(
                centres, mean, label=f"{script} ({len(runs)} seed{'s' * (len(runs) > 1)})"
            )
            ax.fill_between(
                centres,
                mean - stderr,
                mean + stderr,
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        ax.set_title(env)
        ax.set_xlabel("global step" if args.x == "step" else "wall-clock seconds")
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 200k, not 200000
        ax.set_ylabel(args.tag.split("/")[-1].replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    outputs = [args.out] + ([os.path.splitext(args.out)[0] + ".pdf"] if args.pdf else [])
    for path in outputs:
        try:
            fig.savefig(path, dpi=100)
        except OSError as e:
            fail(f"cannot write --out {path}: {e.strerror or e}")
    count = sum(len(r) for s in panels.values() for r in s.values())
    print(f"wrote {', '.join(outputs)}: {count} runs, {len(panels)} envs")
