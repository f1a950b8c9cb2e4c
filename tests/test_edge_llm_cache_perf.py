"""EdgeLLMCache-v0 pieces of issue 12 and the issue-10 action rule: lean info, masked actions
raise by default, algorithms without masks fail fast, and the native vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.agents.algos import check_algo_for_env
from mei_envs.envs.edge_llm_cache import (
    LEAN_LAST_KEYS,
    LEAN_SUM_KEYS,
    EdgeLLMCacheEnv,
)
from tests.vector_checks import step_both

ENV_ID = "mei_envs/EdgeLLMCache-v0"


def _legal(rng: np.random.Generator, mask: np.ndarray) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


@pytest.mark.parametrize(
    "config", [{}, {"preset": "small_cache", "reward": "bytes"}, {"preset": "quantised"}]
)
def test_lean_info_equals_the_full_info_and_sums_episodes(config) -> None:
    cfg = {**config, "requests_per_episode": 300}
    full, lean = EdgeLLMCacheEnv(config=cfg), EdgeLLMCacheEnv(config={**cfg, "info": "lean"})
    assert lean.metadata["info_metrics"].keys() == {*LEAN_LAST_KEYS, *LEAN_SUM_KEYS}
    rng = np.random.default_rng(1)
    for ep in range(2):
        seed = 4 if ep == 0 else None
        (o1, i1), (o2, i2) = full.reset(seed=seed), lean.reset(seed=seed)
        np.testing.assert_array_equal(o1, o2)
        assert set(i2) == {*LEAN_LAST_KEYS, *LEAN_SUM_KEYS}
        sums = dict.fromkeys(LEAN_SUM_KEYS, 0.0)
        term = False
        while not term:
            a = _legal(rng, full.action_masks())
            o1, r1, term, _, i1 = full.step(a)
            o2, r2, term2, _, i2 = lean.step(a)
            np.testing.assert_array_equal(o1, o2)
            assert (r1, term) == (r2, term2)
            for k in LEAN_SUM_KEYS:
                sums[k] += i1[k]
            want = {k: i1[k] for k in (*LEAN_LAST_KEYS, *LEAN_SUM_KEYS)}
            if term:
                want.update({f"episode_{k}": i1[k] for k in LEAN_LAST_KEYS})
                want.update({f"episode_{k}": sums[k] for k in LEAN_SUM_KEYS})
            assert i2 == want
        assert i2["episode_requests"] == cfg["requests_per_episode"]
        assert i2["episode_hits"] == pytest.approx(i2["hit_ratio"] * 300)


def test_masked_action_raises_by_default_and_leaves_the_state() -> None:
    env = EdgeLLMCacheEnv(requests_per_episode=300)
    assert env.config.invalid_action == "raise"
    obs, info = env.reset(seed=2)
    mask = env.action_masks()
    bad = int(np.flatnonzero(~mask)[0])
    twin = EdgeLLMCacheEnv(requests_per_episode=300)
    twin.reset(seed=2)
    with pytest.raises(ValueError, match=rf"action={bad}: evicting model {bad} .* is masked"):
        env.step(bad)
    assert not mask.flags.writeable  # the cached mask cannot be changed by a caller
    a = _legal(np.random.default_rng(0), mask)
    o1, r1, t1, _, i1 = env.step(a)
    o2, r2, t2, _, i2 = twin.step(a)
    np.testing.assert_array_equal(o1, o2)
    assert (r1, t1) == (r2, t2)
    assert {k: v for k, v in i1.items() if k != "action_mask"} == {
        k: v for k, v in i2.items() if k != "action_mask"
    }


def test_algorithms_without_masks_fail_fast_naming_the_routes() -> None:
    env = gym.make(ENV_ID)
    for algo in ("ppo", "a2c", "dqn"):
        with pytest.raises(ValueError, match="maskable_ppo.*invalid_action=bypass"):
            check_algo_for_env(algo, env)
    check_algo_for_env("maskable_ppo", env)
    check_algo_for_env("ppo", gym.make(ENV_ID, invalid_action="bypass"))


# ---- native vector env ----------------------------------------------------------------------
def _sync(n: int, config: dict):
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    return SyncVectorEnv(
        [lambda: gym.make(ENV_ID, **config, info="lean") for _ in range(n)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def _assert_infos_equal(got: dict, want: dict, where: str) -> None:
    assert set(got) == set(want), (where, sorted(set(got) ^ set(want)))
    for k in want:
        if k.startswith("_") or k in ("final_obs", "final_info"):
            continue
        m = want["_" + k]
        np.testing.assert_array_equal(got["_" + k], m, err_msg=f"{where}: _{k}")
        np.testing.assert_array_equal(got[k][m], want[k][m], err_msg=f"{where}: {k}")


@pytest.mark.parametrize(
    ("config", "seed", "tables"),
    [
        ({"requests_per_episode": 120}, 0, True),
        ({"requests_per_episode": 90, "preset": "small_cache"}, 3, True),
        ({"requests_per_episode": 150, "preset": "adapter_heavy", "reward": "latency"}, 5, True),
        ({"requests_per_episode": 80, "preset": "quantised", "sharing": False}, 11, True),
        ({"requests_per_episode": 100, "preset": "fast_drift", "reward": "bytes"}, 7, True),
        # Periodic demand: regimes, drift in the active regime, the clock in the observation.
        (
            {"requests_per_episode": 130, "phase_count": 3, "phase_length": 20, "drift_rate": 0.1},
            4,
            True,
        ),
        # Unmasked actions served as bypasses; episodes too long for the look-up tables.
        ({"requests_per_episode": 70, "invalid_action": "bypass", "half_lives": [3.0]}, 2, False),
    ],
)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "scalar"])
def test_vector_env_equals_sync_vector_env(config, seed, tables, batched, monkeypatch) -> None:
    from mei_envs.envs import edge_llm_cache, edge_llm_cache_vector

    # The batched numpy path, or one single env per sub-env (what 4 sub-envs get by default).
    monkeypatch.setattr(edge_llm_cache_vector, "SCALAR_MAX_ENVS", 0 if batched else 32)
    if not tables:  # the formulas instead of the tables, in both envs
        monkeypatch.setattr(edge_llm_cache, "MAX_TABLE_REQUESTS", 10)
        monkeypatch.setattr(edge_llm_cache_vector, "_python_pow_table", lambda T, d: None)
        edge_llm_cache._time_tables.cache_clear()
    legal_only = config.get("invalid_action") != "bypass"
    n = 4
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **config)
    ref = _sync(n, config)
    o1, i1 = vec.reset(seed=seed)
    o2, i2 = ref.reset(seed=seed)
    np.testing.assert_array_equal(o1, o2)
    _assert_infos_equal(i1, i2, "reset")
    rng = np.random.default_rng(seed)
    ends = 0
    for step in range(400):
        masks = vec.action_masks()
        assert masks.shape == (n, vec.single_action_space.n) and masks.dtype == bool
        want_masks = np.stack([e.unwrapped.action_masks() for e in ref.envs])
        np.testing.assert_array_equal(masks, want_masks)
        if legal_only:
            acts = np.array([_legal(rng, m) for m in masks])
        else:
            acts = rng.integers(0, masks.shape[1], size=n)
        where = f"step {step}"
        o1, r1, t1, u1, i1, i2 = step_both(vec, ref, acts, where)
        _assert_infos_equal(i1, i2, where)
        if t1.any():
            ends += int(t1.sum())
            np.testing.assert_array_equal(i1["_final_obs"], i2["_final_obs"])
            for i in np.flatnonzero(t1):
                np.testing.assert_array_equal(i1["final_obs"][i], i2["final_obs"][i])
            _assert_infos_equal(i1["final_info"], i2["final_info"], where + " final_info")
    assert ends >= n, f"only {ends} episode ends in 400 steps"
    assert vec.unwrapped.scalar is not batched
    if not tables:
        assert vec.unwrapped.tables is None
        edge_llm_cache._time_tables.cache_clear()


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "scalar"])
def test_vector_env_raises_on_a_masked_action_before_stepping_any_sub_env(
    batched, monkeypatch
) -> None:
    from mei_envs.envs import edge_llm_cache_vector

    monkeypatch.setattr(edge_llm_cache_vector, "SCALAR_MAX_ENVS", 0 if batched else 32)
    vec = gym.make_vec(
        ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", requests_per_episode=200
    )
    obs, _ = vec.reset(seed=1)
    masks = vec.action_masks()
    acts = masks.argmax(1)  # legal
    bad = acts.copy()
    bad[2] = int(np.flatnonzero(~masks[2])[0])
    with pytest.raises(ValueError, match="is masked"):
        vec.step(bad)
    with pytest.raises(ValueError, match=r"actions\[1\]"):
        vec.step(np.array([0, 99, 0]))
    twin = gym.make_vec(
        ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", requests_per_episode=200
    )
    twin.reset(seed=1)
    np.testing.assert_array_equal(vec.step(acts)[0], twin.step(acts)[0])


def test_training_sizes_step_one_single_env_per_sub_env() -> None:
    """At the sizes SB3 trains with (1-32 envs), the batched numpy path cost 1.4-7x a single
    env per env-step (session 8, benchmarks/README.md), so the vector env steps single envs;
    from 33 sub-envs on, the batch."""
    for n, scalar in ((1, True), (4, True), (16, True), (32, True), (33, False)):
        vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")
        assert vec.unwrapped.scalar is scalar
        assert len(vec.unwrapped.subs) == (n if scalar else 0)
        assert all(s.config.info == "lean" for s in vec.unwrapped.subs)
