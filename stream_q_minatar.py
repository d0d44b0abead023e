"""Stream Q(λ) on MinAtar: Watkins' Q(λ) with eligibility traces and a small conv net, one
update per step, no replay buffer.

Elsayed, Vasan, Mahmood 2024, "Streaming Deep Reinforcement Learning Finally Works",
arXiv 2410.14606 (Algorithm "Stream Q(λ)"); reference code github.com/mohmdelsayed/streaming-drl
(commit 407dca7, stream_q_minatar.py). Deliberate differences from the reference:
- the (10, 10, C) observation stays channels-last (flax's layout); the conv computes the same
  function as the reference's channels-first one, and flattening in another order only permutes
  the inputs of the next, randomly initialised, dense layer;
- running statistics are float32 (the reference uses float64);
- the env is seeded on the first reset and its action space is seeded too.
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

import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import minatar.gym
import numpy as np
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
    env: str = "MinAtar/Breakout-v1"
    """MinAtar/<Game>-v1 with Game one of Asterix, Breakout, Freeway, Seaquest, SpaceInvaders"""
    total_steps: int = 5_000_000
    """number of environment steps; one update per step"""
    gamma: float = 0.99
    """discount factor"""
    lamda: float = 0.8
    """eligibility-trace decay λ"""
    kappa: float = 2.0
    """ObGD bound: larger kappa takes smaller steps when the trace is large"""
    lr: float = 1.0
    """ObGD step size alpha"""
    hidden_size: int = 128
    """units in the dense hidden layer"""
    start_e: float = 1.0
    """starting epsilon for exploration"""
    end_e: float = 0.01
    """final epsilon for exploration"""
    exploration_fraction: float = 0.2
    """fraction of total-steps over which epsilon decays linearly from start-e to end-e"""


class RenderUpscaled(gym.Wrapper):
    """MinAtar renders (10, 10, 3) floats in [0, 1]: 32x larger uint8 frames make a video one can watch."""

    def render(self):
        return (np.kron(self.env.render(), np.ones((32, 32, 1))) * 255).astype(np.uint8)


def make_env(env_id: str, video_folder: str | None = None) -> gym.Env:
    """MinAtar env (sticky actions 0.1, difficulty ramping, no time limit) with episode statistics;
    with a video_folder, gymnasium's RecordVideo films episodes 0, 1, 8, 27, ... into it."""
    if env_id.startswith("MinAtar/") and env_id not in gym.registry:
        minatar.gym.register_envs()  # minatar does not register them on import under gymnasium 1.x
    env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_folder else {}))
    if video_folder:
        env = gym.wrappers.RecordVideo(RenderUpscaled(env), video_folder)
    return gym.wrappers.RecordEpisodeStatistics(env)


def leaky_relu(x):
    """leaky_relu(0.01) with torch's gradient 0.01 at exactly 0 (jax.nn.leaky_relu's is 1): after
    sparse init a small fan_in zeroes every input weight, so first-layer units start at exactly 0."""
    return jnp.where(x > 0, x, 0.01 * x)


