"""Stream Q(λ) on Atari: Watkins' Q(λ) with eligibility traces, ObGD and a conv net, one update per step, no
replay buffer.

Elsayed, Vasan, Mahmood 2024, "Streaming Deep Reinforcement Learning Finally Works", arXiv 2410.14606,
Algorithm "Stream Q(λ)"; reference code github.com/mohmdelsayed/streaming-drl (407dca7, stream_q_atari.py).
Preprocessing as the reference's: no-op reset (<= 30), frame skip 4 with a max over the last two frames, 84x84
grayscale, FIRE on reset, per-pixel observation normalisation, a stack of 4 normalised frames, reward scaling
without clipping; a lost life ends the episode for learning (bootstrap cut, traces zeroed) but the game is reset
only when it is over, so charts/episodic_return is the full-game score. Differences from the reference: the
frame stack is kept in the jitted step (after normalisation, which runs there), channels-last (flax's layout:
the same function up to a permutation of the inputs of the randomly initialised dense layer); running
statistics are float32; the env's action space is seeded.
"""
import ctypes
import glob
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import ale_py
import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from tensorboardX import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 0
    """seed of python, numpy, JAX and the env"""
    device: str = "cpu"
    """where JAX runs: cpu or gpu"""
    debug: bool = False
    """print one line per episode"""
    num_seeds: int = 1
    """independent agents run in this process, with seeds seed, seed+1, ..., each in its own run folder"""
    vectorization_mode: str = "sync"
    """how the agents' envs step: sync (in this process) or async (one worker process each)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save model into the `runs/{run_name}` folder"""
    load_model: str | None = None
    """a model file written by --save-model to go on from (every agent starts from it, at its global step)"""
    eval_episodes: int = 10
    """episodes evaluated after a --save-model or --load-model run (learning off, normaliser frozen)"""

    # Algorithm specific arguments
    env: str = "BreakoutNoFrameskip-v4"
    """an Atari (ALE) id: <Game>NoFrameskip-v4, or ALE/<Game>-v5 with v5's sticky actions (repeat probability 0.25)"""
    total_steps: int = 10_000_000
    """number of environment steps; one update per step"""
    gamma: float = 0.99
    """discount factor"""
    lamda: float = 0.8
    """eligibility-trace decay λ"""
    kappa: float = 2.0
    """ObGD bound: larger kappa takes smaller steps when the trace is large"""
    lr: float = 1.0
    """ObGD step size alpha"""
    hidden_size: int = 256
    """units in the dense hidden layer"""
    start_e: float = 1.0
    """starting epsilon for exploration"""
    end_e: float = 0.01
    """final epsilon for exploration"""
    exploration_fraction: float = 0.05
    """fraction of total-steps over which epsilon decays linearly from start-e to end-e"""


class FireOnReset(gym.Wrapper):
    """Press FIRE after every reset, for games that wait for it (Breakout, ...)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        return self.env.reset(**kwargs) if terminated or truncated else (obs, info)


def make_env(env_id: str, video_folder: str | None = None) -> gym.Env:
    """ALE env (its own frame skip off) -> no-op reset (<= 30), frame skip 4 with max-pool, 84x84
    grayscale -> FIRE on reset -> full-game episode statistics; with a video_folder, gymnasium's
    RecordVideo films games 0, 1, 8, 27, ... into it. Observations (84, 84) uint8; info["lives"]
    gives the lives left. Raises gym.error.Error for an id that is not an ALE env."""
    gym.register_envs(ale_py)
    skip_off = {"frameskip": 1} if gym.spec(env_id).kwargs.get("frameskip", 1) != 1 else {}  # v5 ids skip 4
    env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_folder else {}), **skip_off)
    if not hasattr(env.unwrapped, "ale"):
        raise gym.error.Error(f"{env_id} is not an Atari (ALE) env; try ALE/Breakout-v5 or BreakoutNoFrameskip-v4")
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireOnReset(env)
    if video_folder:
        env = gym.wrappers.RecordVideo(env, video_folder)
    return gym.wrappers.RecordEpisodeStatistics(env)


def leaky_relu(x):
    """leaky_relu(0.01) with torch's gradient 0.01 at 0 (jax.nn's is 1): sparse init with fan_in <= 9
    zeroes every input weight, so first-layer units start at exactly 0 (SPEC §2)."""
    return jnp.where(x > 0, x, 0.01 * x)


def sparse_init(sparsity: float = 0.9):
    """Flax kernel initialiser (reference sparse_init.py; paper §3): uniform in ±1/sqrt(fan_in), then exactly
    ceil(sparsity * fan_in) inputs of each output unit zeroed; fan_in = prod(shape[:-1]), dense or conv."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        key_w, key_p = jax.random.split(key)
        kernel = jax.random.uniform(key_w, (fan_in, fan_out), dtype, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        # ranks of uniform noise: a random permutation of the inputs per output unit
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key_p, (fan_in, fan_out)), axis=0), axis=0)
        return (kernel * (ranks >= math.ceil(sparsity * fan_in))).reshape(shape)

    return init


