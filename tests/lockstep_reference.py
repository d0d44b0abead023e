"""Lockstep check of stream_ac_continuous.py against the paper's PyTorch code, step by step.

    pip install torch                      # not in requirements.txt; this is not a pytest test
    git clone https://github.com/mohmdelsayed/streaming-drl ../streaming-drl
    python tests/lockstep_reference.py --reference ../streaming-drl --env Walker2d-v4 --steps 3000

The reference's StreamAC (its stream_ac_continuous.py, with its wrappers NormalizeObservation,
ScaleReward and AddTimeInfo around one env) and ours (train_step on the raw observations and
rewards of that same env) start from the same weights, copied from the reference's sparse init.
Every step both learn from the same transition: the reference's action, sampled by torch, is the
action ours takes too. Our time feature is set to the reference's, one step late, for this check
only. After every step it compares δ (the difference over max(|δ|, 1)), each network's ObGD step
size α', its trace z (the reference's holds -z: it descends on -v and -log π) and its weights,
each as the largest difference over the largest magnitude, and prints the largest of them.
Float32 rounding (ours keeps float32 statistics, the reference float64) gives differences near
1e-6 that grow slowly; a defect gives a jump at the step that exercises it."""

import argparse
import importlib.util
import os
import sys

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax.flatten_util import ravel_pytree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Tap(gym.Wrapper):
    """Keeps the raw observation and reward that the reference's wrappers then transform."""

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        self.obs, self.reward, terminated, truncated, info = self.env.step(action)
        return self.obs, self.reward, terminated, truncated, info


def torch_to_flat(layers, template):
    """Our flat weight vector from torch Linear layers, in the order of flax's Dense_0, Dense_1,
    ... (template: our flax params dict, for its structure); kernel = weight.T."""
    params = {"params": {}}
    for i, layer in enumerate(layers):
        params["params"][f"Dense_{i}"] = {
            "kernel": jnp.asarray(layer.weight.detach().numpy().T),
            "bias": jnp.asarray(layer.bias.detach().numpy()),
        }
    assert jax.tree.structure(params) == jax.tree.structure(template)
    return ravel_pytree(params)[0]


def torch_traces(optimizer, layers, template):
    """The reference optimiser's traces, flattened like our weights."""
    state = optimizer.state
    params = {"params": {}}
    for i, layer in enumerate(layers):
        zero = torch.zeros_like
        trace = [
            state[p]["eligibility_trace"] if p in state else zero(p) for p in layer.parameters()
        ]
        params["params"][f"Dense_{i}"] = {
            "kernel": jnp.asarray(trace[0].numpy().T),
            "bias": jnp.asarray(trace[1].numpy()),
        }
    assert jax.tree.structure(params) == jax.tree.structure(template)
    return np.asarray(ravel_pytree(params)[0])