def sparse_init(sparsity: float = 0.9):
    """Flax kernel initializer: uniform in ±1/sqrt(fan_in), then exactly ceil(sparsity * fan_in)
    inputs of every output unit set to zero (a random permutation per unit).

    Works for dense kernels (fan_in, fan_out) and conv kernels (kh, kw, in_c, out_c), where
    fan_in = kh * kw * in_c. Source: reference sparse_init.py; Elsayed et al. 2024, Section 3.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        key_w, key_p = jax.random.split(key)
        kernel = jax.random.uniform(key_w, (fan_in, fan_out), dtype, -bound, bound)
        # a random permutation of the inputs per output unit: the ranks of uniform noise
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key_p, (fan_in, fan_out)), axis=0), axis=0)
        keep = ranks >= math.ceil(sparsity * fan_in)
        return (kernel * keep).reshape(shape)

    return init


class QNetwork(nn.Module):
    """obs (..., 10, 10, C) float32 -> Q-values (..., n_actions) float32: conv 16 3x3 valid ->
    LayerNorm over all of 8x8x16 -> leaky_relu -> flatten (1024) -> dense -> LayerNorm ->
    leaky_relu(0.01) -> dense. LayerNorms have no scale or bias. Source: reference stream_q_minatar.py."""

    n_actions: int
    hidden_size: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), padding="VALID", kernel_init=sparse_init())(x)
        x = nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False, reduction_axes=(-3, -2, -1))(x)
        x = leaky_relu(x)
        x = x.reshape(*x.shape[:-3], -1)
        x = nn.Dense(self.hidden_size, kernel_init=sparse_init())(x)
        x = nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False)(x)
        x = leaky_relu(x)
        return nn.Dense(self.n_actions, kernel_init=sparse_init())(x)


class RunningStats(NamedTuple):
    """Welford statistics of a stream: mean, sum of squared deviations p, count (float32)."""

    mean: jax.Array
    p: jax.Array
    count: jax.Array


def welford_update(stats: RunningStats, x: jax.Array) -> RunningStats:
    """Add one sample x (same shape as stats.mean) to the running statistics (Welford 1962).
    From zeros, the first sample sets the mean to x. Source: reference normalization_wrappers.py."""
    count = stats.count + 1
    mean = stats.mean + (x - stats.mean) / count
    return RunningStats(mean, stats.p + (x - stats.mean) * (x - mean), count)


def variance(stats: RunningStats) -> jax.Array:
    """Unbiased variance (ddof 1); 1 while fewer than 2 samples were seen."""
    return jnp.where(stats.count < 2, 1.0, stats.p / jnp.maximum(stats.count - 1, 1))


def normalize(stats: RunningStats, x: jax.Array) -> jax.Array:
    """(x - mean) / sqrt(var + 1e-8), elementwise."""
    return (x - stats.mean) / jnp.sqrt(variance(stats) + 1e-8)


def observe(obs_stats: RunningStats, obs):
    """Update the per-element statistics with obs FIRST, then normalise it (no time feature on
    MinAtar). Returns (obs_stats, normalised obs of obs's shape, float32)."""
    obs_stats = welford_update(obs_stats, obs)
    return obs_stats, normalize(obs_stats, obs)


def scale_reward(stats: RunningStats, reward_trace, reward, done, gamma: float):
    """Reward scaling of the reference's ScaleReward wrapper: u <- gamma * u * (1 - done) + r,
    Welford statistics of u, emit r / sqrt(var(u) + 1e-8); no mean subtraction, no clipping.
    Returns (stats, reward_trace, scaled_reward), all float32."""
    reward_trace = gamma * reward_trace * (1.0 - done) + reward
    stats = welford_update(stats, reward_trace)
    return stats, reward_trace, reward / jnp.sqrt(variance(stats) + 1e-8)


def obgd(params, eligibility_trace, grads, delta, reset, *, kappa, gamma, lamda, lr=1.0):
    """Overshooting-bounded gradient descent (ObGD), Elsayed et al. 2024, Algorithm 3.

    z <- gamma*lamda*z + g;  M = lr*kappa*max(|delta|,1)*sum|z|;  theta <- theta - lr/max(M,1)*delta*z;
    then z <- 0 where reset. params, eligibility_trace, grads: float32 vectors (or pytrees) of equal
    shapes; delta: scalar TD error; reset: scalar bool. Returns (params, eligibility_trace, the
    effective step size lr/max(M,1), float32).
    """
    eligibility_trace = jax.tree.map(lambda z, g: gamma * lamda * z + g, eligibility_trace, grads)
    z_sum = sum(jnp.abs(z).sum() for z in jax.tree.leaves(eligibility_trace))
    bound = lr * kappa * jnp.maximum(jnp.abs(delta), 1.0) * z_sum
    step_size = jnp.minimum(lr, lr / bound)  # = lr / max(M, 1); XLA:CPU runs this form faster (SARSA 67 vs 77 us)
    params = jax.tree.map(lambda w, z: w - step_size * delta * z, params, eligibility_trace)
    eligibility_trace = jax.tree.map(lambda z: jnp.where(reset, 0.0, z), eligibility_trace)
    return params, eligibility_trace, step_size


def linear_schedule(start_e: float, end_e: float, duration: float, t):
    """Epsilon at the t-th action (t = 1 for the first), decaying linearly over duration actions."""
    return jnp.maximum(start_e + (end_e - start_e) * t / duration, end_e)


class AgentState(NamedTuple):
    """Everything the jitted step reads and writes; donated, so it never leaves the device."""

    params: dict
    eligibility_trace: dict
    obs_stats: RunningStats
    reward_stats: RunningStats
    reward_trace: jax.Array  # discounted sum of raw rewards, for reward scaling
    obs: jax.Array  # normalised current observation, (10, 10, C)
    action: jax.Array  # action taken in obs, int32
    nongreedy: jax.Array  # whether that action differs from argmax q(obs), bool
    global_step: jax.Array  # steps taken in all, int32
    key: jax.Array  # the run's key; step t uses fold_in(key, t)


def epsilon_greedy(q_values, key, epsilon):
    """q_values (n_actions,) float32 -> (action int32, nongreedy bool): nongreedy only if a
    random action differs from the greedy one (Watkins' Q(λ) cuts the trace only then)."""
    greedy = jnp.argmax(q_values)
    u = jax.random.uniform(key, (2,))  # one draw for both choices: the cheapest RNG call
    action = jnp.where(u[0] < epsilon, (u[1] * q_values.shape[-1]).astype(jnp.int32), greedy)
    return action, action != greedy


# ALGO LOGIC: the first observation
def start(key, obs, saved: AgentState | None, *, q_network, args: Args):
    """Initialise the agent, or take the weights, statistics and global_step of a saved one
    (--load-model), on the reset observation obs (10, 10, C) and pick the first action.
    Returns (AgentState, out) with out = [action, epsilon, 0.0, 0.0] float32, as from train_step."""
    key_init, key = jax.random.split(key)
    if saved is None:  # a new agent: sparse-initialised weights, no statistics yet
        params = q_network.init(key_init, jnp.zeros(obs.shape))
        obs_stats = RunningStats(jnp.zeros_like(obs), jnp.zeros_like(obs), jnp.float32(0.0))
        reward_stats, global_step = RunningStats(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0)), jnp.int32(0)
    else:
        params, obs_stats, reward_stats, global_step = saved.params, saved.obs_stats, saved.reward_stats, \
            saved.global_step
    obs_stats, x = observe(obs_stats, obs)
    epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_steps, global_step + 1)
    action, nongreedy = epsilon_greedy(q_network.apply(params, x), jax.random.fold_in(key, 0), epsilon)
    state = AgentState(
        params=params,
        eligibility_trace=jax.tree.map(jnp.zeros_like, params),
        obs_stats=obs_stats,
        reward_stats=reward_stats,
        reward_trace=jnp.float32(0.0),
        obs=x,
        action=action,
        nongreedy=nongreedy,
        global_step=global_step,
        key=key,
    )
    return state, jnp.stack([action.astype(jnp.float32), epsilon, 0.0, 0.0])


