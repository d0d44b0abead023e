"""Each piece of the flat-observation scripts against an independent NumPy reference written here:
ObGD in the paper's signs, the networks, the normalisers, action selection, and several consecutive
train_steps of every algorithm (traces carried, episodes ending, the next episode starting)."""

import inspect
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import from_np, np_mlp, np_obgd, numeric_grad, to_np, unpack
from jax.flatten_util import ravel_pytree

import stream_ac_continuous
import stream_ac_discrete
import stream_q
import stream_q_atari
import stream_q_minatar
import stream_sarsa

jax.config.update("jax_platforms", "cpu")
SCRIPTS = [stream_q, stream_sarsa, stream_ac_continuous, stream_ac_discrete]  # with a time feature
ALL = SCRIPTS + [stream_q_minatar, stream_q_atari]
T = 100  # the time feature's T in these unit tests; test_scripts checks each script's own T


def hidden(p, n=2):
    return [(p[f"Dense_{i}/kernel"], p[f"Dense_{i}/bias"]) for i in range(n)]


def head(p, x, i=2):
    """The i-th dense layer on the hidden activations of x: Q-values, logits, mu or a value."""
    return np_mlp(hidden(p), x) @ p[f"Dense_{i}/kernel"] + p[f"Dense_{i}/bias"]


def as_jax(d):
    return {k: jnp.asarray(v, jnp.float32) for k, v in d.items()}


# the shared blocks (ObGD, leaky_relu, sparse init, the normalisers) read the same in every script
# (test_shared_blocks.py), so their behaviour is tested on stream_q
@pytest.mark.parametrize("lr", [1.0, 0.3])
@pytest.mark.parametrize("bound_active", [False, True])
def test_obgd_one_step(lr, bound_active):
    rng = np.random.default_rng(0)
    scale = 1.0 if bound_active else 1e-3
    params = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    trace = {k: scale * rng.normal(size=v.shape) for k, v in params.items()}
    grads = {k: scale * rng.normal(size=v.shape) for k, v in params.items()}
    delta, kappa, gamma, lamda = 0.7, 2.0, 0.99, 0.8
    z_sum = sum(np.abs(gamma * lamda * trace[k] + grads[k]).sum() for k in params)
    assert (lr * kappa * max(abs(delta), 1) * z_sum > 1) == bound_active
    expected_params, expected_trace, expected_step = np_obgd(
        params, trace, grads, delta, False, kappa, gamma, lamda, lr
    )
    optimizer = stream_q.obgd(lr, gamma, lamda, kappa)
    assert isinstance(optimizer, optax.GradientTransformationExtraArgs)
    fresh = optimizer.init(as_jax(params))
    assert not any(np.any(z) for z in fresh.eligibility_trace.values())
    assert fresh.step_size is None  # ObGD carries the trace only
    state = fresh._replace(eligibility_trace=as_jax(trace))
    updates, new_state = optimizer.update(
        as_jax(grads), state, delta=jnp.float32(delta), reset=jnp.bool_(False)
    )
    new_params = optax.apply_updates(as_jax(params), updates)
    assert float(new_state.step_size) == pytest.approx(expected_step, rel=1e-5)
    assert (expected_step < lr) == bound_active
    for k in params:
        np.testing.assert_allclose(new_params[k], expected_params[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            new_state.eligibility_trace[k], expected_trace[k], rtol=1e-5, atol=1e-6
        )
    # reset: the update still uses the decayed trace, then the trace is zeroed
    updates, reset_state = optimizer.update(
        as_jax(grads), state, delta=jnp.float32(delta), reset=jnp.bool_(True)
    )
    for k in params:
        np.testing.assert_allclose(
            optax.apply_updates(as_jax(params), updates)[k],
            expected_params[k],
            rtol=1e-5,
            atol=1e-6,
        )
        assert not np.any(reset_state.eligibility_trace[k])


@pytest.mark.parametrize("module", [stream_q])
def test_leaky_relu_has_torchs_gradient_at_zero(module):
    # sparse init zeroes every input weight when fan_in <= 9 (CartPole: 4 + 1), so first-layer units
    # start at exactly 0, where jax.nn.leaky_relu's gradient
    # is 1 and the reference's (torch) is 0.01
    x = jnp.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_allclose(module.leaky_relu(x), [-0.02, 0.0, 0.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(module.leaky_relu))(x), [0.01, 0.01, 0.01, 1.0], rtol=1e-6
    )
    for script in ALL:  # every network uses it
        assert "nn.leaky_relu(" not in inspect.getsource(script)


@pytest.mark.parametrize("shape", [(5, 32), (128, 6), (3, 3, 4, 16)])
def test_sparse_init(shape):
    kernel = np.asarray(stream_q.sparse_init(0.9)(jax.random.PRNGKey(1), shape))
    fan_in = math.prod(shape[:-1])
    per_unit = kernel.reshape(fan_in, shape[-1])
    assert np.all((per_unit == 0).sum(axis=0) == math.ceil(0.9 * fan_in))
    assert np.all(np.abs(kernel) <= 1 / math.sqrt(fan_in))
    # the zeros fall on different inputs for different units
    if fan_in > 10:
        assert len({tuple(np.flatnonzero(col == 0)) for col in per_unit.T}) > 1


def test_networks_match_numpy_forward_and_zero_bias():
    x = np.random.default_rng(0).normal(size=9).astype(np.float32)
    q_net = stream_q.QNetwork(3, 16)
    p = to_np(q_net.init(jax.random.PRNGKey(0), x))
    assert all(not np.any(v) for k, v in p.items() if k.endswith("bias"))
    p = {
        k: np.random.default_rng(1).normal(size=v.shape) for k, v in p.items()
    }  # non-zero biases too
    np.testing.assert_allclose(q_net.apply(from_np(p), x), head(p, x), rtol=1e-4, atol=1e-4)

    actor = stream_ac_continuous.Actor(2, 16)
    p = to_np(actor.init(jax.random.PRNGKey(0), x))
    p = {k: np.random.default_rng(2).normal(size=v.shape) for k, v in p.items()}
    mu, std = actor.apply(from_np(p), x)
    np.testing.assert_allclose(mu, head(p, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std, np.log1p(np.exp(head(p, x, 3))), rtol=1e-4, atol=1e-4)
    for module in (stream_ac_continuous, stream_ac_discrete):
        critic = module.Critic(16)
        p = to_np(critic.init(jax.random.PRNGKey(0), x))
        p = {k: np.random.default_rng(3).normal(size=v.shape) for k, v in p.items()}
        assert float(critic.apply(from_np(p), x)) == pytest.approx(
            head(p, x)[0], rel=1e-4, abs=1e-4
        )


@pytest.mark.parametrize("module", [stream_q])
def test_welford_observation_normaliser_over_a_stream(module):
    xs = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4))
    stats = module.RunningStats(jnp.zeros(4), jnp.zeros(4), jnp.float32(0.0))
    for t, x in enumerate(xs, start=1):
        stats, out = module.observe(stats, jnp.asarray(x, jnp.float32), 7, 10)
        seen = xs[:t]
        var = np.ones(4) if t < 2 else seen.var(axis=0, ddof=1)
        expected = (x - seen.mean(axis=0)) / np.sqrt(var + 1e-8)
        np.testing.assert_allclose(out[:4], expected, rtol=1e-4, atol=1e-4)
        assert out[4] == pytest.approx(-0.5 + 7 / 10)  # time feature, not normalised