def record_step_size(optimizer, log, name):
    """Wraps the reference ObGD's step to log the α' it takes (its formula, optim.py)."""
    step = optimizer.step

    def logged(delta, reset=False):
        group = optimizer.param_groups[0]
        z_sum = sum(
            (group["gamma"] * group["lamda"] * optimizer.state[p]["eligibility_trace"] + p.grad)
            .abs()
            .sum()
            .item()
            if p in optimizer.state
            else p.grad.abs().sum().item()
            for p in group["params"]
        )
        bound = max(abs(delta), 1.0) * z_sum * group["lr"] * group["kappa"]
        log[name] = group["lr"] / bound if bound > 1 else group["lr"]
        return step(delta, reset=reset)

    optimizer.step = logged


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="a checkout of streaming-drl")
    parser.add_argument("--env", default="Walker2d-v4")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=500, help="print every this many steps")
    parser.add_argument(
        "--own-time-feature", action="store_true", help="keep ours, -0.5 + t/T: see it differ"
    )
    cli = parser.parse_args()
    sys.path.insert(0, os.path.abspath(cli.reference))
    ref = load(os.path.join(cli.reference, "stream_ac_continuous.py"), "reference_stream_ac")
    ours = load(os.path.join(ROOT, "stream_ac_continuous.py"), "ours_stream_ac")
    jax.config.update("jax_platforms", "cpu")

    # the reference's env stack (its main()), with a tap under its normalising wrappers
    torch.manual_seed(cli.seed)
    env = gym.wrappers.FlattenObservation(gym.make(cli.env))
    env = Tap(gym.wrappers.ClipAction(gym.wrappers.RecordEpisodeStatistics(env)))
    tap = env
    env = ref.AddTimeInfo(ref.NormalizeObservation(ref.ScaleReward(env, gamma=0.99)))
    obs_dim, action_dim = env.observation_space.shape[0] - 1, env.action_space.shape[0]
    agent = ref.StreamAC(n_obs=obs_dim + 1, n_actions=action_dim)
    log = {}
    record_step_size(agent.optimizer_policy, log, "policy")
    record_step_size(agent.optimizer_value, log, "value")
    pi, v = agent.policy_net, agent.value_net
    actor_layers = [pi.fc_layer, pi.hidden_layer, pi.linear_mu, pi.linear_std]
    critic_layers = [v.fc_layer, v.hidden_layer, v.linear_layer]

    # ours, with the reference's time feature (one step late) for this check only
    args = ours.Args(env=cli.env)
    time_limit = env.time_limit
    observe = ours.observe

    def late_observe(obs_stats, obs, episode_step, time_limit):
        return observe(obs_stats, obs, jnp.maximum(episode_step - 1, 0), time_limit)

    ours.observe = observe if cli.own_time_feature else late_observe
    actor_module, critic_module = ours.Actor(action_dim, 128), ours.Critic(128)
    template_pi = actor_module.init(jax.random.PRNGKey(0), jnp.zeros(obs_dim + 1))
    template_v = critic_module.init(jax.random.PRNGKey(0), jnp.zeros(obs_dim + 1))
    kwargs = dict(
        actor=ours.flat(actor_module, obs_dim + 1),
        critic=ours.flat(critic_module, obs_dim + 1),
        args=args,
        policy_optimizer=ours.obgd(args.lr, args.gamma, args.lamda, args.kappa_policy),
        value_optimizer=ours.obgd(args.lr, args.gamma, args.lamda, args.kappa_value),
        time_limit=time_limit,
    )
    start = jax.jit(lambda key, obs: ours.start(key, obs, **kwargs))
    step = jax.jit(lambda *a: ours.train_step(*a, **kwargs))

    s, _ = env.reset(seed=cli.seed)
    state = start(jax.random.PRNGKey(cli.seed), np.float32(tap.obs))
    state = state._replace(
        policy_params=torch_to_flat(actor_layers, template_pi),
        value_params=torch_to_flat(critic_layers, template_v),
    )
    worst, flips = {}, []  # flips: steps where the two δ differ in sign (β sign(δ) H jumps)
    for t in range(1, cli.steps + 1):
        a = agent.sample_action(s)
        state = state._replace(action=jnp.asarray(a))  # the reference's action, for both
        diffs = {"normalised obs": rel(state.norm_obs, s)}
        s_prime, r, terminated, truncated, _ = env.step(a)
        next_obs, reward, done = (
            np.float32(tap.obs),
            np.float32(tap.reward),
            terminated or truncated,
        )
        with torch.no_grad():  # the reference's δ, with its pre-update weights
            x, x_prime = (
                torch.tensor(s, dtype=torch.float),
                torch.tensor(s_prime, dtype=torch.float),
            )
            delta = float(r + 0.99 * v(x_prime) * (0.0 if done else 1.0) - v(x))
        agent.update_params(s, a, r, s_prime, done, 0.01)
        s = s_prime
        if done:
            s, _ = env.reset()
        reset_obs = np.float32(tap.obs)
        state, out = step(state, next_obs, reward, done, reset_obs)
        out = ours.StepOutput(out[:-3], *out[-3:])
        diffs.update(
            {
                "delta": abs(float(out.td_error) - delta) / max(abs(delta), 1.0),
                "policy step size": rel(out.policy_step_size, log["policy"]),
                "value step size": rel(out.value_step_size, log["value"]),
                "policy trace": rel(
                    -np.asarray(state.policy_opt_state.eligibility_trace),
                    torch_traces(agent.optimizer_policy, actor_layers, template_pi),
                ),
                "value trace": rel(
                    -np.asarray(state.value_opt_state.eligibility_trace),
                    torch_traces(agent.optimizer_value, critic_layers, template_v),
                ),
                "policy weights": rel(
                    state.policy_params, torch_to_flat(actor_layers, template_pi)
                ),
                "value weights": rel(state.value_params, torch_to_flat(critic_layers, template_v)),
            }
        )
        if np.sign(float(out.td_error)) != np.sign(delta):
            flips.append(t)
        for name, d in diffs.items():
            if d > worst.get(name, (-1, 0))[0]:
                worst[name] = (d, t)
        if t % cli.every == 0 or t == cli.steps:
            print(f"step {t}: " + ", ".join(f"{k} {d:.1e}" for k, d in diffs.items()))
    print(f"steps where the two δ differ in sign: {flips}")
    print("largest relative difference over all steps (at step):")
    for name, (d, t) in worst.items():
        print(f"  {name:16s} {d:.2e} ({t})")


if __name__ == "__main__":
    main()
