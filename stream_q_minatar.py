"""Stream Q(λ) on MinAtar: Watkins' Q(λ), eligibility traces, ObGD and a small conv net, no replay.

Elsayed, Vasan, Mahmood 2024, "Streaming Deep Reinforcement Learning Finally Works", arXiv
2410.14606, Algorithm "Stream Q(λ)"; reference github.com/mohmdelsayed/streaming-drl (407dca7,
stream_q_minatar.py). Unlike it: the (10, 10, C) observation stays channels-last (the same
function up to a permutation of the dense inputs), and the statistics are float32."""
import ctypes
import glob
import math
import os
import signal
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
import minatar.gym
import numpy as np
import optax
import tqdm
import tyro
from jax.flatten_util import ravel_pytree
from tensorboardX import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 0  # seed of the env and of JAX; agent i has seed + i
    device: Literal["cpu", "gpu"] = "cpu"  # where JAX runs
    debug: bool = False  # print one line per episode
    num_seeds: int = 1  # independent agents in this process, each with its own run folder
    track: bool = False  # if toggled, this experiment will be tracked with Weights and Biases
    wandb_project_name: str = "cleanRL"  # the wandb's project name
    wandb_entity: str | None = None  # the entity (team) of wandb's project
    capture_video: bool = False  # film the first agent's episodes 0, 1, 8, 27, ... into videos/
    save_model: bool = False  # save each agent to runs/{run_name}/{exp_name}.cleanrl_model
    save_every: int = 100_000  # with --save-model, save also every this many steps and if stopped
    resume: bool = False  # go on from each seed's newest run in runs/ that saved a model

    # Algorithm specific arguments
    env: str = "MinAtar/Breakout-v1"  # MinAtar/<Game>-v1: Asterix, Breakout, Freeway, Seaquest, ...
    total_steps: int = 5_000_000  # environment steps per agent; one update per step
    gamma: float = 0.99  # discount factor
    lamda: float = 0.8  # eligibility-trace decay λ
    kappa: float = 2.0  # ObGD bound: larger kappa takes smaller steps when the trace is large
    lr: float = 1.0  # ObGD step size alpha
    hidden_size: int = 128  # units in the dense hidden layer
    start_e: float = 1.0  # starting epsilon for exploration
    end_e: float = 0.01  # final epsilon for exploration
    exploration_fraction: float = 0.2  # fraction of total-steps over which epsilon decays linearly


class RenderUpscaled(gym.Wrapper):
    """MinAtar renders (10, 10, 3) floats in [0, 1]: 32x larger uint8 frames make a real video."""

    def render(self):
        return (np.kron(self.env.render(), np.ones((32, 32, 1))) * 255).astype(np.uint8)


def make_env(env_id: str, video_dir: str | None = None) -> gym.Env:
    """MinAtar env (sticky actions 0.1, difficulty ramping, no time limit), episode statistics."""
    if env_id.startswith("MinAtar/") and env_id not in gym.registry:
        minatar.gym.register_envs()  # minatar does not register them on import under gymnasium 1.x
    env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_dir else {}))
    env = gym.wrappers.RecordVideo(RenderUpscaled(env), video_dir) if video_dir else env
    return gym.wrappers.RecordEpisodeStatistics(env)


def leaky_relu(x):
    """leaky_relu(0.01) with torch's gradient 0.01 at 0 (jax.nn's is 1): it matters, as sparse init
    zeroes every input weight when fan_in <= 9 (CartPole), so those units start at exactly 0."""
    return jnp.where(x > 0, x, 0.01 * x)