class QNetwork(nn.Module):
    """frames (..., 84, 84, 4) float32 -> Q-values (..., n_actions) float32: conv 32 8x8 stride 5,
    conv 64 4x4 stride 3, conv 64 3x3 stride 2 (valid: 16x16, 5x5, 2x2 maps), each -> LayerNorm
    over its whole map -> leaky_relu; flatten (256) -> dense -> LayerNorm -> leaky_relu(0.01) ->
    dense. LayerNorms have no scale or bias. Source: reference stream_q_atari.py (its strides)."""

    n_actions: int
    hidden_size: int = 256

    @nn.compact
    def __call__(self, x):
        for features, size, stride in ((32, 8, 5), (64, 4, 3), (64, 3, 2)):
            x = nn.Conv(features, (size, size), (stride, stride), padding="VALID", kernel_init=sparse_init())(x)
            x = leaky_relu(nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False, reduction_axes=(-3, -2, -1))(x))
        x = x.reshape(*x.shape[:-3], -1)
        x = nn.Dense(self.hidden_size, kernel_init=sparse_init())(x)
        x = leaky_relu(nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False)(x))
        return nn.Dense(self.n_actions, kernel_init=sparse_init())(x)


class RunningStats(NamedTuple):
    """Welford statistics of a stream, float32 (reference normalization_wrappers.py): the first sample sets
    the mean; the variance is unbiased (ddof 1), and 1 while fewer than 2 samples were seen."""

    mean: jax.Array
    p: jax.Array  # sum of squared deviations from the mean
    count: jax.Array

    def update(self, x):
        count = self.count + 1
        mean = self.mean + (x - self.mean) / count
        return RunningStats(mean, self.p + (x - self.mean) * (x - mean), count)

    def var(self):
        return jnp.where(self.count < 2, 1.0, self.p / jnp.maximum(self.count - 1, 1))

    def normalize(self, x):
        return (x - self.mean) / jnp.sqrt(self.var() + 1e-8)


def observe(obs_stats: RunningStats, obs):
    """Raw frame (84, 84) -> (obs_stats updated with it FIRST, then the frame normalised per pixel, float32);
    no time feature on Atari."""
    obs_stats = obs_stats.update(obs)
    return obs_stats, obs_stats.normalize(obs)


def scale_reward(reward_stats: RunningStats, reward_trace, reward, done, gamma: float):
    """The reference's ScaleReward: u <- gamma * u * (1 - done) + r, Welford statistics of u, emit
    r / sqrt(var(u) + 1e-8). Returns (reward_stats, reward_trace, scaled reward), float32."""
    reward_trace = gamma * reward_trace * (1.0 - done) + reward
    reward_stats = reward_stats.update(reward_trace)
    return reward_stats, reward_trace, reward / jnp.sqrt(reward_stats.var() + 1e-8)


