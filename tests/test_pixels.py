"""stream_q_minatar.py and stream_q_atari.py: conv networks, preprocessing, the frame stack and
the life-loss rule, against NumPy references written here."""

import math
from functools import partial

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import from_np, np_layer_norm, np_obgd, numeric_grad, to_np, unpack

import stream_q_atari
import stream_q_minatar

jax.config.update("jax_platforms", "cpu")
STRIDES = {stream_q_minatar: (1,), stream_q_atari: (5, 3, 2)}  # of the convs, in order
INPUTS = {stream_q_minatar: (10, 10, 4), stream_q_atari: (84, 84, 4)}


def np_conv(x, kernel, bias, stride):
    """Valid 2-D convolution: x (H, W, C), kernel (kh, kw, C, F) -> (H', W', F), float64."""
    kh, kw, _, features = kernel.shape
    h, w = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.empty((h, w, features))
    for i in range(h):
        for j in range(w):
            out[i, j] = (
                np.tensordot(
                    x[i * stride : i * stride + kh, j * stride : j * stride + kw], kernel, 3
                )
                + bias
            )
    return out


def np_q(p, x, strides):
    """NumPy Q-network: convs -> LayerNorm over the whole map -> leaky_relu, flatten (H, W, C
    order), dense -> LayerNorm -> leaky_relu, dense."""
    leaky_relu = lambda v: np.where(v > 0, v, 0.01 * v)  # noqa: E731
    for i, stride in enumerate(strides):
        x = leaky_relu(
            np_layer_norm(np_conv(x, p[f"Conv_{i}/kernel"], p[f"Conv_{i}/bias"], stride))
        )
    x = leaky_relu(np_layer_norm(x.reshape(-1) @ p["Dense_0/kernel"] + p["Dense_0/bias"]))
    return x @ p["Dense_1/kernel"] + p["Dense_1/bias"]


def random_params(module, hidden_size, seed=1, scale=0.3):
    net = module.QNetwork(3, hidden_size)
    p = to_np(net.init(jax.random.PRNGKey(0), jnp.zeros(INPUTS[module])))
    return net, {
        k: np.random.default_rng(seed).normal(0, scale, size=v.shape) for k, v in p.items()
    }


@pytest.mark.parametrize("module", [stream_q_minatar, stream_q_atari])
def test_conv_networks_match_numpy(module):
    net, p = random_params(module, 16)
    x = np.random.default_rng(0).normal(size=(2, *INPUTS[module]))
    got = np.asarray(net.apply(from_np(p), jnp.asarray(x, jnp.float32)))
    for i in range(2):
        np.testing.assert_allclose(got[i], np_q(p, x[i], STRIDES[module]), rtol=1e-3, atol=1e-3)


def test_conv_layer_norm_is_over_the_whole_map_not_per_channel():
    # per-channel or per-pixel normalisation would change the output of a map with unequal channels
    _, p = random_params(stream_q_minatar, 8)
    x = np.random.default_rng(0).normal(size=(10, 10, 4))
    conv = np_conv(x, p["Conv_0/kernel"], p["Conv_0/bias"], 1)
    net = stream_q_minatar.QNetwork(3, 8)
    features = net.apply(
        from_np(p),
        jnp.asarray(x, jnp.float32),
        capture_intermediates=True,
        mutable=["intermediates"],
    )[1]["intermediates"]["LayerNorm_0"]["__call__"][0]
    np.testing.assert_allclose(features, np_layer_norm(conv), rtol=1e-3, atol=1e-3)
    per_channel = (conv - conv.mean((0, 1))) / np.sqrt(conv.var((0, 1)) + 1e-5)
    assert not np.allclose(features, per_channel, atol=1e-2)


@pytest.mark.parametrize("module", [stream_q_minatar, stream_q_atari])
def test_conv_kernels_are_sparse_and_biases_zero(module):
    params = to_np(module.QNetwork(3).init(jax.random.PRNGKey(0), jnp.zeros(INPUTS[module])))
    assert all(not np.any(v) for k, v in params.items() if k.endswith("bias"))
    for name, kernel in params.items():
        if name.endswith("kernel"):
            fan_in = math.prod(kernel.shape[:-1])  # in_channels * kh * kw for a conv
            per_unit = kernel.reshape(fan_in, -1)
            assert np.all((per_unit == 0).sum(axis=0) == math.ceil(0.9 * fan_in)), name
            assert np.all(np.abs(kernel) <= 1 / math.sqrt(fan_in)), name


@pytest.mark.parametrize("module", [stream_q_minatar, stream_q_atari])
def test_per_pixel_observation_normaliser_without_time_feature(module):
    xs = np.random.default_rng(0).integers(0, 255, size=(20, 6, 5)).astype(np.float64)
    stats = module.RunningStats(jnp.zeros((6, 5)), jnp.zeros((6, 5)), jnp.float32(0.0))
    for t, x in enumerate(xs, start=1):
        stats, out = module.observe(stats, jnp.asarray(x, jnp.float32))
        var = np.ones((6, 5)) if t < 2 else xs[:t].var(axis=0, ddof=1)
        np.testing.assert_allclose(
            out, (x - xs[:t].mean(0)) / np.sqrt(var + 1e-8), rtol=1e-4, atol=1e-4
        )


