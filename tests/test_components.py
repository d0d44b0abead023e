"""Each piece of the scripts against an independent NumPy reference written here."""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import from_np, np_mlp, np_obgd, numeric_grad, to_np

import stream_ac_continuous
import stream_ac_discrete
import stream_q
import stream_q_atari
import stream_q_minatar
import stream_sarsa

jax.config.update("jax_platforms", "cpu")
SCRIPTS = [stream_q, stream_sarsa, stream_ac_continuous, stream_ac_discrete]  # with a time feature
ALL = SCRIPTS + [stream_q_minatar, stream_q_atari]


def hidden(p, n=2):
    return [(p[f"Dense_{i}/kernel"], p[f"Dense_{i}/bias"]) for i in range(n)]


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
    expected_params, expected_trace, expected_step = np_obgd(params, trace, grads, delta, False, kappa, gamma, lamda,
                                                             lr)
    as_jax = lambda d: {k: jnp.asarray(v, jnp.float32) for k, v in d.items()}  # noqa: E731
    optimizer = stream_q.obgd(lr, gamma, lamda, kappa)
    assert isinstance(optimizer, optax.GradientTransformationExtraArgs)
    fresh = optimizer.init(as_jax(params))
    assert not any(np.any(z) for z in fresh.eligibility_trace.values())
    state = fresh._replace(eligibility_trace=as_jax(trace))
    updates, new_state = optimizer.update(as_jax(grads), state, delta=jnp.float32(delta), reset=jnp.bool_(False))
    new_params = optax.apply_updates(as_jax(params), updates)
    assert float(new_state.step_size) == pytest.approx(expected_step, rel=1e-5)
    assert (expected_step < lr) == bound_active
    for k in params:
        np.testing.assert_allclose(new_params[k], expected_params[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_state.eligibility_trace[k], expected_trace[k], rtol=1e-5, atol=1e-6)
    # reset: the update still uses the decayed trace, then the trace is zeroed
    updates, reset_state = optimizer.update(as_jax(grads), state, delta=jnp.float32(delta), reset=jnp.bool_(True))
    for k in params:
        np.testing.assert_allclose(optax.apply_updates(as_jax(params), updates)[k], expected_params[k], rtol=1e-5,
                                   atol=1e-6)
        assert not np.any(reset_state.eligibility_trace[k])


@pytest.mark.parametrize("module", [stream_q])
def test_leaky_relu_has_torchs_gradient_at_zero(module):
    # sparse init zeroes every input weight when fan_in <= 9 (CartPole: 4 + 1), so first-layer units
    # start at exactly 0, where jax.nn.leaky_relu's gradient is 1 and the reference's (torch) is 0.01
    x = jnp.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_allclose(module.leaky_relu(x), [-0.02, 0.0, 0.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(module.leaky_relu))(x), [0.01, 0.01, 0.01, 1.0], rtol=1e-6)
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
    params = q_net.init(jax.random.PRNGKey(0), x)
    p = to_np(params)
    assert all(not np.any(v) for k, v in p.items() if k.endswith("bias"))
    p = {k: np.random.default_rng(1).normal(size=v.shape) for k, v in p.items()}  # non-zero biases too
    expected = np_mlp(hidden(p), x) @ p["Dense_2/kernel"] + p["Dense_2/bias"]
    np.testing.assert_allclose(q_net.apply(from_np(p), x), expected, rtol=1e-4, atol=1e-4)

    actor = stream_ac_continuous.Actor(2, 16)
    p = to_np(actor.init(jax.random.PRNGKey(0), x))
    p = {k: np.random.default_rng(2).normal(size=v.shape) for k, v in p.items()}
    h = np_mlp(hidden(p), x)
    mu, std = actor.apply(from_np(p), x)
    np.testing.assert_allclose(mu, h @ p["Dense_2/kernel"] + p["Dense_2/bias"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std, np.log1p(np.exp(h @ p["Dense_3/kernel"] + p["Dense_3/bias"])), rtol=1e-4, atol=1e-4)


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


@pytest.mark.parametrize("module", [stream_q])
def test_reward_scaler_over_a_stream(module):
    rng = np.random.default_rng(0)
    rewards, dones = rng.normal(1.0, 2.0, size=60), rng.random(60) < 0.1
    gamma, u, us = 0.99, 0.0, []
    stats, trace = module.RunningStats(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0)), jnp.float32(0.0)
    for r, d in zip(rewards, dones):
        u = gamma * u * (1 - d) + r
        us.append(u)
        var = 1.0 if len(us) < 2 else np.var(us, ddof=1)
        stats, trace, scaled = module.scale_reward(stats, trace, jnp.float32(r), jnp.float32(d), gamma)
        assert float(scaled) == pytest.approx(r / math.sqrt(var + 1e-8), rel=1e-4)


def test_epsilon_greedy_nongreedy_only_when_the_action_differs():
    net = stream_q.QNetwork(2, 8)
    x = jnp.ones(5)
    params = net.init(jax.random.PRNGKey(0), x)
    greedy = int(jnp.argmax(net.apply(params, x)))
    seen = set()
    for i in range(40):
        action, nongreedy = stream_q.epsilon_greedy(net.apply(params, x), jax.random.PRNGKey(i), 1.0)
        assert bool(nongreedy) == (int(action) != greedy)
        seen.add(int(action))
    assert seen == {0, 1}
    action, nongreedy = stream_q.epsilon_greedy(net.apply(params, x), jax.random.PRNGKey(0), 0.0)
    assert int(action) == greedy and not bool(nongreedy)


def q_setup(hidden_size=8):
    args = stream_q.Args(hidden_size=hidden_size, total_steps=1000)
    net = stream_q.QNetwork(2, hidden_size)
    kw = dict(q_network=net, unravel=stream_q.unravel_fn(net, jnp.zeros(5)), args=args, max_episode_steps=100,
              optimizer=stream_q.obgd(args.lr, args.gamma, args.lamda, args.kappa))
    obs = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    state, _ = stream_q.start(jax.random.PRNGKey(0), obs, None, **kw)
    return args, kw, obs, state


@pytest.mark.parametrize("nongreedy,done", [(False, False), (True, False), (False, True)])
def test_q_train_step_against_numpy(nongreedy, done):
    args, kw, obs, state = q_setup()
    shapes = {k: v.shape for k, v in to_np(state.params, kw["unravel"]).items()}
    p = {k: np.random.default_rng(3).normal(0, 0.5, size=shape) for k, shape in shapes.items()}
    state = state._replace(params=from_np(p, ravel=True), action=jnp.int32(1), nongreedy=jnp.bool_(nongreedy))
    next_obs = np.array([0.2, 0.1, -0.3, 0.4], np.float32)
    new_state, out = stream_q.train_step(state, next_obs, np.float32(1.0), done, next_obs, **kw)

    # reference: statistics of two observations, first reward scaled by sqrt(1 + 1e-8)
    seen = np.stack([obs, next_obs]).astype(np.float64)
    x = np.append(np.array(state.norm_obs, np.float64), [])
    next_x = np.append((next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / 100)
    q = lambda p, s: np_mlp(hidden(p), s) @ p["Dense_2/kernel"] + p["Dense_2/bias"]  # noqa: E731
    delta = 1.0 / math.sqrt(1 + 1e-8) + args.gamma * q(p, next_x).max() * (1 - done) - q(p, x)[1]
    grads = numeric_grad(lambda p: -q(p, x)[1], p)
    expected, trace, step = np_obgd(p, {k: 0 * v for k, v in p.items()}, grads, delta, nongreedy or done,
                                    args.kappa, args.gamma, args.lamda)
    assert float(out[1]) == pytest.approx(1.0 - 0.99 * 2 / 50)  # epsilon of the 2nd action (1000 steps, 0.05)
    assert float(out[2]) == pytest.approx(delta, rel=1e-4, abs=1e-4)
    assert float(out[3]) == pytest.approx(step, rel=1e-4)  # logged as charts/obgd_step_size
    got = to_np(new_state.params, kw["unravel"])
    for k in p:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-3, atol=1e-4)
    assert (not np.any(new_state.opt_state.eligibility_trace)) == (nongreedy or done)
    assert int(new_state.episode_step) == (0 if done else 1)


def test_q_first_action_after_done_comes_from_the_reset_observation():
    args, kw, obs, state = q_setup()
    next_obs, reset_obs = np.full(4, 5.0, np.float32), np.full(4, -5.0, np.float32)
    new_state, _ = stream_q.train_step(state, next_obs, np.float32(1.0), True, reset_obs, **kw)
    seen = np.stack([obs, next_obs, reset_obs]).astype(np.float64)
    expected = np.append((reset_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5)
    np.testing.assert_allclose(new_state.norm_obs, expected, rtol=1e-4, atol=1e-4)
    assert int(new_state.obs_stats.count) == 3


def test_ac_train_step_against_numpy():
    hidden_size, done = 8, False
    args = stream_ac_continuous.Args(hidden_size=hidden_size)
    low, high = -np.ones(2, np.float32), np.ones(2, np.float32)
    actor, critic = stream_ac_continuous.Actor(2, hidden_size), stream_ac_continuous.Critic(hidden_size)
    kw = dict(actor=actor, critic=critic, unravel_policy=stream_ac_continuous.unravel_fn(actor, jnp.zeros(4)),
              unravel_value=stream_ac_continuous.unravel_fn(critic, jnp.zeros(4)), args=args, max_episode_steps=100,
              low=low, high=high, policy_optimizer=stream_ac_continuous.obgd(args.lr, args.gamma, args.lamda,
                                                                             args.kappa_policy),
              value_optimizer=stream_ac_continuous.obgd(args.lr, args.gamma, args.lamda, args.kappa_value))
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    state, _ = stream_ac_continuous.start(jax.random.PRNGKey(0), obs, None, **kw)
    rng = np.random.default_rng(4)
    pp = {k: rng.normal(0, 0.5, size=v.shape) for k, v in to_np(state.policy_params, kw["unravel_policy"]).items()}
    vp = {k: rng.normal(0, 0.5, size=v.shape) for k, v in to_np(state.value_params, kw["unravel_value"]).items()}
    action = np.array([1.7, -0.4], np.float32)  # outside the bounds: log-prob of the unclipped action
    state = state._replace(policy_params=from_np(pp, ravel=True), value_params=from_np(vp, ravel=True),
                           action=jnp.asarray(action))
    next_obs = np.array([0.2, 0.1, -0.3], np.float32)
    new_state, out = stream_ac_continuous.train_step(state, next_obs, np.float32(2.0), done, next_obs, **kw)

    seen = np.stack([obs, next_obs]).astype(np.float64)
    x = np.array(state.norm_obs, np.float64)
    next_x = np.append((next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / 100)
    v = lambda p, s: (np_mlp(hidden(p), s) @ p["Dense_2/kernel"] + p["Dense_2/bias"])[0]  # noqa: E731
    delta = 2.0 / math.sqrt(1 + 1e-8) + args.gamma * v(vp, next_x) - v(vp, x)

    def policy_loss(p):
        h = np_mlp(hidden(p), x)
        mu = h @ p["Dense_2/kernel"] + p["Dense_2/bias"]
        std = np.log1p(np.exp(h @ p["Dense_3/kernel"] + p["Dense_3/bias"]))
        log_prob = (-0.5 * ((action - mu) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum()
        entropy = (0.5 + 0.5 * np.log(2 * np.pi) + np.log(std)).sum()
        return -log_prob - args.entropy_coeff * np.sign(delta) * entropy

    assert float(out[-3]) == pytest.approx(delta, rel=1e-4, abs=1e-4)
    zeros = lambda p: {k: 0 * w for k, w in p.items()}  # noqa: E731
    expected_v, _, step_v = np_obgd(vp, zeros(vp), numeric_grad(lambda p: -v(p, x), vp), delta, done,
                                    args.kappa_value, args.gamma, args.lamda)
    expected_p, _, step_p = np_obgd(pp, zeros(pp), numeric_grad(policy_loss, pp), delta, done,
                                    args.kappa_policy, args.gamma, args.lamda)
    np.testing.assert_allclose(np.asarray(out[-2:]), [step_p, step_v], rtol=1e-3)  # charts/obgd_step_size_*
    for got, expected in [(to_np(new_state.value_params, kw["unravel_value"]), expected_v),
                          (to_np(new_state.policy_params, kw["unravel_policy"]), expected_p)]:
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-3, atol=1e-4)
    assert np.all(np.abs(np.asarray(out[:-3])) <= 1.0)  # the env gets the clipped action


def test_linear_schedule():
    duration = 0.05 * 1000
    assert float(stream_q.linear_schedule(1.0, 0.01, duration, 1)) == pytest.approx(1 - 0.99 / 50)
    assert float(stream_q.linear_schedule(1.0, 0.01, duration, 50)) == pytest.approx(0.01)
    assert float(stream_q.linear_schedule(1.0, 0.01, duration, 5000)) == pytest.approx(0.01)


def sarsa_setup(hidden_size=8):
    args = stream_sarsa.Args(hidden_size=hidden_size, total_steps=1000)
    net = stream_sarsa.QNetwork(2, hidden_size)
    kw = dict(q_network=net, unravel=stream_sarsa.unravel_fn(net, jnp.zeros(5)), args=args, max_episode_steps=100,
              optimizer=stream_sarsa.obgd(args.lr, args.gamma, args.lamda, args.kappa))
    obs = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    state, _ = stream_sarsa.start(jax.random.PRNGKey(0), obs, None, **kw)
    shapes = {k: v.shape for k, v in to_np(state.params, kw["unravel"]).items()}
    p = {k: np.random.default_rng(3).normal(0, 0.5, size=shape) for k, shape in shapes.items()}
    return args, kw, obs, state._replace(params=from_np(p, ravel=True), action=jnp.int32(1)), p


@pytest.mark.parametrize("done", [False, True])
def test_sarsa_train_step_against_numpy(done):
    args, kw, obs, state, p = sarsa_setup()
    next_obs = np.array([0.2, 0.1, -0.3, 0.4], np.float32)
    new_state, out = stream_sarsa.train_step(state, next_obs, np.float32(1.0), done, next_obs, **kw)
    # a' is the action the agent takes next (when not done): the target uses q(s', a') of that action
    next_action = int(out[0])
    seen = np.stack([obs, next_obs]).astype(np.float64)
    x = np.array(state.norm_obs, np.float64)
    next_x = np.append((next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / 100)
    q = lambda p, s: np_mlp(hidden(p), s) @ p["Dense_2/kernel"] + p["Dense_2/bias"]  # noqa: E731
    a_prime = next_action if not done else 0
    delta = 1.0 / math.sqrt(1 + 1e-8) + args.gamma * q(p, next_x)[a_prime] * (1 - done) - q(p, x)[1]
    assert float(out[2]) == pytest.approx(delta, rel=1e-4, abs=1e-4)
    expected, _, step = np_obgd(p, {k: 0 * v for k, v in p.items()}, numeric_grad(lambda p: -q(p, x)[1], p), delta,
                                done, args.kappa, args.gamma, args.lamda)
    assert float(out[3]) == pytest.approx(step, rel=1e-4)
    got = to_np(new_state.params, kw["unravel"])
    for k in p:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-3, atol=1e-4)
    # traces reset on done only: a non-greedy a' does not cut them
    assert (not np.any(new_state.opt_state.eligibility_trace)) == done


def test_sarsa_target_uses_the_action_taken_not_the_max():
    args, kw, obs, state, p = sarsa_setup()
    next_obs = np.array([0.2, 0.1, -0.3, 0.4], np.float32)
    q = lambda s: np_mlp(hidden(p), s) @ p["Dense_2/kernel"] + p["Dense_2/bias"]  # noqa: E731
    seen = np.stack([obs, next_obs]).astype(np.float64)
    next_x = np.append((next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / 100)
    q_next = q(next_x)
    deltas = {}
    for i in range(30):  # epsilon is near 1 here, so both actions come up
        st = state._replace(key=jax.random.PRNGKey(i))
        _, out = stream_sarsa.train_step(st, next_obs, np.float32(1.0), False, next_obs, **kw)
        deltas[int(out[0])] = float(out[2])
    assert set(deltas) == {0, 1}
    assert deltas[1] - deltas[0] == pytest.approx(args.gamma * (q_next[1] - q_next[0]), rel=1e-3, abs=1e-4)


def test_sarsa_first_action_of_an_episode_comes_from_the_reset_observation():
    args, kw, obs, state, p = sarsa_setup()
    next_obs, reset_obs = np.full(4, 5.0, np.float32), np.full(4, -5.0, np.float32)
    args.start_e = args.end_e = 0.0  # greedy, so the action is a function of the observation
    new_state, out = stream_sarsa.train_step(state, next_obs, np.float32(1.0), True, reset_obs, **kw)
    seen = np.stack([obs, next_obs, reset_obs]).astype(np.float64)
    reset_x = np.append((reset_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5)
    np.testing.assert_allclose(new_state.norm_obs, reset_x, rtol=1e-4, atol=1e-4)
    q_reset = np.asarray(kw["q_network"].apply(kw["unravel"](new_state.params), jnp.asarray(reset_x, jnp.float32)))
    assert int(out[0]) == int(np.argmax(q_reset)) == int(new_state.action)


def test_categorical_log_prob_and_entropy():
    logits = np.array([0.5, -1.0, 2.0])
    probs = np.exp(logits) / np.exp(logits).sum()
    log_prob, entropy = stream_ac_discrete.log_prob_and_entropy(jnp.asarray(logits, jnp.float32), 2)
    assert float(log_prob) == pytest.approx(np.log(probs[2]), rel=1e-5)
    assert float(entropy) == pytest.approx(-(probs * np.log(probs)).sum(), rel=1e-5)


def test_ac_discrete_train_step_against_numpy():
    hidden_size = 8
    args = stream_ac_discrete.Args(hidden_size=hidden_size)
    actor, critic = stream_ac_discrete.Actor(3, hidden_size), stream_ac_discrete.Critic(hidden_size)
    kw = dict(actor=actor, critic=critic, unravel_policy=stream_ac_discrete.unravel_fn(actor, jnp.zeros(4)),
              unravel_value=stream_ac_discrete.unravel_fn(critic, jnp.zeros(4)), args=args, max_episode_steps=100,
              policy_optimizer=stream_ac_discrete.obgd(args.lr, args.gamma, args.lamda, args.kappa_policy),
              value_optimizer=stream_ac_discrete.obgd(args.lr, args.gamma, args.lamda, args.kappa_value))
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    state, _ = stream_ac_discrete.start(jax.random.PRNGKey(0), obs, None, **kw)
    rng = np.random.default_rng(5)
    pp = {k: rng.normal(0, 0.5, size=v.shape) for k, v in to_np(state.policy_params, kw["unravel_policy"]).items()}
    vp = {k: rng.normal(0, 0.5, size=v.shape) for k, v in to_np(state.value_params, kw["unravel_value"]).items()}
    state = state._replace(policy_params=from_np(pp, ravel=True), value_params=from_np(vp, ravel=True),
                           action=jnp.int32(2))
    next_obs = np.array([0.2, 0.1, -0.3], np.float32)
    new_state, out = stream_ac_discrete.train_step(state, next_obs, np.float32(-1.0), False, next_obs, **kw)
    seen = np.stack([obs, next_obs]).astype(np.float64)
    x = np.array(state.norm_obs, np.float64)
    next_x = np.append((next_obs - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8), -0.5 + 1 / 100)
    v = lambda p, s: (np_mlp(hidden(p), s) @ p["Dense_2/kernel"] + p["Dense_2/bias"])[0]  # noqa: E731
    delta = -1.0 / math.sqrt(1 + 1e-8) + args.gamma * v(vp, next_x) - v(vp, x)

    def policy_loss(p):
        logits = np_mlp(hidden(p), x) @ p["Dense_2/kernel"] + p["Dense_2/bias"]
        log_probs = logits - np.log(np.exp(logits).sum())
        entropy = -(np.exp(log_probs) * log_probs).sum()
        return -log_probs[2] - args.entropy_coeff * np.sign(delta) * entropy

    assert float(out[1]) == pytest.approx(delta, rel=1e-4, abs=1e-4)
    zeros = lambda p: {k: 0 * w for k, w in p.items()}  # noqa: E731
    expected_p, _, step_p = np_obgd(pp, zeros(pp), numeric_grad(policy_loss, pp), delta, False,
                                    args.kappa_policy, args.gamma, args.lamda)
    expected_v, _, step_v = np_obgd(vp, zeros(vp), numeric_grad(lambda p: -v(p, x), vp), delta, False,
                                    args.kappa_value, args.gamma, args.lamda)
    np.testing.assert_allclose(np.asarray(out[2:]), [step_p, step_v], rtol=1e-3)
    for got, expected in [(to_np(new_state.policy_params, kw["unravel_policy"]), expected_p),
                          (to_np(new_state.value_params, kw["unravel_value"]), expected_v)]:
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-3, atol=1e-4)