# the tags of out's last columns, logged as means of |.| since the last log
DIAGNOSTICS = ("losses/td_error", "charts/obgd_step_size")


# ALGO LOGIC: one environment step
def train_step(state: AgentState, next_obs, reward, done, reset_obs, *, q_network, args: Args):
    """Learn from the transition (state.obs, state.action, reward, next_obs, done), then pick
    the action for the next observation: next_obs, or reset_obs when the episode ended.

    next_obs, reset_obs: (10, 10, C) float32 raw observations; reward: float32 raw reward;
    done: bool, terminated or truncated (the reference bootstraps through neither).
    Returns (AgentState, out) with out = [next action, its epsilon, TD error, ObGD step size] float32:
    the only host transfer.
    Equations: Elsayed et al. 2024, Algorithm "Stream Q(λ)"; reference stream_q.py.
    """
    done = jnp.asarray(done, jnp.float32)
    obs_stats, next_x = observe(state.obs_stats, next_obs)
    reward_stats, reward_trace, reward = scale_reward(state.reward_stats, state.reward_trace, reward, done, args.gamma)

    # TD error with the pre-update weights; g = grad of -q(s, a)
    def td_terms(params):
        q_values = q_network.apply(params, jnp.stack([state.obs, next_x]))  # s and s' in one pass
        return -q_values[0, state.action], q_values[1].max()

    (neg_q, next_q), grads = jax.value_and_grad(td_terms, has_aux=True)(state.params)
    delta = reward + args.gamma * next_q * (1.0 - done) + neg_q
    params, eligibility_trace, step_size = obgd(
        state.params, state.eligibility_trace, grads, delta, (done > 0) | state.nongreedy,
        kappa=args.kappa, gamma=args.gamma, lamda=args.lamda, lr=args.lr,
    )

    # after a terminal step the next action comes from the reset observation
    reset_stats, reset_x = observe(obs_stats, reset_obs)
    obs_stats = jax.tree.map(lambda a, b: jnp.where(done > 0, a, b), reset_stats, obs_stats)
    x = jnp.where(done > 0, reset_x, next_x)

    global_step = state.global_step + 1
    epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_steps, global_step + 1)
    key = jax.random.fold_in(state.key, global_step)  # a fresh key per step, no key to carry
    action, nongreedy = epsilon_greedy(q_network.apply(params, x), key, epsilon)
    state = AgentState(params, eligibility_trace, obs_stats, reward_stats, reward_trace, x, action, nongreedy,
                       global_step, state.key)
    return state, jnp.stack([action.astype(jnp.float32), epsilon, delta, step_size])