class ObGDState(NamedTuple):
    eligibility_trace: optax.Updates  # z, shaped like the parameters
    step_size: jax.Array | None = None  # lr / max(M, 1) of the last update, for the logs


def obgd(lr: float, gamma: float, lamda: float, kappa: float) -> optax.GradientTransformationExtraArgs:
    """The paper's overshooting-bounded gradient descent as optax; update(grads, state, delta=δ, reset=bool):
        z <- gamma*lamda*z + g;   M = lr*kappa*max(|δ|, 1)*sum|z|;   updates = -lr/max(M, 1)*δ*z;   z <- 0 if reset
    for a gradient g whose -δ*g is the TD(λ) direction."""

    def init(params):
        return ObGDState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, delta, reset, **extra_args):
        trace = jax.tree.map(lambda z, g: gamma * lamda * z + g, state.eligibility_trace, grads)
        bound = lr * kappa * jnp.maximum(jnp.abs(delta), 1.0) * sum(jnp.abs(z).sum() for z in jax.tree.leaves(trace))
        step_size = jnp.minimum(lr, lr / bound)  # = lr / max(M, 1); XLA:CPU runs this form faster (SARSA 67 vs 77 us)
        updates = jax.tree.map(lambda z: -step_size * delta * z, trace)
        return updates, ObGDState(jax.tree.map(lambda z: jnp.where(reset, 0.0, z), trace), step_size)

    return optax.GradientTransformationExtraArgs(init, update)


def linear_schedule(start_e: float, end_e: float, duration: float, t):
    """Epsilon at the t-th action (t = 1 for the first), decaying linearly over duration actions."""
    return jnp.maximum(start_e + (end_e - start_e) * t / duration, end_e)


def epsilon_greedy(q_values, key, epsilon):
    """q_values (n_actions,) float32 -> (action int32, nongreedy bool): nongreedy only if a
    random action differs from the greedy one (Watkins' Q(λ) cuts the trace only then)."""
    greedy = jnp.argmax(q_values)
    u = jax.random.uniform(key, (2,))  # one draw for both choices: the cheapest RNG call
    action = jnp.where(u[0] < epsilon, (u[1] * q_values.shape[-1]).astype(jnp.int32), greedy)
    return action, action != greedy


class AgentState(NamedTuple):
    """Everything the jitted step reads and writes; donated, so it never leaves the device."""

    params: dict  # the network's weights, Flax's dict
    opt_state: ObGDState
    obs_stats: RunningStats
    reward_stats: RunningStats
    reward_trace: jax.Array  # discounted sum of raw rewards, for reward scaling
    frames: jax.Array  # the last 4 normalised frames, oldest first, (84, 84, 4)
    action: jax.Array  # the action taken in them, int32
    nongreedy: jax.Array  # whether that action differs from argmax q, bool
    q_value: jax.Array  # q(frames, action), float32
    grads: dict  # the gradient of -q(frames, action), like params
    global_step: jax.Array  # steps taken in all, int32
    key: jax.Array  # the run's key; the action at global_step t uses fold_in(key, t)


# ALGO LOGIC: learn from the transition just seen, then act
def learn(state: AgentState, next_frames, reward, done, *, q_network, optimizer, args: Args):
    """The paper's Stream Q(λ) update on (state.frames, state.action, reward, next_frames, done); reward scaled,
    done float32 (a lost life, terminated or truncated: bootstraps through none). Returns (the state with new
    weights and trace, [δ, ObGD step size] float32)."""
    # TD ERROR with the pre-update weights; q(s, a) and g = grad of -q(s, a) were taken by act()
    next_q = q_network.apply(state.params, next_frames).max()
    delta = reward + args.gamma * next_q * (1.0 - done) - state.q_value
    # OBGD; Watkins' Q(λ) cuts the trace after a non-greedy action too
    updates, opt_state = optimizer.update(state.grads, state.opt_state, delta=delta,
                                          reset=(done > 0) | state.nongreedy)
    diagnostics = jnp.stack([delta, opt_state.step_size])
    opt_state = opt_state._replace(step_size=None)  # logged, not carried: a buffer fewer in and out of a call (3 us)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), diagnostics


