"""Shared test helpers: running a script as a user would, reading its TensorBoard logs, and
independent NumPy references of the networks (float64)."""

import glob
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Test-only envs, registered by a launcher that then runs a script unchanged (runpy).
LAUNCHER = '''
import os, runpy, sys
import gymnasium as gym
import numpy as np

class TestEnv(gym.Env):
    """nan_after: reward becomes NaN after that many steps (only in the env first reset with
    nan_seed, if given); image: an observation shape (uint8)."""
    def __init__(self, continuous=False, image=None, nan_after=None, nan_seed=None):
        self.observation_space = (gym.spaces.Box(0, 255, image, np.uint8) if image
                                  else gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
        self.action_space = (gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous
                             else gym.spaces.Discrete(2))
        self.nan_after, self.nan_seed, self.t, self.seed = nan_after, nan_seed, 0, None
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.seed = seed if self.seed is None else self.seed
        return self.observe(), {}
    def observe(self):  # from the env's own generator, which reset(seed=...) seeds
        box = self.observation_space
        return self.np_random.uniform(box.low, box.high).astype(box.dtype)
    def step(self, action):
        self.t += 1
        nan = (self.nan_after is not None and self.t > self.nan_after
               and self.nan_seed in (None, self.seed))
        reward = float("nan") if nan else 1.0
        return self.observe(), reward, self.t % 20 == 0, False, {}

for name, kwargs in [("Test/Clean-v0", dict()), ("Test/Nan-v0", dict(nan_after=100)),
                     ("Test/NanSeed1-v0", dict(nan_after=100, nan_seed=1)),
                     ("TestNanContinuous-v0", dict(continuous=True, nan_after=100)),
                     ("TestNanContinuousSeed1-v0", dict(continuous=True, nan_after=100,
                                                        nan_seed=1)),
                     ("Test/CleanContinuous-v0", dict(continuous=True)),
                     ("TestImage-v0", dict(image=(8, 8, 3))),
                     ("TestImageContinuous-v0", dict(image=(8, 8, 3), continuous=True)),
                     ("TestNanMinAtar-v0", dict(image=(10, 10, 4), nan_after=100))]:
    gym.register(name, entry_point=TestEnv, kwargs=kwargs, max_episode_steps=1000)

class SeedlessEnv(gym.Env):
    """The same observation whatever the seed; reward 1 a step; the episode ends when action 1 is
    taken."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}
    def step(self, action):
        return np.zeros(3, np.float32), 1.0, int(action) == 1, False, {}

gym.register("Test/Seedless-v0", entry_point=SeedlessEnv, max_episode_steps=1000)

class FakeAle(gym.Env):
    """An ALE game for AtariPreprocessing: 3 lives, one lost every 40 frames, reward 1 per frame
    (NaN after nan_after frames); counts its resets."""
    observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
    action_space = gym.spaces.Discrete(4)
    _frameskip, resets, frame = 1, 0, 0
    def __init__(self, nan_after=None):
        # AtariPreprocessing reads unwrapped.ale
        self.ale, self.nan_after, self.frames = self, nan_after, 0
    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]
    def lives(self):
        return 3 - self.frame // 40
    def getScreenGrayscale(self, out):
        out[:] = self.frame
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        FakeAle.resets += 1
        self.frame = 0
        return np.zeros((210, 160, 3), np.uint8), {"lives": self.lives()}
    def step(self, action):
        self.frame, self.frames = self.frame + 1, self.frames + 1
        nan = self.nan_after is not None and self.frames > self.nan_after
        reward, info = float("nan") if nan else 1.0, {"lives": self.lives()}
        return np.zeros((210, 160, 3), np.uint8), reward, self.lives() == 0, False, info

gym.register("TestAle-v0", entry_point=FakeAle)
gym.register("TestNanAle-v0", entry_point=FakeAle, kwargs=dict(nan_after=400))

# RECORD_CALLS=FILE: pickle, for every call of a jitted function, the arguments after the first (the
# state, or the keys), its packed `out` (None for start) and the returned state's field RECORD_FIELD
# (if set), as NumPy arrays, start's whole state, and the number of TestAle resets, to FILE
calls, outs, fields, started = [], [], [], []
if os.environ.get("RECORD_CALLS"):
    import flax.serialization
    import jax
    jit = jax.jit
    def recording_jit(fun, **kwargs):
        jitted = jit(fun, **kwargs)
        def call(*args):
            calls.append([np.array(a) for a in args[1:]])
            result = jitted(*args)  # start: the state; train_step: (state, out)
            state, out = (result, None) if hasattr(result, "_fields") else result
            outs.append(None if out is None else np.array(out))
            if out is None:  # start: the whole state it returns, as flax's state dict
                started.append(jax.tree.map(np.array, flax.serialization.to_state_dict(state)))
            if os.environ.get("RECORD_FIELD"):
                fields.append(np.array(getattr(state, os.environ["RECORD_FIELD"])))
            return result
        return call
    jax.jit = recording_jit
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    if os.environ.get("RECORD_CALLS"):
        import pickle
        with open(os.environ["RECORD_CALLS"], "wb") as f:
            recorded = {"calls": calls, "outs": outs, "fields": fields, "started": started,
                        "resets": FakeAle.resets}
            pickle.dump(recorded, f)
'''