# ---- the agents' steps -------------------------------------------------------------------------


def make_kwargs(module, obs_dim, n_actions, hidden_size=8, **arg_overrides):
    """(args, the keyword arguments the script's __main__ gives start() and train_step(), and the
    unravel of each network's flat weight vector by name, to read the weights back as dicts)."""
    args = module.Args(hidden_size=hidden_size, total_steps=1000, **arg_overrides)
    zeros, key = jnp.zeros(obs_dim + 1), jax.random.PRNGKey(0)
    optimizer = partial(module.obgd, args.lr, args.gamma, args.lamda)
    if hasattr(module, "QNetwork"):
        net = module.QNetwork(n_actions, hidden_size)
        kw = dict(
            q_network=module.flat(net, obs_dim + 1),
            args=args,
            optimizer=optimizer(args.kappa),
            time_limit=T,
        )
        return args, kw, {"q": ravel_pytree(net.init(key, zeros))[1]}
    actor, critic = module.Actor(n_actions, hidden_size), module.Critic(hidden_size)
    kw = dict(
        actor=module.flat(actor, obs_dim + 1),
        critic=module.flat(critic, obs_dim + 1),
        args=args,
        time_limit=T,
        policy_optimizer=optimizer(args.kappa_policy),
        value_optimizer=optimizer(args.kappa_value),
    )
    unravel = {"policy": ravel_pytree(actor.init(key, zeros))[1]}
    return args, kw, dict(unravel, value=ravel_pytree(critic.init(key, zeros))[1])


