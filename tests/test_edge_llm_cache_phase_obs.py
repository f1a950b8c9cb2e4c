"""EdgeLLMCache-v0's ``obs_regime_features``: per-regime request-rate rows in the observation
(periodic demand, ``phase_count > 1``), checked against an independent recomputation from the
env's request log, the observation without them, the config validation and the native vector
env."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.config import ConfigError
from mei_envs.envs import edge_llm_cache
from mei_envs.envs.edge_llm_cache import (
    N_CLOCK_FEATURES,
    N_GLOBAL_FEATURES,
    REGIME_HALF_LIFE,
    EdgeLLMCacheEnv,
)
from tests.test_edge_llm_cache_perf import _assert_infos_equal, _legal, _sync
from tests.vector_checks import step_both

ENV_ID = "mei_envs/EdgeLLMCache-v0"

CONFIGS = [
    # diurnal's regimes and capacity, short episodes: regimes return within an episode
    {"preset": "diurnal", "phase_length": 25, "requests_per_episode": 260},
    {"phase_count": 3, "phase_length": 7, "requests_per_episode": 150, "drift_rate": 0.1},
    {"phase_count": 2, "phase_length": 1, "requests_per_episode": 90, "reward": "bytes"},
    {
        "phase_count": 5,
        "phase_length": 40,
        "requests_per_episode": 120,
        "preset": "small_cache",
        "capacity_fraction": 0.1,
    },
]


def _expected_regime_entries(env: EdgeLLMCacheEnv) -> np.ndarray:
    """The regime entries recomputed from ``decision_state()`` alone, by the closed form of
    the class docstring (weights ``(1 - d) d ** (n_k - r)`` summed per model with
    ``bincount``), not the env's lazy recursion."""
    s = env.decision_state()
    cfg, M = env.config, env.n_models
    K, L, t = cfg.phase_count, cfg.phase_length, int(s["t"])
    log = np.asarray(s["past_requests"], dtype=np.int64)
    assert len(log) == t
    if s["model"] >= 0:
        log = np.append(log, s["model"])
    d = 0.5 ** (1.0 / REGIME_HALF_LIFE)
    regime_of = (np.arange(len(log)) // L) % K
    k = (t // L) % K
    rows, weights = [], []
    for r in (k, (k + 1) % K):
        mine = log[regime_of == r]
        n = len(mine)
        if n == 0:
            rows.append(np.zeros(M))
            weights.append(0.0)
            continue
        w = (1.0 - d) * d ** (n - 1 - np.arange(n))
        rows.append(np.bincount(mine, weights=w, minlength=M) / (1.0 - d**n))
        weights.append(1.0 - d**n)
    return np.concatenate([*rows, weights, [(t % L) / L]]).astype(np.float32)


def _check_obs(env: EdgeLLMCacheEnv, obs: np.ndarray, n_off: int, where: str) -> None:
    want = _expected_regime_entries(env)
    got = obs[n_off:]
    assert got.shape == want.shape, where
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7, err_msg=where)
    assert env.observation_space.contains(obs), where
    M = env.n_models
    for row in range(2):  # a seen regime's estimate is a distribution over the models
        if want[2 * M + row] > 0:
            assert abs(float(got[row * M : (row + 1) * M].sum()) - 1.0) < 1e-4, where


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("rebase", [None, 6])
def test_regime_rows_equal_the_log_and_the_rest_is_the_old_observation(
    config, seed, rebase, monkeypatch
) -> None:
    if rebase is not None:  # rescale the lazily scaled sums often (normally every 20000)
        monkeypatch.setattr(edge_llm_cache, "REGIME_REBASE", rebase)
    on = EdgeLLMCacheEnv(config={**config, "obs_regime_features": True})
    off = EdgeLLMCacheEnv(config=config)
    M = on.n_models
    n_off = off.observation_space.shape[0]
    assert n_off == M * off.n_features + N_GLOBAL_FEATURES + N_CLOCK_FEATURES
    assert on.observation_space.shape == (n_off + 2 * M + 3,)
    rng = np.random.default_rng(seed)
    for episode in range(2):  # the second episode must not carry the first one's averages
        o1, i1 = on.reset(seed=seed + episode)
        o2, i2 = off.reset(seed=seed + episode)
        np.testing.assert_array_equal(o1[:n_off], o2)
        _check_obs(on, o1, n_off, "reset")
        done, steps = False, 0
        while not done:
            a = _legal(rng, on.action_masks())
            o1, r1, done, _, i1 = on.step(a)
            o2, r2, done2, _, i2 = off.step(a)
            where = f"episode {episode} step {steps}"
            np.testing.assert_array_equal(o1[:n_off], o2, err_msg=where)
            assert r1 == r2 and done == done2, where
            assert i1.keys() == i2.keys()
            for key in i1:
                np.testing.assert_array_equal(i1[key], i2[key], err_msg=f"{where}: {key}")
            _check_obs(on, o1, n_off, where)
            steps += 1
        assert steps > 10  # decisions happened (the check covered the averages' growth)


def test_the_rows_remember_a_regime_across_its_absence() -> None:
    """Replay a sequence where regime 0 asks only for model 3 and regime 1 only for model 5:
    back in regime 0 the current row points at model 3 and the next row at model 5, while
    the clock-blind averages mix them."""
    env = EdgeLLMCacheEnv(
        phase_count=2, phase_length=10, capacity_fraction=0.05, obs_regime_features=True
    )
    M = env.n_models
    seq = ([3] * 10 + [5] * 10) * 2 + [7]
    env.reset(seed=0, options={"requests": seq})
    n_off = env.observation_space.shape[0] - (2 * M + 3)
    done, obs = False, None
    while not done:
        s = env.decision_state()
        obs = env._obs()
        if s["model"] >= 0 and 20 <= s["t"] < 30:  # regime 0 again
            cur, nxt = obs[n_off : n_off + M], obs[n_off + M : n_off + 2 * M]
            assert cur.argmax() == 3 and cur[3] == pytest.approx(1.0)
            assert nxt.argmax() == 5 and nxt[5] == pytest.approx(1.0)
        _, _, done, _, _ = env.step(env.bypass_action)
    # Episode end (t = 41): regime (41 // 10) % 2 = 0 holds 21 requests, 20 of model 3.
    obs = env._obs()
    cur = obs[n_off : n_off + M]
    assert cur[3] > 0.9 and 0.0 < cur[7] < 0.1 and cur.sum() == pytest.approx(1.0, abs=1e-5)


def test_bad_configs_name_the_field_and_off_changes_nothing() -> None:
    with pytest.raises(ConfigError, match=r"obs_regime_features=True.*phase_count=1"):
        EdgeLLMCacheEnv(obs_regime_features=True)
    with pytest.raises(ConfigError, match=r"obs_regime_features=.maybe."):
        EdgeLLMCacheEnv(phase_count=2, obs_regime_features="maybe")
    with pytest.raises(ConfigError, match=r"obs_regime_features=3"):
        EdgeLLMCacheEnv(phase_count=2, obs_regime_features=3)
    off = EdgeLLMCacheEnv(preset="diurnal")
    explicit = EdgeLLMCacheEnv(preset="diurnal", obs_regime_features=False)
    assert off.observation_space == explicit.observation_space
    assert off.n_regime == 0
    np.testing.assert_array_equal(off.reset(seed=3)[0], explicit.reset(seed=3)[0])
    on = EdgeLLMCacheEnv(preset="diurnal", obs_regime_features="true")
    assert on.observation_space.shape[0] == off.observation_space.shape[0] + 2 * on.n_models + 3


def test_check_env_passes_with_the_rows() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # check_env samples unmasked random actions: serve masked ones as bypasses.
    env = gym.make(
        ENV_ID,
        preset="diurnal",
        obs_regime_features=True,
        requests_per_episode=300,
        invalid_action="bypass",
    )
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)