def act(state: AgentState, frames, *, q_network, args: Args):
    """NEXT ACTION: epsilon-greedy in frames (84, 84, 4), at the epsilon of action global_step + 1, and from the
    same forward pass the gradient of -q(frames, action) that the next update needs (frames this large make the
    forward pass the cost: this saves one per step, 640 -> 475 us). Returns (the state acting in frames,
    [action, epsilon] float32)."""
    epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_steps,
                              state.global_step + 1)
    key = jax.random.fold_in(state.key, state.global_step)  # a fresh key per step, none to carry
    q_values, vjp = jax.vjp(lambda params: q_network.apply(params, frames), state.params)
    action, nongreedy = epsilon_greedy(q_values, key, epsilon)
    (grads,) = vjp(-jax.nn.one_hot(action, q_values.shape[-1]))
    state = state._replace(frames=frames, action=action, nongreedy=nongreedy, q_value=q_values[action], grads=grads)
    return state, jnp.stack([action, epsilon])


def train_step(state: AgentState, next_obs, reward, done, reset_obs, game_over, *, q_network, optimizer, args: Args):
    """One env step: learn from (state.frames, state.action, reward, next_obs, done), then act in the frames with
    next_obs pushed on, or reset_obs 4 times if the game is over. next_obs, reset_obs: (84, 84) float32 raw;
    reward: float32 raw (not clipped); done: bool, a life lost, terminated or truncated; game_over: bool,
    terminated or truncated (the env was reset). Returns (state, out = [action, epsilon, δ, ObGD step size]
    float32: the only host transfer)."""
    done = jnp.asarray(done, jnp.float32)
    obs_stats, norm_next_obs = observe(state.obs_stats, next_obs)
    next_frames = jnp.concatenate([state.frames[..., 1:], norm_next_obs[..., None]], axis=-1)
    reward_stats, reward_trace, reward = scale_reward(state.reward_stats, state.reward_trace, reward, done, args.gamma)
    state = state._replace(reward_stats=reward_stats, reward_trace=reward_trace, global_step=state.global_step + 1)
    state, diagnostics = learn(state, next_frames, reward, done, q_network=q_network, optimizer=optimizer, args=args)
    # after a game over, the next action is taken in the reset frame; after a lost life the game goes on
    reset_stats, norm_reset_obs = observe(obs_stats, reset_obs)
    obs_stats, frames = jax.tree.map(lambda a, b: jnp.where(game_over, a, b), (reset_stats, jnp.repeat(
        norm_reset_obs[..., None], 4, axis=-1)), (obs_stats, next_frames))
    state, out = act(state._replace(obs_stats=obs_stats), frames, q_network=q_network, args=args)
    return state, jnp.append(out, diagnostics)


def start(key, obs, saved: AgentState | None, *, q_network, optimizer, args: Args):
    """A new agent, or the saved one (--load-model: its weights, statistics and global_step), acting in 4 copies
    of the reset frame obs (84, 84) raw. Returns (state, out) as train_step does, with δ and step size 0."""
    key_init, key = jax.random.split(key)
    params = q_network.init(key_init, jnp.zeros((*obs.shape, 4)))
    zero = jnp.float32(0.0)
    state = AgentState(params, optimizer.init(params), RunningStats(jnp.zeros_like(obs), jnp.zeros_like(obs), zero),
                       RunningStats(zero, zero, zero), zero, None, None, None, None, None, jnp.int32(0), key)
    if saved is not None:
        state = state._replace(params=saved.params, obs_stats=saved.obs_stats, reward_stats=saved.reward_stats,
                               global_step=saved.global_step)
    obs_stats, norm_obs = observe(state.obs_stats, obs)
    state, out = act(state._replace(obs_stats=obs_stats), jnp.repeat(norm_obs[..., None], 4, axis=-1),
                     q_network=q_network, args=args)
    return state, jnp.append(out, jnp.zeros(2))