def test_minatar_train_steps_against_numpy():
    # several consecutive greedy steps from the start, an episode's end among them: the trace
    # returned by one call is carried into the next (decayed, added to, cut on done); the cut after
    # a non-greedy action is the flat scripts' code (test_components) and act's flag (below)
    epsilon = 0.0
    obs_shape, hidden_size = (10, 10, 1), 3
    args = stream_q_minatar.Args(
        hidden_size=hidden_size, total_steps=1000, start_e=epsilon, end_e=epsilon
    )
    kw = dict(
        q_network=stream_q_minatar.QNetwork(3, hidden_size),
        args=args,
        optimizer=stream_q_minatar.obgd(args.lr, args.gamma, args.lamda, args.kappa),
    )
    rng = np.random.default_rng(0)
    frame = lambda: (rng.random(obs_shape) < 0.3).astype(np.float32)  # noqa: E731
    obs = frame()
    state = stream_q_minatar.start(jax.random.PRNGKey(0), obs, **kw)
    p = {
        k: np.random.default_rng(3).normal(0, 0.3, size=v.shape)
        for k, v in to_np(state.params).items()
    }
    state = state._replace(params=from_np(p))
    trace = {k: np.zeros_like(v) for k, v in p.items()}
    seen, returns, u = [obs.astype(np.float64)], [], 0.0
    x = np.zeros(obs_shape)  # the first observation normalises to 0 (one sample: mean = itself)
    step_fn = jax.jit(partial(stream_q_minatar.train_step, **kw))
    q = lambda p, s: np_q(p, s, (1,))  # noqa: E731
    norm = lambda o: (o - np.mean(seen, 0)) / np.sqrt(np.var(seen, 0, ddof=1) + 1e-8)  # noqa: E731
    cuts = 0
    for t, done in enumerate([False, False, True, False]):
        next_obs, reset_obs, reward = frame(), frame(), float(rng.normal(1, 2))
        a, nongreedy = int(state.action), bool(state.nongreedy)
        new_state, out = step_fn(state, next_obs, np.float32(reward), done, reset_obs)
        out = unpack(stream_q_minatar, out)
        u = args.gamma * u * (1 - done) + reward
        returns.append(u)
        r = reward / math.sqrt((1.0 if len(returns) < 2 else np.var(returns, ddof=1)) + 1e-8)
        seen.append(next_obs.astype(np.float64))
        next_x = norm(next_obs)
        delta = r + args.gamma * q(p, next_x).max() * (1 - done) - q(p, x)[a]
        grads = numeric_grad(lambda p: q(p, x)[a], p)  # ∇q(s, a)
        p, trace, step = np_obgd(
            p, trace, grads, delta, nongreedy or done, args.kappa, args.gamma, args.lamda
        )
        assert float(out.td_error) == pytest.approx(delta, rel=1e-3, abs=1e-3), t
        assert float(out.step_size) == pytest.approx(step, rel=1e-3), t
        for got, expected in (
            (to_np(new_state.params), p),
            (to_np(new_state.opt_state.eligibility_trace), trace),
        ):
            for k in p:
                np.testing.assert_allclose(
                    got[k], expected[k], rtol=2e-3, atol=2e-4, err_msg=f"step {t} {k}"
                )
        if done:
            seen.append(reset_obs.astype(np.float64))
        x = norm(reset_obs) if done else next_x
        np.testing.assert_allclose(new_state.norm_obs, x, rtol=1e-4, atol=1e-4)
        cuts += nongreedy or done
        state = new_state
    assert cuts >= 1


def atari_setup(hidden_size=4):
    args = stream_q_atari.Args(hidden_size=hidden_size, total_steps=1000)
    kw = dict(
        q_network=stream_q_atari.QNetwork(3, hidden_size),
        args=args,
        optimizer=stream_q_atari.obgd(args.lr, args.gamma, args.lamda, args.kappa),
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (84, 84)).astype(np.float32) for _ in range(3)]
    state = stream_q_atari.start(jax.random.PRNGKey(0), frames[0], **kw)
    return args, kw, frames, state