class NpAgent:
    """A float64 NumPy reference of one agent's streaming step: Welford observation
    statistics updated first, the time feature, reward scaling by the discounted return's variance,
    the TD error with the pre-update weights, and ObGD on each network with its own trace."""

    def __init__(self, obs, networks, gamma, lamda):
        self.seen, self.returns, self.u, self.t = [obs.astype(np.float64)], [], 0.0, 0
        self.x = self.normalise(obs)
        self.networks = {name: p for name, p in networks.items()}  # name -> params
        self.traces = {
            name: {k: np.zeros_like(v) for k, v in p.items()} for name, p in networks.items()
        }
        self.gamma, self.lamda = gamma, lamda

    def normalise(self, obs):
        seen = np.stack(self.seen)
        var = np.ones(obs.shape) if len(seen) < 2 else seen.var(0, ddof=1)
        return np.append((obs - seen.mean(0)) / np.sqrt(var + 1e-8), -0.5 + self.t / T)

    def observe(self, next_obs, reward, done, reset_obs):
        """Returns (x, x', scaled reward); afterwards self.x is the next action's observation."""
        self.u = self.gamma * self.u * (1 - done) + reward
        self.returns.append(self.u)
        var = 1.0 if len(self.returns) < 2 else np.var(self.returns, ddof=1)
        self.seen.append(next_obs.astype(np.float64))
        self.t += 1
        x, next_x = self.x, self.normalise(next_obs)
        if done:
            self.seen.append(reset_obs.astype(np.float64))
            self.t = 0
        self.x = self.normalise(reset_obs) if done else next_x
        return x, next_x, reward / math.sqrt(var + 1e-8)

    def update(self, name, value, delta, reset, kappa):
        """ObGD on network name with g = the numeric gradient of value(params) (q(s, a), v(s), or
        the actor's log π + β sign(δ) H); returns the step size."""
        grads = numeric_grad(value, self.networks[name])
        self.networks[name], self.traces[name], step = np_obgd(
            self.networks[name],
            self.traces[name],
            grads,
            delta,
            reset,
            kappa,
            self.gamma,
            self.lamda,
        )
        return step


def assert_close(got, expected, what):
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=2e-3, atol=2e-4, err_msg=f"{what} {k}")


