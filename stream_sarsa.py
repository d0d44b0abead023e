"""Stream SARSA(λ): SARSA(λ) with eligibility traces and ObGD, one update a step, no replay buffer.

Elsayed, Vasan, Mahmood 2024, "Streaming Deep Reinforcement Learning Finally Works", arXiv
2410.14606, Algorithm "Stream SARSA(λ)"; reference github.com/mohmdelsayed/streaming-drl (407dca7,
stream_sarsa.py). Unlike it: the time feature is -0.5 + t/T at an episode's t-th observation
(the reference's is one step late), statistics are float32 and the action space is seeded. As in
it, a' picked in an episode's terminal observation is the next episode's first action (SPEC.md's
quirk, kept: picking it in the reset observation learned worse on CartPole, README)."""
import ctypes
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
import tyro
from jax.flatten_util import ravel_pytree
from tensorboardX import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 0  # seed of python, numpy, JAX and the env; agent i has seed + i
    device: Literal["cpu", "gpu"] = "cpu"  # where JAX runs
    debug: bool = False  # print one line per episode
    num_seeds: int = 1  # independent agents in this process, each with its own run folder
    track: bool = False  # if toggled, this experiment will be tracked with Weights and Biases
    wandb_project_name: str = "cleanRL"  # the wandb's project name
    wandb_entity: str | None = None  # the entity (team) of wandb's project
    capture_video: bool = False  # film the first agent's episodes 0, 1, 8, 27, ... into videos/
    save_model: bool = False  # save each agent to runs/{run_name}/{exp_name}.cleanrl_model

    # Algorithm specific arguments
    env: str = "CartPole-v1"  # gymnasium id: Discrete actions, flat Box observations
    total_steps: int = 500_000  # environment steps per agent; one update per step
    optimizer: Literal["obgd", "adaptive"] = "obgd"  # ObGD, or the reference's AdaptiveObGD
    gamma: float = 0.99  # discount factor
    lamda: float = 0.8  # eligibility-trace decay λ
    kappa: float = 2.0  # ObGD bound: larger kappa takes smaller steps when the trace is large
    lr: float = 1.0  # ObGD step size alpha
    hidden_size: int = 32  # units in each of the two hidden layers
    start_e: float = 1.0  # starting epsilon for exploration
    end_e: float = 0.01  # final epsilon for exploration
    exploration_fraction: float = 0.05  # fraction of total-steps over which epsilon decays linearly


def make_env(env_id: str, video_dir: str | None = None) -> gym.Env:
    """Classic-control or Box2D env with the reference's 10,000-step limit and episode statistics;
    with a video_dir, gymnasium's RecordVideo films episodes 0, 1, 8, 27, ... into it."""
    render = {"render_mode": "rgb_array"} if video_dir else {}  # not all envs take render_mode
    env = gym.make(env_id, max_episode_steps=10_000, **render)
    if video_dir:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen: no display
        env = gym.wrappers.RecordVideo(env, video_dir)
    return gym.wrappers.RecordEpisodeStatistics(env)


def leaky_relu(x):
    """leaky_relu(0.01), gradient 0.01 at 0 as torch's (jax.nn's: 1); units start at 0 (SPEC §2)."""
    return jnp.where(x > 0, x, 0.01 * x)