def test_same_seed_same_trajectory_pickle_and_restore() -> None:
    cfg = {"preset": "diurnal", "phase_length": 30, "obs_regime_features": True}
    a, b = EdgeLLMCacheEnv(config=cfg), EdgeLLMCacheEnv(config=cfg)
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    np.testing.assert_array_equal(oa, ob)
    rng = np.random.default_rng(0)
    snap, snap_obs, copy, copy_steps = None, None, None, []
    for step in range(60):
        act = _legal(rng, a.action_masks())
        oa, ra, da, _, _ = a.step(act)
        ob, rb, db, _, _ = b.step(act)
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb and da == db
        if step == 10:
            snap, snap_obs = a.snapshot(), oa
            copy = pickle.loads(pickle.dumps(a))
        elif step > 10:
            copy_steps.append((act, oa))
        if da:
            break
    assert len(copy_steps) > 5
    for act, want in copy_steps:  # the pickled copy continues the same way
        np.testing.assert_array_equal(copy.step(act)[0], want)
    a.restore(snap)  # back to an earlier request: the averages are folded again
    np.testing.assert_array_equal(a._obs(), snap_obs)


@pytest.mark.parametrize("n", [4, 40])
def test_vector_env_equals_sync_vector_env_with_the_rows(n) -> None:
    config = {
        "requests_per_episode": 130,
        "phase_count": 3,
        "phase_length": 20,
        "drift_rate": 0.1,
        "obs_regime_features": True,
    }
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **config)
    assert vec.unwrapped.scalar  # also above SCALAR_MAX_ENVS: the batch has no regime rows
    ref = _sync(n, config)
    o1, i1 = vec.reset(seed=5)
    o2, i2 = ref.reset(seed=5)
    assert o1.shape == (n, *ref.single_observation_space.shape)
    np.testing.assert_array_equal(o1, o2)
    _assert_infos_equal(i1, i2, "reset")
    rng = np.random.default_rng(5)
    ends = 0
    for step in range(150):
        acts = np.array([_legal(rng, m) for m in vec.action_masks()])
        o1, _, t1, _, i1, i2 = step_both(vec, ref, acts, f"step {step}")
        _assert_infos_equal(i1, i2, f"step {step}")
        if t1.any():
            ends += int(t1.sum())
            for i in np.flatnonzero(t1):
                np.testing.assert_array_equal(i1["final_obs"][i], i2["final_obs"][i])
    assert ends >= n