def random_params(unravel, flat, seed):
    """Random float64 weights (biases too) shaped like the flat vector flat."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.5, size=v.shape) for k, v in to_np(flat, unravel).items()}


# a stream of transitions (next_obs, raw reward, done, reset_obs): two steps, an episode's end, two
# steps of the next episode. The first trace is non-zero from step 2 on, so every later step checks
# that the returned trace is carried (decayed and added to) into the next call.
def transitions(obs_dim, seed=7):
    rng = np.random.default_rng(seed)
    obs = lambda: rng.normal(0, 1, obs_dim).astype(np.float32)  # noqa: E731
    dones = [False, False, True, False, False]
    return [(obs(), np.float32(rng.normal(1, 2)), done, obs()) for done in dones]


@pytest.mark.parametrize("epsilon", [0.0, 1.0], ids=["greedy", "random"])
@pytest.mark.parametrize("module", [stream_q, stream_sarsa])
def test_value_based_train_steps_against_numpy(module, epsilon):
    args, kw, unravel = make_kwargs(module, 4, 3, start_e=epsilon, end_e=epsilon)
    obs = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    state = module.start(jax.random.PRNGKey(0), obs, **kw)
    p = random_params(unravel["q"], state.params, 3)
    state = state._replace(params=from_np(p, ravel=True))
    reference = NpAgent(obs, {"q": p}, args.gamma, args.lamda)
    step_fn = jax.jit(partial(module.train_step, **kw))
    resets = 0
    for t, (next_obs, reward, done, reset_obs) in enumerate(transitions(4)):
        a, nongreedy = int(state.action), bool(getattr(state, "nongreedy", False))
        new_state, out = step_fn(state, next_obs, reward, done, reset_obs)
        out = unpack(module, out)
        x, next_x, r = reference.observe(next_obs, reward, done, reset_obs)
        q = reference.networks["q"]
        if module is stream_q:  # max over a'; Watkins' Q(λ) cuts the trace after a non-greedy a
            bootstrap, reset = head(q, next_x).max(), done or nongreedy
        else:  # a' = the action the agent takes next, picked in s' with the pre-update weights
            bootstrap, reset = head(q, next_x)[int(out.action)], done
        delta = r + args.gamma * bootstrap * (1 - done) - head(q, x)[a]
        step = reference.update("q", lambda p: head(p, x)[a], delta, reset, args.kappa)
        assert float(out.td_error) == pytest.approx(delta, rel=1e-3, abs=1e-3), t
        assert float(out.step_size) == pytest.approx(step, rel=1e-3), t
        assert int(out.action) == int(new_state.action), t
        assert_close(
            to_np(new_state.params, unravel["q"]), reference.networks["q"], f"step {t} weights"
        )
        assert_close(
            to_np(new_state.opt_state.eligibility_trace, unravel["q"]),
            reference.traces["q"],
            f"step {t} trace",
        )
        np.testing.assert_allclose(new_state.norm_obs, reference.x, rtol=1e-4, atol=1e-4)
        assert int(new_state.episode_step) == reference.t
        resets += reset
        state = new_state
    assert resets >= 1  # the episode's end at least


@pytest.mark.parametrize("module", [stream_ac_discrete, stream_ac_continuous])
def test_actor_critic_train_steps_against_numpy(module):
    continuous = module is stream_ac_continuous
    args, kw, unravel = make_kwargs(module, 3, 2)
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    state = module.start(jax.random.PRNGKey(0), obs, **kw)
    pp = random_params(unravel["policy"], state.policy_params, 4)
    vp = random_params(unravel["value"], state.value_params, 5)
    state = state._replace(
        policy_params=from_np(pp, ravel=True), value_params=from_np(vp, ravel=True)
    )
    if continuous:  # outside the bounds [-1, 1]: the log-prob is of the unclipped action
        state = state._replace(action=jnp.array([1.7, -0.4], jnp.float32))
    reference = NpAgent(obs, {"policy": pp, "value": vp}, args.gamma, args.lamda)
    step_fn = jax.jit(partial(module.train_step, **kw))
    for t, (next_obs, reward, done, reset_obs) in enumerate(transitions(3)):
        a = np.asarray(state.action, np.float64) if continuous else int(state.action)
        new_state, out = step_fn(state, next_obs, reward, done, reset_obs)
        out = unpack(module, out)
        x, next_x, r = reference.observe(next_obs, reward, done, reset_obs)
        v = lambda p, s: head(p, s)[0]  # noqa: E731
        delta = (
            r
            + args.gamma * v(reference.networks["value"], next_x) * (1 - done)
            - v(reference.networks["value"], x)
        )

        def policy_objective(p):  # its gradient: the actor's g
            if continuous:
                mu, std = head(p, x), np.log1p(np.exp(head(p, x, 3)))
                log_prob = (
                    -0.5 * ((a - mu) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
                ).sum()
                entropy = (0.5 + 0.5 * np.log(2 * np.pi) + np.log(std)).sum()
            else:
                logits = head(p, x)
                log_probs = logits - np.log(np.exp(logits).sum())
                log_prob, entropy = log_probs[a], -(np.exp(log_probs) * log_probs).sum()
            return log_prob + args.entropy_coeff * np.sign(delta) * entropy

        step_v = reference.update("value", lambda p: v(p, x), delta, done, args.kappa_value)
        step_p = reference.update("policy", policy_objective, delta, done, args.kappa_policy)
        assert float(out.td_error) == pytest.approx(delta, rel=1e-3, abs=1e-3), t
        assert float(out.policy_step_size) == pytest.approx(step_p, rel=1e-3), t
        assert float(out.value_step_size) == pytest.approx(step_v, rel=1e-3), t
        for name in ("policy", "value"):
            assert_close(
                to_np(getattr(new_state, f"{name}_params"), unravel[name]),
                reference.networks[name],
                f"step {t} {name} weights",
            )
            trace = to_np(getattr(new_state, f"{name}_opt_state").eligibility_trace, unravel[name])
            assert_close(trace, reference.traces[name], f"step {t} {name} trace")
            assert (
                not any(np.any(z) for z in trace.values())
            ) == done  # zeroed at the episode's end only
        # the next action is taken in the reset observation after
        # a terminal step, its time feature -0.5
        np.testing.assert_allclose(new_state.norm_obs, reference.x, rtol=1e-4, atol=1e-4)
        assert (
            int(new_state.episode_step) == reference.t
            and (float(new_state.norm_obs[-1]) == -0.5) == done
        )
        # the action returned is the one stored, and it was
        # drawn from the policy of that observation
        np.testing.assert_array_equal(out.action, np.asarray(new_state.action))
        state = new_state


def test_continuous_action_is_a_sample_of_the_policy_and_left_unclipped():
    args, kw, _ = make_kwargs(stream_ac_continuous, 3, 2)
    state = stream_ac_continuous.start(jax.random.PRNGKey(0), np.zeros(3, np.float32), **kw)
    norm_obs = jnp.array([0.3, -1.0, 2.0, -0.5])
    mu, std = kw["actor"].apply(state.policy_params, norm_obs)
    act = jax.jit(partial(stream_ac_continuous.act, actor=kw["actor"]))
    samples = np.array(
        [act(state._replace(key=jax.random.PRNGKey(i)), norm_obs).action for i in range(400)]
    )
    np.testing.assert_allclose(samples.mean(0), mu, atol=4 * float(std.max()) / 20)
    np.testing.assert_allclose(samples.std(0), std, rtol=0.15)
    # the env clips (gymnasium's ClipAction); the agent keeps and learns from the unclipped sample
    env = stream_ac_continuous.make_env("HalfCheetah-v5")
    observations = []
    for action in (np.full(6, 5.0), np.full(6, 1.0)):
        env.reset(seed=0)
        observations.append(env.step(action)[0])
    np.testing.assert_array_equal(*observations)


def test_categorical_action_follows_the_softmax_of_the_logits():
    args, kw, unravel = make_kwargs(stream_ac_discrete, 3, 3)
    state = stream_ac_discrete.start(jax.random.PRNGKey(0), np.zeros(3, np.float32), **kw)
    p = random_params(unravel["policy"], state.policy_params, 1)
    state, norm_obs = (
        state._replace(policy_params=from_np(p, ravel=True)),
        jnp.array([0.3, -1.0, 2.0, -0.5]),
    )
    logits = head(p, np.asarray(norm_obs, np.float64))
    probs = np.exp(logits) / np.exp(logits).sum()
    act = jax.jit(partial(stream_ac_discrete.act, actor=kw["actor"]))
    counts = np.bincount(
        [int(act(state._replace(key=jax.random.PRNGKey(i)), norm_obs).action) for i in range(2000)],
        minlength=3,
    )
    np.testing.assert_allclose(counts / 2000, probs, atol=0.04)


def q_agent(module, **arg_overrides):
    """(args, kwargs, state) of a fresh agent of a Q script, with a small network."""
    if module in (stream_q, stream_sarsa):
        args, kw, _ = make_kwargs(module, 4, 3, **arg_overrides)
        return args, kw, module.start(jax.random.PRNGKey(0), np.zeros(4, np.float32), **kw)
    args = module.Args(hidden_size=4, total_steps=1000, **arg_overrides)
    kw = dict(
        q_network=module.QNetwork(3, 4), optimizer=module.obgd(1.0, 0.99, 0.8, 2.0), args=args
    )
    obs = np.zeros((10, 10, 2) if module is stream_q_minatar else (84, 84), np.float32)
    return args, kw, module.start(jax.random.PRNGKey(0), obs, **kw)


@pytest.mark.parametrize("module", [stream_q, stream_q_minatar])
def test_act_marks_a_random_action_nongreedy_only_when_it_differs_from_argmax_q(module):
    # Watkins' Q(λ) cuts the trace after a non-greedy action: act() must store the flag it computes
    args, _, state = q_agent(module, start_e=0.5, end_e=0.5)
    q_values = jnp.array([0.1, 0.7, -0.2])
    act = jax.jit(partial(module.act, args=args))
    flags = []
    for i in range(200):
        new_state, _ = act(state._replace(key=jax.random.PRNGKey(i)), state.norm_obs, q_values)
        assert bool(new_state.nongreedy) == (int(new_state.action) != 1), i
        flags.append(bool(new_state.nongreedy))
    # epsilon 0.5 with 3 actions: a random action half the
    # time, a non-greedy one a third of the time
    assert 0.2 < np.mean(flags) < 0.45


@pytest.mark.parametrize("module", [stream_q, stream_sarsa, stream_q_minatar, stream_q_atari])
def test_epsilon_decays_linearly_over_the_exploration_fraction(module):
    # the epsilon of action t = global_step + 1: 1 -> 0.01 over fraction * 1000 actions (0.05: 50)
    args, kw, state = q_agent(module)
    duration = args.exploration_fraction * 1000
    if module is stream_q_atari:
        act = jax.jit(partial(module.act, q_network=kw["q_network"], args=args))
        call = lambda t: act(state._replace(global_step=jnp.int32(t)), state.frames)  # noqa: E731
    else:
        act = jax.jit(partial(module.act, args=args))
        call = lambda t: act(state._replace(global_step=jnp.int32(t)), state.norm_obs, jnp.zeros(3))  # noqa: E731
    for t in (0, 9, int(duration) - 1, 4999):
        assert float(call(t)[1]) == pytest.approx(
            max(1 - 0.99 * (t + 1) / duration, 0.01), abs=1e-6
        ), t


def test_reward_scaling_over_a_stream_restarts_the_trace_at_each_episode_end():
    rng = np.random.default_rng(0)
    rewards, dones = rng.normal(1.0, 2.0, size=60).astype(np.float32), rng.random(60) < 0.1
    _, kw, _ = make_kwargs(stream_q, 4, 2)
    state = stream_q.start(jax.random.PRNGKey(0), np.zeros(4, np.float32), **kw)
    step_fn = jax.jit(partial(stream_q.train_step, **kw))
    gamma, u, us = 0.99, 0.0, []
    for r, d in zip(rewards, dones):
        u = gamma * u * (1 - d) + r
        us.append(u)
        state, _ = step_fn(state, np.zeros(4, np.float32), r, d, np.zeros(4, np.float32))
        assert float(state.reward_trace) == pytest.approx(u, rel=1e-4, abs=1e-5)
        var = 1.0 if len(us) < 2 else np.var(us, ddof=1)
        assert float(state.reward_stats.var()) == pytest.approx(var, rel=1e-4)


def test_sarsa_target_uses_the_action_taken_not_the_max():
    args, kw, unravel = make_kwargs(stream_sarsa, 4, 2)
    obs = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    state = stream_sarsa.start(jax.random.PRNGKey(0), obs, **kw)
    p = random_params(unravel["q"], state.params, 3)
    state = state._replace(params=from_np(p, ravel=True))
    next_obs = np.array([0.2, 0.1, -0.3, 0.4], np.float32)
    reference = NpAgent(obs, {"q": p}, args.gamma, args.lamda)
    _, next_x, _ = reference.observe(next_obs, 1.0, False, next_obs)
    q_next = head(p, next_x)
    deltas = {}
    for i in range(30):  # epsilon is near 1 here, so both actions come up
        _, out = stream_sarsa.train_step(
            state._replace(key=jax.random.PRNGKey(i)),
            next_obs,
            np.float32(1.0),
            False,
            next_obs,
            **kw,
        )
        out = unpack(stream_sarsa, out)
        deltas[int(out.action)] = float(out.td_error)
    assert set(deltas) == {0, 1}
    assert deltas[1] - deltas[0] == pytest.approx(
        args.gamma * (q_next[1] - q_next[0]), rel=1e-3, abs=1e-4
    )


def test_sarsa_carries_a_prime_from_the_terminal_observation_into_the_next_episode():
    """As the reference: the episode's first action is a', picked greedily in the terminal s' with
    the pre-update weights, while the agent's observation is the reset one. Weights are drawn until
    that a' differs from the greedy action in the reset observation, so the two cannot agree."""
    args, kw, unravel = make_kwargs(stream_sarsa, 4, 2, start_e=0.0, end_e=0.0)  # greedy
    obs = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    next_obs, reset_obs = np.full(4, 5.0, np.float32), np.full(4, -5.0, np.float32)
    state = stream_sarsa.start(jax.random.PRNGKey(0), obs, **kw)
    seen = np.stack([obs, next_obs]).astype(np.float64)
    next_x = np.append(
        (next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / T
    )
    seen = np.stack([obs, next_obs, reset_obs]).astype(np.float64)
    reset_x = np.append((reset_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5)
    for seed in range(3, 50):
        p = random_params(unravel["q"], state.params, seed)
        new_state, out = stream_sarsa.train_step(
            state._replace(params=from_np(p, ravel=True)),
            next_obs,
            np.float32(1.0),
            True,
            reset_obs,
            **kw,
        )
        q_reset = kw["q_network"].apply(new_state.params, jnp.asarray(reset_x))
        if np.argmax(head(p, next_x)) != np.argmax(np.asarray(q_reset)):
            break
    else:
        pytest.fail("no weights found whose terminal and reset greedy actions differ")
    np.testing.assert_allclose(new_state.norm_obs, reset_x, rtol=1e-4, atol=1e-4)
    out = unpack(stream_sarsa, out)
    assert int(out.action) == int(new_state.action) == int(np.argmax(head(p, next_x)))
