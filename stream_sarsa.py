"""Stream SARSA(λ): SARSA(λ) with eligibility traces and ObGD, one update per step, no replay buffer.

Elsayed, Vasan, Mahmood 2024, "Streaming Deep Reinforcement Learning Finally Works", arXiv 2410.14606,
Algorithm "Stream SARSA(λ)"; reference code github.com/mohmdelsayed/streaming-drl (407dca7, stream_sarsa.py).
Differences from the reference: the time feature is -0.5 + t/T at the t-th observation of an episode
(the reference's is one step late); running statistics are float32; the env's action space is seeded;
an episode's first action is picked in its reset observation (the reference carries over the one it
picked in the previous episode's terminal state).
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
from typing import Callable, NamedTuple

import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from jax.flatten_util import ravel_pytree
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
    env: str = "CartPole-v1"
    """gymnasium id of an env with a Discrete action space and a flat Box observation"""
    total_steps: int = 500_000
    """number of environment steps; one update per step"""
    gamma: float = 0.99
    """discount factor"""
    lamda: float = 0.8
    """eligibility-trace decay λ"""
    kappa: float = 2.0
    """ObGD bound: larger kappa takes smaller steps when the trace is large"""
    lr: float = 1.0
    """ObGD step size alpha"""
    hidden_size: int = 32
    """units in each of the two hidden layers"""
    start_e: float = 1.0
    """starting epsilon for exploration"""
    end_e: float = 0.01
    """final epsilon for exploration"""
    exploration_fraction: float = 0.05
    """fraction of total-steps over which epsilon decays linearly from start-e to end-e"""


def make_env(env_id: str, video_folder: str | None = None) -> gym.Env:
    """Classic-control or Box2D env with the reference's 10,000-step limit and episode statistics;
    with a video_folder, gymnasium's RecordVideo films episodes 0, 1, 8, 27, ... into it."""
    env = gym.make(env_id, max_episode_steps=10_000, **({"render_mode": "rgb_array"} if video_folder else {}))
    if video_folder:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen: no display needed
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
    """(..., obs_dim + 1) float32 -> Q-values (..., n_actions); each hidden layer: dense -> LayerNorm
    (no scale or bias, over all units) -> leaky_relu."""

    n_actions: int
    hidden_size: int = 32

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.Dense(self.hidden_size, kernel_init=sparse_init())(x)
            x = leaky_relu(nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False)(x))
        return nn.Dense(self.n_actions, kernel_init=sparse_init())(x)


def unravel_fn(network: nn.Module, x) -> Callable:
    """The map from a flat weight vector to network's Flax dict for input x (jax.eval_shape: nothing runs)."""
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), x)
    return ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))[1]


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


def observe(obs_stats: RunningStats, obs, episode_step, max_episode_steps: int):
    """Raw obs (obs_dim,) -> (obs_stats updated with it FIRST, then obs normalised with the time feature
    -0.5 + episode_step / max_episode_steps appended: (obs_dim + 1,) float32)."""
    obs_stats = obs_stats.update(obs)
    return obs_stats, jnp.append(obs_stats.normalize(obs), -0.5 + episode_step / max_episode_steps)


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

    params: jax.Array  # the network's weights as one flat vector, float32; unravel(params) is Flax's dict
    opt_state: ObGDState
    obs_stats: RunningStats
    reward_stats: RunningStats
    reward_trace: jax.Array  # discounted sum of raw rewards, for reward scaling
    norm_obs: jax.Array  # the current observation, normalised, with the time feature, (obs_dim + 1,)
    action: jax.Array  # the action taken in it, int32
    episode_step: jax.Array  # steps taken in this episode, int32
    global_step: jax.Array  # steps taken in all, int32
    key: jax.Array  # the run's key; the action at global_step t uses fold_in(key, t)


# ALGO LOGIC: learn from the transition just seen, then act
def learn(state: AgentState, norm_next_obs, reward, done, *, q_network, unravel, optimizer, args: Args):
    """The paper's Stream SARSA(λ) update on (state.norm_obs, state.action, reward, norm_next_obs, a', done), a'
    picked by act() in norm_next_obs with the pre-update weights; reward scaled, done float32 (bootstraps through
    neither end). Returns (the state with new weights and trace, [δ, ObGD step size] float32, the pre-update
    q-values of norm_next_obs)."""

    # TD ERROR with the pre-update weights; g = grad of -q(s, a); s and s' in one forward pass
    def td_terms(params):
        q_values = q_network.apply(unravel(params), jnp.stack([state.norm_obs, norm_next_obs]))
        return -q_values[0, state.action], q_values[1]

    (neg_q, next_q_values), grads = jax.value_and_grad(td_terms, has_aux=True)(state.params)
    next_action = act(state, norm_next_obs, next_q_values, args)[0].action
    delta = reward + args.gamma * next_q_values[next_action] * (1.0 - done) + neg_q
    # OBGD
    updates, opt_state = optimizer.update(grads, state.opt_state, delta=delta, reset=done > 0)
    diagnostics = jnp.stack([delta, opt_state.step_size])
    opt_state = opt_state._replace(step_size=None)  # logged, not carried: a buffer fewer in and out of a call (3 us)
    state = state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    return state, diagnostics, next_q_values


def act(state: AgentState, norm_obs, q_values, args: Args):
    """NEXT ACTION: epsilon-greedy on q_values (n_actions,) of norm_obs, at the epsilon of action
    global_step + 1. Returns (the state acting in norm_obs, [action, epsilon] float32)."""
    epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_steps,
                              state.global_step + 1)
    key = jax.random.fold_in(state.key, state.global_step)  # a fresh key per step, none to carry
    action, _ = epsilon_greedy(q_values, key, epsilon)
    return state._replace(norm_obs=norm_obs, action=action), jnp.stack([action, epsilon])


