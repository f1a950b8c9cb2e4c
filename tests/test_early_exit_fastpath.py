"""EarlyExitUpload's fast single-env path (issue 12): the episode sampler draws the same
numbers as the step-by-step samplers it replaced, the cost function gives the same bits on
scalars and arrays, and ``info="lean"`` changes nothing but `info`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mei_envs.config import ConfigError
from mei_envs.envs.early_exit_upload import (
    EPISODE_KEYS,
    LEAN_KEYS,
    EarlyExitUploadConfig,
    EarlyExitUploadEnv,
)

ENV_ID = "mei_envs/EarlyExitUpload-v1"
CONFIGS = [
    {},
    {"channel": "gauss_markov"},
    {"channel": "gauss_markov", "k_factor": 3.0, "dp_channel_states": 4},
    {"fsmc_states": 16, "exit_correlation": 0.0, "tokens": 7, "snr_history": 1},
    {"exit_correlation": 0.95, "exit_prob": 0.3, "tokens": 200},
    {"preset": "vehicular"},
]


def _legacy_episode(model, rng):
    """The draws as the env made them before issue 12: exits step by step, the channel's
    own path sampler, then the confidences."""
    K, P = model.K, model.exit_P
    u = rng.random(K)
    exits = [int(u[0] < model.cfg.exit_prob)]
    for k in range(1, K):
        exits.append(int(u[k] < P[exits[-1], 1]))
    snr, states, rates = model.channel.sample_path(rng, K + model.cfg.snr_history - 1)
    snr_db = 10.0 * np.log10(np.maximum(snr, 1e-30))
    lo = model.cfg.exit_threshold
    uc = rng.random(K)
    conf = np.where(np.array(exits) == 1, lo + uc * (1.0 - lo), uc * lo)
    obs = np.clip(snr_db / 40.0, -1.0, 1.0).astype(np.float32)
    return exits, states.tolist(), snr_db.tolist(), obs.tolist(), rates.tolist(), conf.tolist()


@pytest.mark.parametrize("config", CONFIGS)
def test_episode_sampler_draws_what_the_step_by_step_samplers_drew(config) -> None:
    model = EarlyExitUploadEnv(config=config).model
    for seed in range(8):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        got = model.sample_episode(r1)
        want = _legacy_episode(model, r2)
        for name, a, b in zip(got._fields, got, want, strict=True):
            assert a == b, (config, seed, name)
        assert r1.random() == r2.random()  # the generator moved on by as much


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_token_cost_gives_the_same_bits_on_arrays_and_scalars(config) -> None:
    m = EarlyExitUploadEnv(config=config).model
    rng = np.random.default_rng(1)
    n = 500
    k = rng.integers(0, m.K, n)
    k[:5] = m.K - 1  # the last token (its upload overlaps nothing)
    b = rng.integers(0, m.limit + 1, n)
    n_up = np.where(rng.random(n) < 0.5, b + 1, 0)
    rate = m.state_rate_bps[rng.integers(0, m.fsmc.n_states, n)]
    timer = rng.integers(0, m.tail_steps + 1, n)
    exited = rng.integers(0, 2, n)
    arrays = m.token_cost(k, b, n_up, rate, timer, exited)
    for i in range(n):
        ki = int(k[i])
        scalar = m.token_cost_at(
            m.t_dev_s.tolist()[ki],
            m.t_dev_next_s.tolist()[ki],
            m.not_last.tolist()[ki],
            m.t_srv_s.item(ki, int(b[i]) + 1),
            int(n_up[i]),
            float(rate[i]),
            int(timer[i]),
            int(exited[i]),
        )
        for a, s in zip(arrays, scalar, strict=True):
            assert a[i] == s, (i, a[i], s)


def _roll(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, None, info)]
    done, i = False, 0
    while not done:
        obs, rew, term, trunc, info = env.step(actions[i % len(actions)])
        out.append((obs, rew, info))
        done, i = term or trunc, i + 1
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_lean_info_changes_only_info(config) -> None:
    actions = np.random.default_rng(3).integers(0, 2, 97).tolist()
    for seed in (0, 5):
        full = _roll(EarlyExitUploadEnv(config=config), seed, actions)
        lean = _roll(EarlyExitUploadEnv(config={**config, "info": "lean"}), seed, actions)
        assert len(full) == len(lean)
        assert lean[0][2] == {}
        totals = dict.fromkeys(LEAN_KEYS, 0.0)
        for (of, rf, inf), (ol, rl, inl) in zip(full[1:], lean[1:], strict=True):
            np.testing.assert_array_equal(of, ol)
            assert rf == rl
            for key in LEAN_KEYS:
                assert inl[key] == inf[key], key
                totals[key] += inf[key]
        last = lean[-1][2]
        assert set(last) == set(LEAN_KEYS) | set(EPISODE_KEYS)
        if len(lean) > 2:
            assert set(lean[-2][2]) == set(LEAN_KEYS)
        for key in LEAN_KEYS:
            assert last[f"episode_{key}"] == totals[key], key
        # Every token's hidden state is accounted for in the episode totals (flush on).
        m = EarlyExitUploadEnv(config=config).model
        assert last["episode_bytes_sent"] == pytest.approx(m.K * m.state_bits / 8)


def test_info_level_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"\.info="):
        EarlyExitUploadConfig.from_dict({"info": "verbose"})
    env = gym.make(ENV_ID, info="lean")
    _, info = env.reset(seed=0)
    assert info == {}


def test_action_mask_is_cached_read_only_and_info_gets_a_copy() -> None:
    env = EarlyExitUploadEnv()
    _, info = env.reset(seed=0)
    mask = env.action_masks()
    assert mask is env.action_masks() and not mask.flags.writeable
    with pytest.raises(ValueError):
        mask[0] = False
    assert info["action_mask"] is not mask and np.array_equal(info["action_mask"], mask)


@pytest.mark.parametrize("config", CONFIGS)
def test_batched_episode_sampler_equals_one_at_a_time(config) -> None:
    model = EarlyExitUploadEnv(config=config).model
    seeds = [3, 4, 11, 12]
    batch = model.sample_episodes([np.random.default_rng(s) for s in seeds])
    for row, s in enumerate(seeds):
        rng = np.random.default_rng(s)
        ep = model.sample_episode(rng)
        assert batch["exits"][row].tolist() == [bool(e) for e in ep.exits]
        assert batch["conf"][row].tolist() == ep.conf
        assert batch["rates"][row].tolist() == ep.rates
        assert batch["snr_obs"][row].tolist() == ep.snr_obs


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.get("channel") != "gauss_markov"])
def test_lazy_episode_is_the_sampled_episode(config) -> None:
    """fsmc mode works the episode out token by token as it is reached (`_grow`); by the
    end it must be exactly what `sample_episode` draws from the same generator, and the
    generator must have moved on by as much."""
    env = EarlyExitUploadEnv(config=config)
    for seed in (0, 1, 9):
        env.reset(seed=seed)
        done = False
        while not done:
            done = env.step(1)[2]
        rng = np.random.default_rng(seed)
        ep = env.model.sample_episode(rng)
        assert env._ex == [bool(e) for e in ep.exits]
        assert env._conf == ep.conf
        assert env._st == ep.states
        assert env._sd == ep.snr_db and env._so == ep.snr_obs and env._rt == ep.rates
        assert env.np_random.random() == rng.random()


@pytest.mark.parametrize("config", CONFIGS[:3] + [{"preset": "lte_phone"}])
def test_token_cost_depends_on_the_timer_only_through_sleep(config) -> None:
    """The single env memoises token costs per (token, backlog, uploads, channel state,
    asleep, exited): the timer must enter the cost only through ``timer >= tail_steps``."""
    m = EarlyExitUploadEnv(config=config).model
    rng = np.random.default_rng(2)
    n = 400
    k = rng.integers(0, m.K, n)
    b = rng.integers(0, m.limit + 1, n)
    n_up = np.where(rng.random(n) < 0.5, b + 1, 0)
    rate = m.state_rate_bps[rng.integers(0, m.fsmc.n_states, n)]
    exited = rng.integers(0, 2, n)
    asleep = rng.random(n) < 0.5
    t1 = np.where(asleep, m.tail_steps, rng.integers(0, m.tail_steps, n))
    t2 = np.where(asleep, m.tail_steps, rng.integers(0, m.tail_steps, n))
    for a, c in zip(
        m.token_cost(k, b, n_up, rate, t1, exited),
        m.token_cost(k, b, n_up, rate, t2, exited),
        strict=True,
    ):
        np.testing.assert_array_equal(a, c)


def test_batched_fsmc_paths_equal_the_scalar_sampler() -> None:
    """The vector env's episodes drawn ahead walk the FSMC with array comparisons
    (`fsmc_paths`); they must give the states `bisect_right` gives, row by row."""
    for config in ({}, {"fsmc_states": 16}, {"preset": "vehicular"}, {"fsmc_states": 3}):
        m = EarlyExitUploadEnv(config=config).model
        u = np.random.default_rng(4).random((50, 70))
        u[0, :] = m.fsmc._cum[0, 0]  # exactly on a boundary: bisect_right goes past it
        got = m.fsmc_paths(u)
        for row in range(u.shape[0]):
            assert got[row].tolist() == m._fsmc_path(u[row].tolist())


@pytest.mark.parametrize(
    "config",
    [{}, {"preset": "lte_phone"}, {"upload_fractions": [0.0, 0.5, 1.0], "backlog_limit": 3}],
)
def test_step_memo_misses_from_the_decision_table_match_the_token_loop(config) -> None:
    """A step memo miss fills the entry from the decision-token table (numpy, evaluated
    once) instead of the token loop: the same observations, rewards and infos, bit for bit,
    on cold memos (every early step misses)."""
    table, loop = EarlyExitUploadEnv(config=config), EarlyExitUploadEnv(config=config)
    loop._dec_tab = False  # the token loop (_advance) on every miss
    rng = np.random.default_rng(0)
    table.reset(seed=4)
    loop.reset(seed=4)
    for _ in range(1500):
        a = int(rng.integers(table.action_space.n))
        got, want = table.step(a), loop.step(a)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:4] == want[1:4]
        assert list(got[4]) == list(want[4])
        for key, value in want[4].items():
            np.testing.assert_array_equal(got[4][key], value, err_msg=key)
        if got[2]:
            table.reset()
            loop.reset()
    assert isinstance(table._dec_tab, np.ndarray)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"preset": "bursty_exits"},
        {"preset": "lte_phone", "initial_radio": "connected"},
        {"exit_prob": 0.3, "tokens": 40, "flush_at_end": False},
        {"upload_fractions": [0.0, 0.5, 1.0], "backlog_limit": 3},
    ],
)
def test_forced_runs_from_the_run_table_match_the_token_loop(config) -> None:
    """Runs of non-exited tokens from backlog 0 (radio in its tail) are summed from the
    run table (token_cost on arrays, built once) instead of the token memo: the same
    observations, rewards and infos, bit for bit, at resets and steps, with the step memo
    on and off."""
    table, loop = EarlyExitUploadEnv(config=config), EarlyExitUploadEnv(config=config)
    assert table._run is not None
    loop._run = None  # the token loop (_advance's memo) for every forced token
    loop._step_memo = None  # and every step through _advance
    rng = np.random.default_rng(1)
    got, want = table.reset(seed=7), loop.reset(seed=7)
    for _ in range(2000):
        np.testing.assert_array_equal(got[0], want[0])
        assert list(got[-1]) == list(want[-1])
        for key, value in want[-1].items():
            np.testing.assert_array_equal(got[-1][key], value, err_msg=key)
        if len(got) == 5 and got[2]:
            got, want = table.reset(), loop.reset()
            continue
        a = int(rng.integers(table.action_space.n))
        got, want = table.step(a), loop.step(a)
        assert got[1:4] == want[1:4]


def test_numpy_integer_actions_step_like_python_ints() -> None:
    """`action_space.sample()` returns np.int64 (a fast path in `step`); other integer types
    and bad actions take the checked path, with the same errors."""
    envs = [EarlyExitUploadEnv() for _ in range(3)]
    for e in envs:
        e.reset(seed=2)
    for a in [1, 0, 0, 1, 1, 0, 1]:
        outs = [e.step(x) for e, x in zip(envs, (a, np.int64(a), np.int32(a)), strict=True)]
        for o in outs[1:]:
            np.testing.assert_array_equal(o[0], outs[0][0])
            assert o[1:4] == outs[0][1:4]
    for bad in (np.int64(2), np.int64(-1), 2, 1.0):
        with pytest.raises(ValueError, match="action="):
            envs[0].step(bad)