def run_script(script, *flags, cwd, launcher=False, timeout=900, extra_env=None):
    """Run `python SCRIPT FLAGS` in cwd; returns the CompletedProcess (text)."""
    path = script if os.path.isabs(script) else os.path.join(ROOT, script)
    command = [sys.executable, path, *flags]
    if launcher:
        with open(os.path.join(cwd, "launcher.py"), "w") as f:
            f.write(LAUNCHER)
        command = [sys.executable, os.path.join(cwd, "launcher.py"), path, *flags]
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(extra_env or {}))
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def load_run(run):
    """({tag: [(step, value), ...]}, EventAccumulator) of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(run)
    accumulator.Reload()
    scalars = {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
    return scalars, accumulator


def read_scalars(cwd):
    """({tag: [(step, value), ...]}, EventAccumulator) of the single run under cwd/runs."""
    (run,) = glob.glob(os.path.join(cwd, "runs", "*"))
    return load_run(run)


def read_all_scalars(cwd):
    """{seed: {tag: [(step, value), ...]}} of every run under cwd/runs, by the seed in its name
    (runs/{env}__{exp_name}__{seed}__{time})."""
    runs = glob.glob(os.path.join(cwd, "runs", "*"))
    return {int(os.path.basename(run).split("__")[2]): load_run(run)[0] for run in runs}


def assert_one_line_error(result, *words):
    """Non-zero exit, no traceback, one 'error:' line on stderr that contains every word."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def np_layer_norm(x, axes=None):
    """LayerNorm without scale or bias over the whole tensor (all axes), eps 1e-5, biased
    variance."""
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)


def np_mlp(layers, x):
    """NumPy forward of dense -> LayerNorm -> leaky_relu(0.01) hidden layers and linear heads.
    layers: list of (kernel, bias) for the hidden layers; returns the last hidden activation."""
    for kernel, bias in layers:
        x = np_layer_norm(x @ kernel + bias)
        x = np.where(x > 0, x, 0.01 * x)
    return x


def numeric_grad(f, params, h=1e-5):
    """Central differences of scalar f(params) w.r.t. every entry of a dict of float64 arrays."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            value[index] = old + h
            plus = f(params)
            value[index] = old - h
            minus = f(params)
            value[index] = old
            grad[index] = (plus - minus) / (2 * h)
        grads[name] = grad
    return grads


def np_obgd(params, trace, grads, delta, reset, kappa, gamma, lamda, lr=1.0):
    """NumPy ObGD (Elsayed et al. 2024, Algorithm 3) over dicts of arrays, in the paper's signs:
    grads is the gradient of the value (not of a loss) and w <- w + a' δ z. Returns (params, trace,
    step size a')."""
    trace = {k: gamma * lamda * trace[k] + grads[k] for k in params}
    z_sum = sum(np.abs(z).sum() for z in trace.values())
    m = lr * kappa * max(abs(delta), 1.0) * z_sum
    step = lr / max(m, 1.0)
    params = {k: params[k] + step * delta * trace[k] for k in params}
    if reset:
        trace = {k: np.zeros_like(z) for k, z in trace.items()}
    return params, trace, step


def to_np(params, unravel=None):
    """flax {'params': {'Dense_0': {'kernel', 'bias'}}}, or a flat weight vector and its unravel
    (as the scripts keep them), -> {'Dense_0/kernel': float64 array}."""
    params = params if unravel is None else unravel(params)
    return {
        f"{layer}/{name}": np.array(v, np.float64)
        for layer, d in params["params"].items()
        for name, v in d.items()
    }


def from_np(flat, ravel=False):
    """The inverse of to_np: {'Dense_0/kernel': array} -> flax params of float32 arrays, or with
    ravel, the flat float32 vector the scripts keep."""
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    out = {}
    for key, value in flat.items():
        layer, name = key.split("/")
        out.setdefault(layer, {})[name] = jnp.asarray(value, jnp.float32)
    return ravel_pytree({"params": out})[0] if ravel else {"params": out}


def record_run(script, *flags, cwd, field=None, check=True):
    """Run script through the launcher with RECORD_CALLS (and RECORD_FIELD=field); returns the
    recorded {"calls", "outs", "fields", "resets"} and the run's "returncode". With check, fails
    the test if the run fails."""
    import pickle

    record = os.path.join(cwd, "record.pkl")
    extra_env = {"RECORD_CALLS": record, **({"RECORD_FIELD": field} if field else {})}
    result = run_script(script, *flags, cwd=cwd, launcher=True, extra_env=extra_env)
    assert result.returncode == 0 or not check, result.stderr
    with open(record, "rb") as f:
        return dict(pickle.load(f), returncode=result.returncode)


def unpack(module, out):
    """module.StepOutput of train_step's packed out (..., fields): the action first (one entry, or
    action_dim of them), then one entry for each other field, in the order the NamedTuple names."""
    out = np.asarray(out)
    rest = len(module.StepOutput._fields) - 1
    action = out[..., :-rest]
    action = action[..., 0] if action.shape[-1] == 1 else action
    return module.StepOutput(action, *np.moveaxis(out[..., -rest:], -1, 0))