def sparse_init(sparsity: float = 0.9):
    """Kernel initialiser (paper §3; reference sparse_init.py): uniform in ±1/sqrt(fan_in), then
    exactly ceil(sparsity * fan_in) inputs of each output unit zeroed; fan_in = prod(shape[:-1])."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        (key_w, key_p), bound = jax.random.split(key), 1 / math.sqrt(fan_in)
        kernel = jax.random.uniform(key_w, (fan_in, fan_out), dtype, -bound, bound)
        # ranks of uniform noise: a random permutation of the inputs per output unit
        ranks = jax.random.uniform(key_p, (fan_in, fan_out)).argsort(axis=0).argsort(axis=0)
        return (kernel * (ranks >= math.ceil(sparsity * fan_in))).reshape(shape)

    return init


class QNetwork(nn.Module):
    """(..., 10, 10, C) float32 -> Q-values (..., n_actions), as in the reference: conv 16 3x3 valid
    -> LayerNorm -> leaky_relu -> flatten -> dense -> LayerNorm -> leaky_relu -> dense."""

    n_actions: int
    hidden_size: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), padding="VALID", kernel_init=sparse_init())(x)
        x = nn.LayerNorm(1e-5, use_bias=False, use_scale=False, reduction_axes=(-3, -2, -1))(x)
        x = leaky_relu(x).reshape(*x.shape[:-3], -1)  # flattened after the LayerNorm over 8x8x16
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



def observe(obs_stats: RunningStats, obs):
    """obs_stats updated with raw obs (10, 10, C) FIRST, then obs normalised; no time feature."""
    obs_stats = obs_stats.update(obs)
    return obs_stats, (obs - obs_stats.mean) / jnp.sqrt(obs_stats.var() + 1e-8)


class ObGDState(NamedTuple):
    eligibility_trace: optax.Updates  # z, shaped like the parameters
    step_size: jax.Array | None = None  # α' of the last update, for the logs only


def obgd(lr, gamma, lamda, kappa):
    """Overshooting-bounded gradient descent (paper Algorithm 3; reference optim.py) in optax. g is
    the gradient of the value (∇q(s, a), ∇v(s), ∇[log π + β sign(δ) H]), not of a loss, and
    update(g, state, delta=δ, reset=bool) returns the updates to add to the weights w:
        z ← γλz + g; M = ακ max(|δ|, 1) ‖z‖₁; α' = α / max(M, 1); w ← w + α'δz; z ← 0 if reset"""

    def init(params):
        return ObGDState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None, *, delta, reset, **extra_args):
        z = jax.tree.map(lambda z, g: gamma * lamda * z + g, state.eligibility_trace, grads)
        z_norm = sum(jnp.abs(leaf).sum() for leaf in jax.tree.leaves(z))  # ‖z‖₁
        M = lr * kappa * jnp.maximum(jnp.abs(delta), 1.0) * z_norm  # the overshooting bound
        step_size = lr / jnp.maximum(M, 1.0)
        updates = jax.tree.map(lambda z: step_size * delta * z, z)
        z = jax.tree.map(lambda z: jnp.where(reset, 0.0, z), z)
        return updates, ObGDState(z, step_size)

    return optax.GradientTransformationExtraArgs(init, update)


class AgentState(NamedTuple):  # one agent: everything the step reads and writes
    params: dict  # the network's weights w, Flax's dict
    opt_state: ObGDState
    obs_stats: RunningStats
    reward_stats: RunningStats
    reward_trace: jax.Array  # discounted sum of raw rewards, for reward scaling
    global_step: jax.Array  # steps taken in all, int32
    key: jax.Array  # the run's key, from its seed
    norm_obs: jax.Array = None  # the current observation, normalised, (10, 10, C) (act())
    action: jax.Array = None  # the action taken in it, int32
    nongreedy: jax.Array = None  # whether that action differs from argmax q, bool


class StepOutput(NamedTuple):  # what __main__ reads after each step, per agent
    action: jax.Array  # the next action, int32
    epsilon: jax.Array  # its exploration rate
    td_error: jax.Array  # δ of the update
    step_size: jax.Array  # ObGD's α' of the update


# ALGO LOGIC: learn from the transition just seen, then act
def act(state: AgentState, norm_obs, q_values, args: Args):
    """NEXT ACTION, of env step global_step + 1: ε-greedy on q_values (n_actions,); (state, ε)."""
    epsilon = jnp.maximum(args.start_e + (args.end_e - args.start_e) * (state.global_step + 1)
                          / (args.exploration_fraction * args.total_steps), args.end_e)
    u = jax.random.uniform(jax.random.fold_in(state.key, state.global_step), (2,))  # a key per step
    greedy = jnp.argmax(q_values)
    action = jnp.where(u[0] < epsilon, (u[1] * q_values.shape[-1]).astype(jnp.int32), greedy)
    return state._replace(norm_obs=norm_obs, action=action, nongreedy=action != greedy), epsilon


def train_step(state: AgentState, next_obs, reward, done, reset_obs, *, q_network, optimizer,
               args: Args):
    """One env step of Stream Q(λ): learn from (s, a, r, s', done), then act in s', or if it ended
    in reset_obs. next_obs, reset_obs: (10, 10, C) float32 raw; reward float32 raw; done bool."""
    done = jnp.asarray(done, jnp.float32)
    state = state._replace(global_step=state.global_step + 1)  # steps taken, this one included
    obs_stats, norm_next_obs = observe(state.obs_stats, next_obs)
    # REWARD SCALING (reference ScaleReward): r / sqrt(var(u) + 1e-8), u ← γu(1 - done) + r
    reward_trace = args.gamma * state.reward_trace * (1.0 - done) + reward
    reward_stats = state.reward_stats.update(reward_trace)
    reward = reward / jnp.sqrt(reward_stats.var() + 1e-8)

    # TD ERROR with the pre-update weights, and ∇q(s, a); s and s' in two passes, as XLA is slower
    # at the backward of one pass of both through the 1024-wide dense layer
    q_sa, grad_q = jax.value_and_grad(lambda w: q_network.apply(w, state.norm_obs)[state.action])(
        state.params)
    next_q = q_network.apply(state.params, norm_next_obs).max()
    td_target = reward + args.gamma * next_q * (1.0 - done)
    delta = td_target - q_sa
    # OBGD: z ← γλz + ∇q;  w ← w + α' δ z;  Watkins' Q(λ) zeroes z after a non-greedy action too
    updates, opt_state = optimizer.update(grad_q, state.opt_state, delta=delta,
                                          reset=(done > 0) | state.nongreedy)
    # after a terminal step, the next action is taken in the reset observation
    reset_stats, norm_reset_obs = observe(obs_stats, reset_obs)
    obs_stats, norm_obs = jax.tree.map(lambda a, b: jnp.where(done > 0, a, b),
                                       (reset_stats, norm_reset_obs), (obs_stats, norm_next_obs))
    state = state._replace(  # α' is logged, not carried
        params=optax.apply_updates(state.params, updates), obs_stats=obs_stats,
        opt_state=opt_state._replace(step_size=None), reward_stats=reward_stats,
        reward_trace=reward_trace)
    state, epsilon = act(state, norm_obs, q_network.apply(state.params, norm_obs), args)
    out = StepOutput(state.action, epsilon, delta, opt_state.step_size)
    return state, ravel_pytree(out)[0]  # SPEED: one float32 array back to Python, not four


def start(key, obs, saved=None, *, q_network, optimizer, args: Args):
    """New agent or `saved` (flax dict of AgentState) in a new episode, acting in obs (10, 10, C)"""
    key_init, key = jax.random.split(key)
    params = q_network.init(key_init, jnp.zeros(obs.shape))
    zero, zeros = jnp.float32(0.0), jnp.zeros_like(obs)
    state = AgentState(params=params, opt_state=optimizer.init(params),
                       obs_stats=RunningStats(zeros, zeros, zero),
                       reward_stats=RunningStats(zero, zero, zero), reward_trace=zero,
                       global_step=jnp.int32(0), key=key)
    if saved is not None:  # all it has learned (flax's dict); z = 0, as in any new episode
        state = flax.serialization.from_state_dict(state, saved)._replace(opt_state=state.opt_state)
    obs_stats, norm_obs = observe(state.obs_stats, obs)
    state = state._replace(obs_stats=obs_stats)
    return act(state, norm_obs, q_network.apply(state.params, norm_obs), args)[0]


# SPEED (skip on a first read): a step costs mostly the call into XLA and the arrays it moves.
def one_agent(fn):
    """jax.vmap for one agent whose AgentState keeps no agent axis (else XLA copies the weights)."""

    def fn_of_one(*xs):  # the other inputs lose their axis of one, the other outputs gain it
        out = fn(*(x if isinstance(x, AgentState) else jax.tree.map(lambda v: v[0], x) for x in xs))
        return out if isinstance(out, AgentState) else (out[0], out[1][None])

    return fn_of_one


if __name__ == "__main__":
    args = tyro.cli(Args)
    if min(args.total_steps, args.num_seeds, args.save_every) < 1:
        sys.exit("error: --total-steps, --num-seeds and --save-every must be positive integers")
    seeds = [args.seed + i for i in range(args.num_seeds)]
    env_name = args.env.replace("/", "_").replace(":", "_")
    run_names = [f"{env_name}__{args.exp_name}__{seed}__{int(time.time())}" for seed in seeds]
    for i, seed in enumerate(seeds if args.resume else []):  # its newest run that saved a model
        found = sorted(glob.glob(f"runs/{env_name}__{args.exp_name}__{seed}__*/*.cleanrl_model"))
        run_names[i] = found[-1].split("/")[1] if found else run_names[i]
    video = f"videos/{run_names[0]}" if args.capture_video else None  # the first agent's
    try:  # one env per agent, reset in the step that ends an episode (SAME_STEP)
        envs = gym.vector.SyncVectorEnv(
            [partial(make_env, args.env, video if i == 0 else None) for i in range(args.num_seeds)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)
    except gym.error.Error as e:
        sys.exit(f"error: --env {args.env!r} cannot be made: {str(e).splitlines()[0]}")
    action_space, observation_space = envs.single_action_space, envs.single_observation_space
    if not (isinstance(action_space, gym.spaces.Discrete) and observation_space.shape is not None
            and len(observation_space.shape) == 3 and observation_space.shape[:2] == (10, 10)):
        sys.exit(f"error: {os.path.basename(__file__)} needs Discrete actions and (10, 10, C) "
                 f"observations; --env {args.env} has {action_space} and {observation_space}")
    if args.device == "cpu":  # SPEED: XLA:CPU's threads would pass tiny kernels between cores
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_cpu_enable_async_dispatch", False)  # wait for the result in place
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_concurrency_optimized_scheduler=false")
        if hasattr(os, "sched_setaffinity"):  # Linux: every thread on the core this run is on now
            os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})  # the C library's getter
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

    # TRY NOT TO MODIFY: seeding; each agent's env and JAX key from its seed (nothing else draws)
    paths = [f"runs/{run_name}/{args.exp_name}.cleanrl_model" for run_name in run_names]
    saved = [flax.serialization.msgpack_restore(open(path, "rb").read())  # --resume
             for path in paths if os.path.exists(path)]  # each agent's whole state, as flax's dict
    start_step = int(saved[0]["global_step"]) if saved else 0  # a resumed env is seeded anew:
    obs = np.asarray(envs.reset(seed=[seed + start_step for seed in seeds])[0], np.float32)
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])

    # ALGO LOGIC: the agents; one jitted call a step updates them all (jax.vmap over agents)
    q_network = QNetwork(action_space.n, args.hidden_size)
    optimizer = obgd(args.lr, args.gamma, args.lamda, args.kappa)
    kwargs = dict(q_network=q_network, optimizer=optimizer, args=args)
    batch = jax.vmap if args.num_seeds > 1 else one_agent
    try:  # leaves (num_seeds, ...) if N > 1; each agent saved goes on from where it stopped
        state = jax.jit(batch(partial(start, **kwargs)))(
            keys, obs, jax.tree.map(lambda *x: np.stack(x), *saved) if saved else None)
    except (ValueError, TypeError) as e:  # another script's, env's or network's state
        sys.exit(f"error: --resume: {paths[0]} and the like do not fit this run: {e}")
    step_fn = jax.jit(batch(partial(train_step, **kwargs)), donate_argnums=0)  # memory reused
    action = np.asarray(state.action).reshape(args.num_seeds, *action_space.shape)

    start_time = time.time()
    diagnostic_sums = np.zeros((args.num_seeds, 4))  # |StepOutput| summed since the last log
    progress = tqdm.trange(start_step + 1, args.total_steps + 1, disable=None)  # quiet if no tty
    stopped = []  # Ctrl-C or SIGTERM (SLURM's time limit, scancel, preemption) ends the loop
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.append(True))
    try:
        for global_step in progress:
            obs, reward, terminated, truncated, info = envs.step(action)
            done = terminated | truncated  # a time limit cuts the bootstrap too (reference)
            ended = np.flatnonzero(done)  # the agents whose env was reset in this step
            reset_obs = np.asarray(obs, np.float32)  # where an episode ended, the reset observation
            next_obs = reset_obs.copy() if len(ended) else reset_obs
            for i in ended:  # info["final_obs"] holds their terminal observation
                next_obs[i] = info["final_obs"][i]
            # LEARN, THEN ACT: every agent, in one call
            state, out = step_fn(state, next_obs, reward.astype(np.float32), done, reset_obs)
            out = np.asarray(out)  # StepOutput's fields side by side, (num_seeds, 4)
            diagnostic_sums += np.abs(out)
            out = StepOutput(*out.T)  # each field (num_seeds,)
            action = out.action.astype(np.int64)
            for i in np.flatnonzero(~np.isfinite(out.td_error)):  # a non-finite δ stops the run
                sys.exit(f"error: non-finite TD error at global_step={global_step} for seed "
                         f"{seeds[i]}; logs so far are in runs/{run_names[i]}")
            for i in ended:
                episode = info["final_info"]["episode"]
                episodic_return, length = float(episode["r"][i]), int(episode["l"][i])
                writers[i].add_scalar("charts/episodic_return", episodic_return, global_step)
                writers[i].add_scalar("charts/episodic_length", length, global_step)
                writers[i].add_scalar("charts/epsilon", out.epsilon[i], global_step)
                progress.set_postfix(episodic_return=episodic_return, refresh=False)
                if args.debug:
                    print(f"seed={seeds[i]}, global_step={global_step}, episodic_return="
                          f"{episodic_return:.1f}, episodic_length={length}, "
                          f"epsilon={out.epsilon[i]:.3f}")
            if global_step % 1000 == 0:  # the diagnostics: mean |δ| and step size since last log
                sps = int((global_step - start_step) / (time.time() - start_time))
                means = StepOutput(*(diagnostic_sums / 1000).T)
                for i, writer in enumerate(writers):
                    writer.add_scalar("charts/SPS", sps, global_step)
                    writer.add_scalar("losses/td_error", means.td_error[i], global_step)
                    writer.add_scalar("charts/obgd_step_size", means.step_size[i], global_step)
                diagnostic_sums[:] = 0.0
            if args.save_model and (stopped or global_step % args.save_every == 0
                                    or global_step == args.total_steps):
                for i, path in enumerate(paths):  # each agent's whole state
                    agent = jax.tree.map(lambda x: x[i], state) if args.num_seeds > 1 else state
                    with open(path, "wb") as f:
                        f.write(flax.serialization.to_bytes(agent))
            if stopped:
                sys.exit(f"error: interrupted at global_step={global_step}; logs are in runs/")
    finally:  # every log flushed
        for closable in (envs, *writers):
            closable.close()
    if args.track and args.capture_video:
        for name in sorted(os.listdir(video)):
            wandb.log({"videos": wandb.Video(f"{video}/{name}")})
    print(f"global_step={args.total_steps} reached; logs in runs/{run_names[0]} and the like")