def sparse_init(sparsity: float = 0.9):
    """Kernel initialiser (paper §3; reference sparse_init.py): uniform in ±1/sqrt(fan_in), then
    exactly ceil(sparsity * fan_in) inputs of each output unit zeroed; fan_in = prod(shape[:-1])."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        key_w, key_p = jax.random.split(key)
        bound = 1 / math.sqrt(fan_in)
        kernel = jax.random.uniform(key_w, (fan_in, fan_out), dtype, -bound, bound)
        # ranks of uniform noise: a random permutation of the inputs per output unit
        ranks = jax.random.uniform(key_p, (fan_in, fan_out)).argsort(axis=0).argsort(axis=0)
        return (kernel * (ranks >= math.ceil(sparsity * fan_in))).reshape(shape)

    return init


class QNetwork(nn.Module):
    """(..., obs_dim + 1) -> Q-values (..., n_actions); hidden: dense -> LayerNorm -> leaky_relu."""

    n_actions: int
    hidden_size: int = 32

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.Dense(self.hidden_size, kernel_init=sparse_init())(x)
            x = leaky_relu(nn.LayerNorm(epsilon=1e-5, use_bias=False, use_scale=False)(x))
        return nn.Dense(self.n_actions, kernel_init=sparse_init())(x)


class RunningStats(NamedTuple):
    """Welford statistics, float32 (reference normalization_wrappers.py); var 1 until 2 samples."""

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


def observe(obs_stats: RunningStats, obs, episode_step, time_limit: int):
    """obs_stats updated with raw obs (obs_dim,) FIRST, then obs normalised + time feature."""
    obs_stats = obs_stats.update(obs)
    return obs_stats, jnp.append(obs_stats.normalize(obs), -0.5 + episode_step / time_limit)


class ObGDState(NamedTuple):
    eligibility_trace: optax.Updates  # z, shaped like the parameters
    v: optax.Updates | None = None  # adaptive: running mean of (δz)², shaped like z
    count: jax.Array | None = None  # adaptive: updates so far, for the bias correction
    step_size: jax.Array | None = None  # lr / max(M, 1) of the last update, for the logs


def obgd(lr, gamma, lamda, kappa, adaptive=False, beta2=0.999, eps=1e-8):
    """Overshooting-bounded gradient descent (paper Algorithm 3; reference optim.py) as optax, for
    a gradient g whose -δg is the TD(λ) direction; update(grads, state, delta=δ, reset=bool):
        z <- γλz + g;  M = lr κ max(|δ|, 1) Σ|z|;  updates = -lr / max(M, 1) δ z;  z <- 0 if reset.
    With adaptive (the reference's AdaptiveObGD): v <- β2 v + (1 - β2)(δz)², t <- t + 1, and
    zhat = z / sqrt(v / (1 - β2^t) + eps) stands for z in M and the update; a reset keeps v, t."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ObGDState(zeros, *((zeros, jnp.int32(0)) if adaptive else ()))

    def update(grads, state, params=None, *, delta, reset, **extra_args):
        trace = jax.tree.map(lambda z, g: gamma * lamda * z + g, state.eligibility_trace, grads)
        v, count, zhat = state.v, state.count, trace  # zhat: z, or adaptive's rescaled z
        if adaptive:
            v = jax.tree.map(lambda v, z: beta2 * v + (1 - beta2) * (delta * z) ** 2, v, trace)
            count = count + 1
            zhat = jax.tree.map(lambda z, v: z / jnp.sqrt(v / (1 - beta2**count) + eps), trace, v)
        z_sum = sum(jnp.abs(z).sum() for z in jax.tree.leaves(zhat))
        step_size = jnp.minimum(lr, lr / (lr * kappa * jnp.maximum(jnp.abs(delta), 1.0) * z_sum))
        updates = jax.tree.map(lambda z: -step_size * delta * z, zhat)
        trace = jax.tree.map(lambda z: jnp.where(reset, 0.0, z), trace)
        return updates, ObGDState(trace, v, count, step_size)

    return optax.GradientTransformationExtraArgs(init, update)


class AgentState(NamedTuple):  # what the jitted step reads and writes; donated, never on the host

    params: jax.Array  # the network's weights as one flat vector, float32, as ObGD sees them
    opt_state: ObGDState
    obs_stats: RunningStats
    reward_stats: RunningStats
    reward_trace: jax.Array  # discounted sum of raw rewards, for reward scaling
    norm_obs: jax.Array  # the current observation, normalised, with the time feature (obs_dim + 1,)
    action: jax.Array  # the action taken in it, int32
    episode_step: jax.Array  # steps taken in this episode, int32
    global_step: jax.Array  # steps taken in all, int32
    key: jax.Array  # the run's key; the action at global_step t uses fold_in(key, t)


# ALGO LOGIC: learn from the transition just seen, then act
def act(state: AgentState, norm_obs, q_values, args: Args):
    """NEXT ACTION: epsilon-greedy on q_values (n_actions,) of norm_obs; (state, [action, ε])."""
    t, duration = state.global_step + 1, args.exploration_fraction * args.total_steps
    epsilon = jnp.maximum(args.start_e + (args.end_e - args.start_e) * t / duration, args.end_e)
    key = jax.random.fold_in(state.key, state.global_step)  # a fresh key per step, none to carry
    u = jax.random.uniform(key, (2,))  # one draw for both choices: the cheapest RNG call
    greedy = jnp.argmax(q_values)
    action = jnp.where(u[0] < epsilon, (u[1] * q_values.shape[-1]).astype(jnp.int32), greedy)
    state = state._replace(norm_obs=norm_obs, action=action)
    return state, jnp.stack([action, epsilon])


def train_step(state: AgentState, next_obs, reward, done, reset_obs, *, q_network, unravel,
               optimizer, args: Args, time_limit: int):
    """One env step of Stream SARSA(λ): learn from (s, a, r, s', a', done), then take a' in s' (in
    reset_obs if it ended). next_obs, reset_obs: (obs_dim,) float32 raw; reward float32 raw; done
    bool. Returns (state, out = [action, epsilon, δ, ObGD step size] float32, the host transfer)."""
    done = jnp.asarray(done, jnp.float32)
    state = state._replace(global_step=state.global_step + 1)  # this step's, for act()
    obs_stats, norm_next_obs = observe(state.obs_stats, next_obs, state.episode_step + 1,
                                       time_limit)
    # REWARD SCALING (reference ScaleReward): r / sqrt(var(u) + 1e-8), u <- γu(1 - done) + r
    reward_trace = args.gamma * state.reward_trace * (1.0 - done) + reward
    reward_stats = state.reward_stats.update(reward_trace)
    reward = reward / jnp.sqrt(reward_stats.var() + 1e-8)

    # TD ERROR with the pre-update weights; g = grad of -q(s, a); s and s' in one forward pass
    def td_terms(params):
        q_values = q_network.apply(unravel(params), jnp.stack([state.norm_obs, norm_next_obs]))
        return -q_values[0, state.action], q_values[1]

    (neg_q, next_q_values), grads = jax.value_and_grad(td_terms, has_aux=True)(state.params)
    state, out = act(state, norm_next_obs, next_q_values, args)  # a', kept over a reset (reference)
    delta = reward + args.gamma * next_q_values[state.action] * (1.0 - done) + neg_q
    # OBGD
    updates, opt_state = optimizer.update(grads, state.opt_state, delta=delta, reset=done > 0)
    # after a terminal step, a' is taken in the reset observation
    reset_stats, norm_reset_obs = observe(obs_stats, reset_obs, 0, time_limit)
    obs_stats, norm_obs = jax.tree.map(lambda a, b: jnp.where(done > 0, a, b),
                                       (reset_stats, norm_reset_obs), (obs_stats, norm_next_obs))
    state = state._replace(  # the step size is logged, not carried: one buffer fewer per call
        params=optax.apply_updates(state.params, updates), obs_stats=obs_stats,
        opt_state=opt_state._replace(step_size=None), reward_stats=reward_stats,
        reward_trace=reward_trace, episode_step=jnp.where(done > 0, 0, state.episode_step + 1),
        norm_obs=norm_obs)
    return state, jnp.append(out, jnp.stack([delta, opt_state.step_size]))


def start(key, obs, *, q_network, unravel, optimizer, args: Args, time_limit: int):
    """A new agent acting in the reset observation obs (obs_dim,) raw; returns as train_step."""
    key_init, key = jax.random.split(key)
    params = ravel_pytree(q_network.init(key_init, jnp.zeros(obs.shape[-1] + 1)))[0]
    zero, zeros = jnp.float32(0.0), jnp.zeros_like(obs)
    obs_stats, norm_obs = observe(RunningStats(zeros, zeros, zero), obs, 0, time_limit)
    state = AgentState(params, optimizer.init(params), obs_stats, RunningStats(zero, zero, zero),
                       zero, None, None, jnp.int32(0), jnp.int32(0), key)
    state, out = act(state, norm_obs, q_network.apply(unravel(params), norm_obs), args)
    return state, jnp.append(out, jnp.zeros(2))


if __name__ == "__main__":
    args = tyro.cli(Args)
    if min(args.total_steps, args.num_seeds) < 1:
        sys.exit("error: --total-steps and --num-seeds must be positive integers")
    seeds = [args.seed + i for i in range(args.num_seeds)]
    env_name = args.env.replace("/", "_").replace(":", "_")
    run_names = [f"{env_name}__{args.exp_name}__{seed}__{int(time.time())}" for seed in seeds]
    video = f"videos/{run_names[0]}" if args.capture_video else None  # the first agent's
    try:  # one env per agent, reset in the step that ends an episode (SAME_STEP)
        envs = gym.vector.SyncVectorEnv(
            [partial(make_env, args.env, video if i == 0 else None) for i in range(args.num_seeds)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)
    except gym.error.Error as e:
        sys.exit(f"error: --env {args.env!r} cannot be made: {str(e).splitlines()[0]}")
    action_space, observation_space = envs.single_action_space, envs.single_observation_space
    if not (isinstance(action_space, gym.spaces.Discrete) and len(observation_space.shape) == 1
            and isinstance(observation_space, gym.spaces.Box)):
        sys.exit(f"error: {os.path.basename(__file__)} needs Discrete actions and flat Box "
                 f"observations; --env {args.env} has {action_space} and {observation_space}")
    if args.device == "cpu":  # tiny nets: XLA:CPU's thread hand-offs cost more than the kernels
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_cpu_enable_async_dispatch", False)  # the action is needed at once
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_concurrency_optimized_scheduler=false")
        if hasattr(os, "sched_setaffinity"):  # JAX's threads stay on the core this run started on
            os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})
    elif jax.default_backend() != "gpu":
        sys.exit("error: --device gpu, but JAX finds no GPU (install jax[cuda12], or --device cpu)")
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_names[0], monitor_gym=False, save_code=True)
    writers = [SummaryWriter(f"runs/{run_name}") for run_name in run_names]
    for writer, seed in zip(writers, seeds):
        table = "\n".join(f"|{key}|{value}|" for key, value in dict(vars(args), seed=seed).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])  # each agent's from its seed
    envs.action_space.seed(args.seed)
    obs = np.asarray(envs.reset(seed=seeds)[0], np.float32)

    # One jitted call per env step updates every agent and returns its next action; the state is
    # donated. Agents share a call's cost (vmap); one agent's state has no agent axis (faster code).
    q_network = QNetwork(action_space.n, args.hidden_size)
    unravel = ravel_pytree(q_network.init(keys[0], np.zeros(obs.shape[-1] + 1, np.float32)))[1]
    optimizer = obgd(args.lr, args.gamma, args.lamda, args.kappa, args.optimizer == "adaptive")
    kwargs = dict(q_network=q_network, unravel=unravel, optimizer=optimizer, args=args,
                  time_limit=envs.get_attr("spec")[0].max_episode_steps)
    batch = jax.vmap if args.num_seeds > 1 else lambda f: lambda state, *xs: (lambda s, out: (
        s, out[None]))(*f(state, *(x[0] for x in xs)))
    step_fn = jax.jit(batch(partial(train_step, **kwargs)), donate_argnums=0)
    state, out = jax.jit(jax.vmap(partial(start, **kwargs)))(keys, obs)
    state = state if args.num_seeds > 1 else jax.tree.map(lambda x: x[0], state)
    action = np.asarray(out)[:, 0].astype(np.int64)

    start_time = time.time()
    diagnostic_sums, last_return = np.zeros((args.num_seeds, 2)), np.full(args.num_seeds, np.nan)
    progress = tqdm.trange(1, args.total_steps + 1, disable=None)  # quiet if not on a terminal
    try:
        for global_step in progress:
            obs, reward, terminated, truncated, info = envs.step(action)
            done = terminated | truncated
            ended = np.flatnonzero(done)  # the agents whose env was reset in this step
            reset_obs = np.asarray(obs, np.float32)  # where an episode ended, the reset observation
            next_obs = reset_obs.copy() if len(ended) else reset_obs
            for i in ended:  # info["final_obs"] holds their terminal observation
                next_obs[i] = info["final_obs"][i]
            state, out = step_fn(state, next_obs, reward.astype(np.float32), done, reset_obs)
            out = np.asarray(out)
            action, epsilon = out[:, 0].astype(np.int64), out[:, 1]
            for i in np.flatnonzero(~np.isfinite(out[:, 2])):  # a non-finite δ stops the run
                sys.exit(f"error: non-finite TD error at global_step={global_step} for seed "
                         f"{seeds[i]}; logs so far are in runs/{run_names[i]}")
            for i in ended:
                episodic_return, length = (float(info["final_info"]["episode"][k][i]) for k in "rl")
                writers[i].add_scalar("charts/episodic_return", episodic_return, global_step)
                writers[i].add_scalar("charts/episodic_length", length, global_step)
                writers[i].add_scalar("charts/epsilon", epsilon[i], global_step)
                last_return[i] = episodic_return
                if args.debug:
                    print(f"seed={seeds[i]}, global_step={global_step}, episodic_return="
                          f"{episodic_return:.1f}, episodic_length={length:.0f}, "
                          f"epsilon={epsilon[i]:.3f}")
            diagnostic_sums += np.abs(out[:, 2:])
            if global_step % 1000 == 0:  # the diagnostics: mean |δ| and step size since last log
                sps = int(global_step / (time.time() - start_time))
                for writer, (td_error, step_size) in zip(writers, diagnostic_sums / 1000):
                    writer.add_scalar("charts/SPS", sps, global_step)
                    writer.add_scalar("losses/td_error", td_error, global_step)
                    writer.add_scalar("charts/obgd_step_size", step_size, global_step)
                diagnostic_sums[:] = 0.0
                if not np.isnan(last_return).all():
                    progress.set_postfix(episodic_return=np.nanmean(last_return), refresh=False)
    except KeyboardInterrupt:
        sys.exit(f"error: interrupted at global_step={global_step}; logs so far are in runs/")
    finally:  # every log flushed
        for closable in (envs, *writers):
            closable.close()
    for i, run_name in enumerate(run_names if args.save_model else []):
        with open(f"runs/{run_name}/{args.exp_name}.cleanrl_model", "wb") as f:
            agent = jax.tree.map(lambda x: x[i], state) if args.num_seeds > 1 else state
            f.write(flax.serialization.to_bytes(agent))
    if args.track and args.capture_video:
        for name in sorted(os.listdir(video)):
            wandb.log({"videos": wandb.Video(f"{video}/{name}")})
    print(f"finished in {time.time() - start_time:.0f} s; logs in runs/{run_names[0]} and the like")