# the tags of out's last columns, logged as means of |.| since the last log
DIAGNOSTICS = ("losses/td_error", "charts/obgd_step_size")


def evaluate_step(state: AgentState, obs, new_episode, *, q_network, args: Args):
    """CleanRL's evaluation: epsilon-greedy with epsilon 0.05 after pushing the frame obs (84, 84) raw onto the
    stack (4 copies when new_episode: a new game), learning off, the normaliser frozen. Returns (state, action)."""
    norm_obs = state.obs_stats.normalize(obs)[..., None]
    frames = jnp.where(new_episode, jnp.repeat(norm_obs, 4, axis=-1),
                       jnp.concatenate([state.frames[..., 1:], norm_obs], axis=-1))
    key = jax.random.fold_in(state.key, state.global_step + 1)
    action, _ = epsilon_greedy(q_network.apply(state.params, frames), key, 0.05)
    return state._replace(frames=frames, global_step=state.global_step + 1), action

def fail(message: str):
    """Exit with a one-line error on stderr."""
    sys.exit(f"error: {message}")


def save_model(path: str, state: AgentState, args: Args):
    """Write one agent's AgentState with flax.serialization (msgpack), tagged with what load_model checks."""
    meta = dict(script=os.path.basename(__file__), env=args.env, hidden_size=args.hidden_size)
    with open(path, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(dict(meta, agent=flax.serialization.to_state_dict(state))))


def load_model(path: str, args: Args) -> dict:
    """The agent's state dict in a save_model file; a one-line error if the file is missing, unreadable,
    or from another script, env or network size."""
    try:
        with open(path, "rb") as f:
            saved = flax.serialization.msgpack_restore(f.read())
        meta = (saved["script"], saved["env"], saved["hidden_size"])
    except Exception as e:  # no such file, not msgpack (several kinds), or not a dict with these keys
        fail(f"--load-model {path} is not a file written by --save-model ({type(e).__name__}: {e})")
    if meta != (os.path.basename(__file__), args.env, args.hidden_size):
        fail(f"--load-model {path} holds a {meta[0]} agent for --env {meta[1]} --hidden-size {meta[2]}; this run is "
             f"{os.path.basename(__file__)} --env {args.env} --hidden-size {args.hidden_size}")
    return saved["agent"]