def evaluate_step(state: AgentState, obs, new_episode, *, q_network, args: Args):
    """CleanRL's evaluation policy: epsilon-greedy with epsilon 0.05 in obs (10, 10, C) raw, learning
    off and the normaliser frozen; new_episode is unused (no time feature). Returns (state, action)."""
    key = jax.random.fold_in(state.key, state.global_step + 1)
    action, _ = epsilon_greedy(q_network.apply(state.params, normalize(state.obs_stats, obs)), key, 0.05)
    return state._replace(global_step=state.global_step + 1), action


def fail(message: str):
    """Exit with a one-line error on stderr."""
    sys.exit(f"error: {message}")


def save_model(path: str, state: AgentState, args: Args):
    """Write one agent's AgentState with flax.serialization (msgpack), tagged with what load_model checks."""
    meta = dict(script=os.path.basename(__file__), env=args.env, hidden_size=args.hidden_size)
    with open(path, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(dict(meta, agent=flax.serialization.to_state_dict(state))))


def load_model(path: str, args: Args) -> dict:
    """The agent's state dict in a save_model file (flax.serialization.from_state_dict rebuilds the
    AgentState). Exits with a one-line error if the file is missing, unreadable, or from another script,
    env or network size."""
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
    if args.total_steps < 0 or (args.total_steps == 0 and not args.load_model):
        fail(f"--total-steps must be a positive integer (0 only with --load-model), got {args.total_steps}")
    if args.num_seeds <= 0:
        fail(f"--num-seeds must be a positive integer, got {args.num_seeds}")
    if args.eval_episodes < 0:
        fail(f"--eval-episodes must be 0 or more, got {args.eval_episodes}")
    if args.vectorization_mode not in ("sync", "async"):
        fail(f"--vectorization-mode must be one of sync, async; got {args.vectorization_mode!r}")
    if args.device not in ("cpu", "gpu"):
        fail(f"--device must be one of cpu, gpu; got {args.device!r}")
    saved = load_model(args.load_model, args) if args.load_model else None
    seeds = [args.seed + i for i in range(args.num_seeds)]
    run_names = [f"{re.sub(r'[^A-Za-z0-9_.-]', '_', args.env)}__{args.exp_name}__{seed}__{int(time.time())}"
                 for seed in seeds]

    # One env per agent; made before JAX starts, so async workers fork from a process without its
    # threads and are not pinned to this run's core. SAME_STEP autoreset: after a terminal step the
    # returned observation is the reset one and info["final_obs"] the terminal one.
    def make_envs(video_folder: str | None):
        vector_env = gym.vector.AsyncVectorEnv if args.vectorization_mode == "async" else gym.vector.SyncVectorEnv
        env_fns = [partial(make_env, args.env, video_folder if i == 0 else None) for i in range(args.num_seeds)]
        return vector_env(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # async workers ignore Ctrl-C: this process stops them
    try:
        envs = make_envs(f"videos/{run_names[0]}" if args.capture_video else None)
    except gym.error.Error as e:
        hint = " (MinAtar games run with stream_q_minatar.py, Atari with stream_q_atari.py, dm_control with " \
               "stream_ac_continuous.py)"
        fail(f"--env {args.env!r} cannot be made: {str(e).splitlines()[0]}{hint}")
    interrupted = []  # Ctrl-C ends the run after the step it came in, so no library is cut off midway
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        fail(f"{os.path.basename(__file__)} needs a Discrete action space; --env {args.env} has "
             f"{envs.single_action_space} (continuous actions run with stream_ac_continuous.py)")
    if not (isinstance(envs.single_observation_space, gym.spaces.Box)
            and envs.single_observation_space.shape[:2] == (10, 10) and len(envs.single_observation_space.shape) == 3):
        fail(f"{os.path.basename(__file__)} needs a MinAtar/<Game>-v1 id with (10, 10, C) observations; "
             f"--env {args.env} has {envs.single_observation_space}")
    if args.device == "gpu":
        try:
            jax.config.update("jax_default_device", jax.devices("gpu")[0])
        except RuntimeError:
            fail("--device gpu, but JAX finds no GPU here (install jax[cuda12], or use --device cpu)")
    else:
        jax.config.update("jax_platforms", "cpu")
        # For nets this small, XLA:CPU's hand-offs between threads cost more than the kernels:
        # run each call in this thread (the action is needed at once anyway), schedule its
        # kernels as one chain, and keep every thread JAX starts on the core this run is on
        # (the OS starts parallel runs on different cores). See README, Speed.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_concurrency_optimized_scheduler=false")
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})

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
    obs, _ = envs.reset(seed=seeds)

    # One jitted call per env step for all agents: it updates each agent on the transition it just
    # saw and returns its next action. jax.vmap batches the agents, so they share the call's fixed
    # cost; the state is donated (updated in place); the only host transfer is `out`.
    kwargs = dict(q_network=QNetwork(envs.single_action_space.n, args.hidden_size), args=args)
    step_fn = jax.jit(jax.vmap(partial(train_step, **kwargs)), donate_argnums=0)
    obs = np.asarray(obs, np.float32)
    if saved is not None:  # the saved agent in AgentState's structure, one copy per seed
        template = jax.eval_shape(partial(start, **kwargs), keys[0], obs[0], None)[0]
        saved = jax.tree.map(lambda x: np.broadcast_to(x, (args.num_seeds, *np.shape(x))),
                             flax.serialization.from_state_dict(template, saved))
    state, out = jax.jit(jax.vmap(partial(start, **kwargs)))(keys, obs, saved)
    action = np.asarray(out)[:, 0].astype(np.int64)

    start_step = 0 if saved is None else int(saved.global_step[0])  # --load-model goes on from the saved step
    start_time, logged_step, diagnostic_sums = time.time(), start_step, np.zeros((args.num_seeds, len(DIAGNOSTICS)))
    try:
        for global_step in range(start_step + 1, start_step + args.total_steps + 1):
            obs, reward, terminated, truncated, info = envs.step(action)
            done = terminated | truncated
            ended = np.flatnonzero(done)  # the agents whose env was reset in this step
            reset_obs = np.asarray(obs, np.float32)  # where an episode ended, the reset observation
            next_obs = reset_obs.copy() if len(ended) else reset_obs
            for i in ended:
                next_obs[i] = info["final_obs"][i]
            state, out = step_fn(state, next_obs, reward.astype(np.float32), done, reset_obs)
            out = np.asarray(out)
            action, epsilon = out[:, 0].astype(np.int64), out[:, 1]
            diagnostics = out[:, -len(DIAGNOSTICS):]  # TD error first
            if not np.isfinite(diagnostics[:, 0]).all():
                i = np.flatnonzero(~np.isfinite(diagnostics[:, 0]))[0]
                fail(f"non-finite TD error at global_step={global_step} for seed {seeds[i]}; "
                     f"logs so far are in runs/{run_names[i]}")

            for i in ended:
                episodic_return = float(info["final_info"]["episode"]["r"][i])
                episodic_length = int(info["final_info"]["episode"]["l"][i])
                writers[i].add_scalar("charts/episodic_return", episodic_return, global_step)
                writers[i].add_scalar("charts/episodic_length", episodic_length, global_step)
                writers[i].add_scalar("charts/epsilon", epsilon[i], global_step)
                if args.debug:
                    print(f"seed={seeds[i]}, global_step={global_step}, episodic_return={episodic_return:.1f}, "
                          f"episodic_length={episodic_length}, epsilon={epsilon[i]:.3f}")
            diagnostic_sums += np.abs(diagnostics)
            if global_step % 1000 == 0:
                sps = int((global_step - start_step) / (time.time() - start_time))
                for writer, means in zip(writers, diagnostic_sums / (global_step - logged_step)):
                    writer.add_scalar("charts/SPS", sps, global_step)
                    for tag, value in zip(DIAGNOSTICS, means):
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