def train_step(state: AgentState, next_obs, reward, done, reset_obs, *, q_network, unravel, optimizer, args: Args,
               max_episode_steps: int):
    """One env step: learn from (state.norm_obs, state.action, reward, next_obs, done), then act in next_obs,
    or in reset_obs if the episode ended. next_obs, reset_obs: (obs_dim,) float32 raw; reward: float32 raw;
    done: bool. Returns (state, out = [action, epsilon, δ, ObGD step size] float32: the only host transfer)."""
    done = jnp.asarray(done, jnp.float32)
    obs_stats, norm_next_obs = observe(state.obs_stats, next_obs, state.episode_step + 1, max_episode_steps)
    reward_stats, reward_trace, reward = scale_reward(state.reward_stats, state.reward_trace, reward, done, args.gamma)
    state = state._replace(reward_stats=reward_stats, reward_trace=reward_trace, global_step=state.global_step + 1)
    state, diagnostics, next_q_values = learn(state, norm_next_obs, reward, done, q_network=q_network, unravel=unravel,
                                        optimizer=optimizer, args=args)
    # after a terminal step, the next action is taken in the reset observation
    reset_stats, norm_reset_obs = observe(obs_stats, reset_obs, 0, max_episode_steps)
    obs_stats, norm_obs = jax.tree.map(lambda a, b: jnp.where(done > 0, a, b), (reset_stats, norm_reset_obs),
                                       (obs_stats, norm_next_obs))
    state = state._replace(obs_stats=obs_stats, episode_step=jnp.where(done > 0, 0, state.episode_step + 1))
    # a' as learn() picked it, or, after a terminal step, the updated weights' q-values of the reset observation
    q_values = jax.lax.cond(done > 0, lambda: q_network.apply(unravel(state.params), norm_obs), lambda: next_q_values)
    state, out = act(state, norm_obs, q_values, args)
    return state, jnp.append(out, diagnostics)


def start(key, obs, saved: AgentState | None, *, q_network, unravel, optimizer, args: Args, max_episode_steps: int):
    """A new agent, or the saved one (--load-model: its weights, statistics and global_step), acting in the
    reset observation obs (obs_dim,) raw. Returns (state, out) as train_step does, with δ and step size 0."""
    key_init, key = jax.random.split(key)
    params = ravel_pytree(q_network.init(key_init, jnp.zeros(obs.shape[-1] + 1)))[0]
    zero = jnp.float32(0.0)
    state = AgentState(params, optimizer.init(params), RunningStats(jnp.zeros_like(obs), jnp.zeros_like(obs), zero),
                       RunningStats(zero, zero, zero), zero, None, None, jnp.int32(0), jnp.int32(0), key)
    if saved is not None:
        state = state._replace(params=saved.params, obs_stats=saved.obs_stats, reward_stats=saved.reward_stats,
                               global_step=saved.global_step)
    obs_stats, norm_obs = observe(state.obs_stats, obs, 0, max_episode_steps)
    state, out = act(state._replace(obs_stats=obs_stats), norm_obs, q_network.apply(unravel(state.params), norm_obs),
                     args)
    return state, jnp.append(out, jnp.zeros(2))


# the tags of out's last columns, logged as means of |.| since the last log
DIAGNOSTICS = ("losses/td_error", "charts/obgd_step_size")


def evaluate_step(state: AgentState, obs, new_episode, *, q_network, unravel, args: Args, max_episode_steps: int):
    """CleanRL's evaluation: epsilon-greedy with epsilon 0.05 in obs (obs_dim,) raw, learning off, the normaliser
    frozen; new_episode (bool) restarts the time feature. Returns (state, action)."""
    episode_step = jnp.where(new_episode, 0, state.episode_step + 1)
    norm_obs = jnp.append(state.obs_stats.normalize(obs), -0.5 + episode_step / max_episode_steps)
    key = jax.random.fold_in(state.key, state.global_step + 1)
    action, _ = epsilon_greedy(q_network.apply(unravel(state.params), norm_obs), key, 0.05)
    return state._replace(episode_step=episode_step, global_step=state.global_step + 1), action


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
            and len(observation_space.shape) == 1):
        fail(f"{os.path.basename(__file__)} needs a Discrete action space and a flat Box observation; --env {args.env} "
             f"has {action_space} and observations of shape {observation_space.shape} (continuous actions run with "
             "stream_ac_continuous.py)")
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
    obs, _ = envs.reset(seed=seeds)

    # One jitted call per env step for all agents (jax.vmap: they share the call's fixed cost) updates each
    # agent and returns its next action; the state is donated, `out` is the only host transfer. Each network's
    # weights are one flat vector, as ObGD sees them: fewer buffers in and out of every call.
    q_network = QNetwork(action_space.n, args.hidden_size)
    unravel = unravel_fn(q_network, np.zeros(obs.shape[-1] + 1, np.float32))
    kwargs = dict(q_network=q_network, unravel=unravel, args=args,
                  max_episode_steps=envs.get_attr("spec")[0].max_episode_steps)
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
            done = terminated | truncated
            ended = np.flatnonzero(done)  # the agents whose env was reset in this step
            reset_obs = np.asarray(obs, np.float32)  # where an episode ended, the reset observation
            next_obs = reset_obs.copy() if len(ended) else reset_obs
            for i in ended:
                next_obs[i] = info["final_obs"][i]
            state, out = step_fn(state, next_obs, reward.astype(np.float32), done, reset_obs)
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