if __name__ == "__main__":
    args = tyro.cli(Args)
    for flag, value, ok, want in [
        ("--total-steps", args.total_steps, args.total_steps > 0 or (args.total_steps == 0 and args.load_model),
         "a positive integer (0 only with --load-model)"),
        ("--num-seeds", args.num_seeds, args.num_seeds > 0, "a positive integer"),
        ("--eval-episodes", args.eval_episodes, args.eval_episodes >= 0, "0 or more"),
        ("--vectorization-mode", args.vectorization_mode, args.vectorization_mode in ("sync", "async"),
         "sync or async"),
        ("--device", args.device, args.device in ("cpu", "gpu"), "cpu or gpu"),
    ]:
        if not ok:
            fail(f"{flag} must be {want}, got {value!r}")
    saved = load_model(args.load_model, args) if args.load_model else None
    seeds = [args.seed + i for i in range(args.num_seeds)]
    run_names = [f"{re.sub(r'[^A-Za-z0-9_.-]', '_', args.env)}__{args.exp_name}__{seed}__{int(time.time())}"
                 for seed in seeds]

    # One env per agent, made before JAX starts (async workers fork without its threads). SAME_STEP
    # autoreset: after a terminal step obs is the reset observation, info["final_obs"] the terminal one.
    def make_envs(video_folder: str | None):
        vector_env = gym.vector.AsyncVectorEnv if args.vectorization_mode == "async" else gym.vector.SyncVectorEnv
        env_fns = [partial(make_env, args.env, video_folder if i == 0 else None) for i in range(args.num_seeds)]
        return vector_env(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # async workers ignore Ctrl-C: this process stops them
    try:
        envs = make_envs(f"videos/{run_names[0]}" if args.capture_video else None)
    except gym.error.Error as e:
        fail(f"--env {args.env!r} cannot be made: {str(e).splitlines()[0]} (MinAtar games run with "
             "stream_q_minatar.py, Atari with stream_q_atari.py, dm_control with stream_ac_continuous.py)")
    interrupted = []  # Ctrl-C ends the run after the step it came in, so no library is cut off midway
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    action_space, observation_space = envs.single_action_space, envs.single_observation_space
    if not (isinstance(action_space, gym.spaces.Discrete) and isinstance(observation_space, gym.spaces.Box)
            and observation_space.shape == (84, 84)):
        fail(f"{os.path.basename(__file__)} needs a Discrete action space and (84, 84) frames; --env {args.env} has "
             f"{action_space} and observations of shape {observation_space.shape}")
    if args.device == "cpu":  # tiny nets: XLA:CPU's thread hand-offs cost more than the kernels (README, Speed)
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_cpu_enable_async_dispatch", False)  # the action is needed at once anyway
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_concurrency_optimized_scheduler=false")
        if hasattr(os, "sched_setaffinity"):  # JAX's threads stay on the core the OS started this run on
            os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})
    elif jax.default_backend() != "gpu":
        fail("--device gpu, but JAX finds no GPU here (install jax[cuda12], or use --device cpu)")
    if args.track:
        import wandb

        # monitor_gym=True breaks gymnasium 1.x's RecordVideo (wandb issue 9947): videos are logged at the end
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_names[0], monitor_gym=False, save_code=True)
    writers = [SummaryWriter(f"runs/{run_name}") for run_name in run_names]
    for writer, seed in zip(writers, seeds):
        table = "\n".join(f"|{key}|{value}|" for key, value in dict(vars(args), seed=seed).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])  # each agent's key from its own seed
    envs.action_space.seed(args.seed)
    obs, info = envs.reset(seed=seeds)
    lives = info["lives"]

    # One jitted call per env step for all agents (jax.vmap: they share the call's fixed cost) updates each
    # agent and returns its next action; the state is donated, `out` is the only host transfer. Each network's
    # weights stay Flax's dict here (conv kernels).
    kwargs = dict(q_network=QNetwork(action_space.n, args.hidden_size), args=args)
    optimizers = dict(optimizer=obgd(args.lr, args.gamma, args.lamda, args.kappa))
    step_fn = jax.jit(jax.vmap(partial(train_step, **optimizers, **kwargs)), donate_argnums=0)
    start_fn, obs = partial(start, **optimizers, **kwargs), np.asarray(obs, np.float32)
    if saved is not None:  # the saved agent in AgentState's structure, one copy per seed
        try:
            saved = flax.serialization.from_state_dict(jax.eval_shape(start_fn, keys[0], obs[0], None)[0], saved)
        except (ValueError, KeyError) as e:  # a file written by another version of this script
            fail(f"--load-model {args.load_model} does not hold this version's agent state ({e})")
        saved = jax.tree.map(lambda x: np.broadcast_to(x, (args.num_seeds, *np.shape(x))), saved)
    state, out = jax.jit(jax.vmap(start_fn))(keys, obs, saved)
    action = np.asarray(out)[:, 0].astype(np.int64)

    start_step = 0 if saved is None else int(saved.global_step[0])  # --load-model goes on from the saved step
    start_time, logged_step, diagnostic_sums = time.time(), start_step, np.zeros((args.num_seeds, len(DIAGNOSTICS)))
    try:
        for global_step in range(start_step + 1, start_step + args.total_steps + 1):
            obs, reward, terminated, truncated, info = envs.step(action)
            game_over = terminated | truncated
            done = game_over | (info["lives"] < lives)  # a lost life ends the episode for learning only
            lives = info["lives"]
            ended = np.flatnonzero(game_over)  # the agents whose env was reset in this step
            reset_obs = np.asarray(obs, np.float32)  # where a game ended, the reset frame
            next_obs = reset_obs.copy() if len(ended) else reset_obs
            for i in ended:
                next_obs[i] = info["final_obs"][i]
            state, out = step_fn(state, next_obs, reward.astype(np.float32), done, reset_obs, game_over)
            out = np.asarray(out)
            action, epsilon, diagnostics = out[:, 0].astype(np.int64), out[:, 1], out[:, -len(DIAGNOSTICS):]
            if not np.isfinite(diagnostics[:, 0]).all():  # the TD error
                i = np.flatnonzero(~np.isfinite(diagnostics[:, 0]))[0]
                fail(f"non-finite TD error at global_step={global_step} for seed {seeds[i]}; "
                     f"logs so far are in runs/{run_names[i]}")
            for i in ended:
                episodic_return, episodic_length = (float(info["final_info"]["episode"][k][i]) for k in "rl")
                writers[i].add_scalar("charts/episodic_return", episodic_return, global_step)
                writers[i].add_scalar("charts/episodic_length", episodic_length, global_step)
                writers[i].add_scalar("charts/epsilon", epsilon[i], global_step)
                if args.debug:
                    print(f"seed={seeds[i]}, global_step={global_step}, episodic_return={episodic_return:.1f}, "
                          f"episodic_length={episodic_length:.0f}, epsilon={epsilon[i]:.3f}")
            diagnostic_sums += np.abs(diagnostics)
            if global_step % 1000 == 0:
                sps = int((global_step - start_step) / (time.time() - start_time))
                for writer, means in zip(writers, diagnostic_sums / (global_step - logged_step)):
                    for tag, value in zip(("charts/SPS", *DIAGNOSTICS), (sps, *means)):
                        writer.add_scalar(tag, value, global_step)
                diagnostic_sums[:], logged_step = 0.0, global_step
            if interrupted:
                fail(f"interrupted at global_step={global_step}; logs so far are in runs/")

        if args.save_model:
            for i, run_name in enumerate(run_names):
                save_model(f"runs/{run_name}/{args.exp_name}.cleanrl_model", jax.tree.map(lambda x: x[i], state), args)
        # EVALUATION, as CleanRL's: each agent plays --eval-episodes episodes, learning off
        if args.eval_episodes and (args.save_model or args.load_model):
            envs.close()
            envs = make_envs(f"videos/{run_names[0]}-eval" if args.capture_video else None)
            eval_fn = jax.jit(jax.vmap(partial(evaluate_step, **kwargs)))
            (obs, _), new_episode, returns = envs.reset(seed=seeds), np.ones(args.num_seeds, bool), [[] for _ in seeds]
            while min(map(len, returns)) < args.eval_episodes and not interrupted:
                state, action = eval_fn(state, np.asarray(obs, np.float32), new_episode)
                obs, _, terminated, truncated, info = envs.step(np.asarray(action))
                new_episode = terminated | truncated
                for i in np.flatnonzero(new_episode):
                    returns[i].append(float(info["final_info"]["episode"]["r"][i]))
            for writer, agent_returns in zip(writers, returns):
                for idx, episodic_return in enumerate(agent_returns[: args.eval_episodes]):
                    writer.add_scalar("eval/episodic_return", episodic_return, idx)
    finally:
        envs.close()
        for writer in writers:
            writer.close()
    if args.track and args.capture_video:
        for path in sorted(glob.glob(f"videos/{run_names[0]}*/*.mp4")):
            wandb.log({"videos": wandb.Video(path)})
    print(f"finished {args.total_steps} steps of {args.num_seeds} agent(s) in {time.time() - start_time:.0f} s; "
          f"logs in runs/{run_names[0]}" + (f" and {args.num_seeds - 1} more" if args.num_seeds > 1 else ""))