def test_atari_act_keeps_q_and_the_gradient_of_the_action_it_picks():
    net, p = random_params(stream_q_atari, 4, scale=0.1)
    x = np.random.default_rng(5).normal(size=(84, 84, 4))
    args, _, _, state = atari_setup()
    for start_e, key in ((0.0, 0), (1.0, 1), (1.0, 2)):  # greedy, then random actions
        args.start_e = args.end_e = start_e
        state = state._replace(params=from_np(p), key=jax.random.PRNGKey(key))
        state, epsilon = stream_q_atari.act(
            state, jnp.asarray(x, jnp.float32), q_network=net, args=args
        )
        action, q_value, grads = int(state.action), state.q_value, state.grad_q
        assert float(epsilon) == start_e
        q = np_q(p, x, (5, 3, 2))
        assert bool(state.nongreedy) == (
            action != int(np.argmax(q))
        )  # Watkins' flag, as act() stores it
        np.testing.assert_allclose(state.frames, x, rtol=1e-6)
        q = np_q(p, x, (5, 3, 2))
        assert float(q_value) == pytest.approx(q[int(action)], rel=1e-3, abs=1e-3)
        grads = to_np(grads)
        rng = np.random.default_rng(key)
        for name in (
            "Conv_0/kernel",
            "Conv_2/kernel",
            "Dense_0/kernel",
            "Dense_1/bias",
        ):  # spot checks
            for _ in range(3):
                index = tuple(rng.integers(0, n) for n in p[name].shape)
                old, h = p[name][index], 1e-5
                p[name][index] = old + h
                plus = np_q(p, x, (5, 3, 2))[int(action)]
                p[name][index] = old - h
                minus = np_q(p, x, (5, 3, 2))[int(action)]
                p[name][index] = old
                assert grads[name][index] == pytest.approx(
                    (plus - minus) / (2 * h), rel=2e-2, abs=1e-4
                )


@pytest.mark.parametrize("done,game_over", [(False, False), (True, False), (True, True)])
def test_atari_life_loss_cuts_bootstrap_and_traces_but_keeps_the_game(done, game_over):
    args, kw, (first, frame, reset_frame), state = atari_setup()
    state = state._replace(
        opt_state=state.opt_state._replace(
            eligibility_trace=jax.tree.map(jnp.ones_like, state.params)
        )
    )
    new_state, out = stream_q_atari.train_step(
        state, frame, np.float32(1.0), done, reset_frame if game_over else frame, game_over, **kw
    )
    # the next frame is normalised with the statistics of both frames and pushed onto the stack
    seen = np.stack([first, frame]).astype(np.float64)
    pushed = (frame - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8)
    next_frames = np.concatenate([np.asarray(state.frames)[..., 1:], pushed[..., None]], axis=-1)
    next_q = np_q(to_np(state.params), next_frames, (5, 3, 2)).max()
    delta = 1.0 / math.sqrt(1 + 1e-8) + args.gamma * next_q * (1 - done) - float(state.q_value)
    assert float(unpack(stream_q_atari, out).td_error) == pytest.approx(delta, rel=1e-3, abs=1e-3)
    traces = to_np(new_state.opt_state.eligibility_trace).values()
    assert all(not np.any(z) for z in traces) == (done or bool(state.nongreedy))
    if game_over:  # the env was reset: the stack restarts from 4 copies of its first frame
        seen = np.stack([first, frame, reset_frame]).astype(np.float64)
        restart = (reset_frame - seen.mean(0)) / np.sqrt(seen.var(0, ddof=1) + 1e-8)
        np.testing.assert_allclose(
            new_state.frames, np.repeat(restart[..., None], 4, -1), rtol=1e-4, atol=1e-4
        )
        assert int(new_state.obs_stats.count) == 3
    else:  # a lost life (or no event): the game goes on from the pushed frame
        np.testing.assert_allclose(new_state.frames, next_frames, rtol=1e-4, atol=1e-4)
        assert int(new_state.obs_stats.count) == 2


def test_atari_preprocessing_shapes_and_dtypes():
    env = stream_q_atari.make_env("BreakoutNoFrameskip-v4")
    obs, info = env.reset(seed=0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and info["lives"] == 5
    assert isinstance(env.env, stream_q_atari.FireOnReset)  # Breakout waits for FIRE
    obs, reward, _, _, info = env.step(0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and "lives" in info
    assert env.observation_space == gym.spaces.Box(0, 255, (84, 84), np.uint8)
    _, _, _, state = atari_setup()
    assert state.frames.shape == (84, 84, 4) and state.frames.dtype == jnp.float32


@pytest.mark.parametrize(
    "game,channels,actions",
    [
        ("Asterix", 4, 5),
        ("Breakout", 4, 3),
        ("Freeway", 7, 3),
        ("Seaquest", 10, 6),
        ("SpaceInvaders", 6, 4),
    ],
)
def test_minatar_envs_are_registered_with_their_shapes(game, channels, actions):
    env = stream_q_minatar.make_env(f"MinAtar/{game}-v1")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (10, 10, channels) and obs.dtype == bool and env.action_space.n == actions


def test_atari_act_marks_a_random_action_nongreedy_only_when_it_differs_from_argmax_q():
    net, p = random_params(stream_q_atari, 4, scale=0.1)
    x = np.random.default_rng(6).normal(size=(84, 84, 4))
    greedy = int(np.argmax(np_q(p, x, (5, 3, 2))))
    args, _, _, state = atari_setup()
    args.start_e = args.end_e = 0.5
    act = jax.jit(partial(stream_q_atari.act, q_network=net, args=args))
    state, frames, flags = state._replace(params=from_np(p)), jnp.asarray(x, jnp.float32), []
    for i in range(60):
        new_state, _ = act(state._replace(key=jax.random.PRNGKey(i)), frames)
        assert bool(new_state.nongreedy) == (int(new_state.action) != greedy), i
        flags.append(bool(new_state.nongreedy))
    assert 0.1 < np.mean(flags) < 0.6  # epsilon 0.5, 3 actions: a third of them on average
