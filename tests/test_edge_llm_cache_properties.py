"""Property-based checks of EdgeLLMCache-v0: cache invariants and the whole config space."""

from __future__ import annotations

import re
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mei_envs.config import ConfigError
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig, EdgeLLMCacheEnv
from mei_envs.llm import costs

SMALL_BASES = ["qwen2-0.5b", "gpt2", "opt-125m", "mobilellm-125m", "llama-3.2-1b", "phi-2"]

valid_configs = st.fixed_dictionaries(
    {
        "preset": st.sampled_from(list(EdgeLLMCacheConfig.PRESETS)),
        "sharing": st.booleans(),
        "capacity_fraction": st.floats(0.02, 1.0),
        "zipf_exponent": st.floats(0.0, 2.0),
        "drift_rate": st.floats(0.0, 0.5),
        "phase_count": st.integers(1, 4),
        "phase_length": st.integers(1, 60),
        "requests_per_episode": st.integers(1, 150),
        "reward": st.sampled_from(["hits", "bytes", "latency"]),
        "cloud_rtt_s": st.floats(0.0, 0.5),
        "fetch_deadline_s": st.floats(0.0, 5.0),
        "obs_regime_features": st.booleans(),
    }
).map(  # the per-regime rows need regimes (phase_count > 1; otherwise a ConfigError)
    lambda c: {**c, "obs_regime_features": c["obs_regime_features"] and c["phase_count"] > 1}
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=valid_configs, seed=st.integers(0, 2**31 - 1))
def test_cache_invariants_hold_on_every_step(cfg: dict, seed: int) -> None:
    env = EdgeLLMCacheEnv(config=cfg)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    st_ = env.state
    cap = env.capacity_bytes
    total_requests, steps, done = 0.0, 0, False
    while not done:
        assert env.observation_space.contains(obs)
        state = env.state
        state.check()  # used bytes = bytes of held blocks <= capacity; counts consistent
        mask = info["action_mask"]
        np.testing.assert_array_equal(mask, env.action_masks())
        assert mask[-1]  # bypass is always legal
        if info["model"] >= 0:
            j = info["model"]
            # A decision exists only for a miss that needs space while a choice exists.
            assert not state.cached[j]
            assert state.used_bytes + state.missing_bytes(j) > cap
            assert env.catalog.model_bytes[j] <= cap * (1 + 1e-12)
            assert mask[:-1].any()
            assert np.all(mask[:-1] <= state.cached)
        else:
            # Outside decisions every held block has a cached user.
            assert np.all(state.refcount[state.held] >= 1)
        a = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, term, trunc, info = env.step(a)
        assert np.isfinite(reward)
        assert not trunc
        assert info["invalid_actions"] == 0
        assert 0 <= info["hits"] <= info["requests"]
        assert info["backhaul_bytes"] >= -1e-6
        total_requests += info["requests"]
        steps += 1
        done = term
    env.state.check()
    assert np.all(env.state.refcount[env.state.held] >= 1)
    assert st_ is env.state
    assert total_requests == env.config.requests_per_episode
    assert steps <= env.config.requests_per_episode * (env.n_models + 1)
    for key in ("hit_ratio", "byte_hit_ratio", "deadline_satisfaction"):
        assert 0.0 <= info[key] <= 1.0


# ---- the whole config space ---------------------------------------------------------------------
def _maybe(strategy, bad):
    """Mostly valid values, sometimes a bad one."""
    return st.integers(0, 19).flatmap(lambda k: bad if k == 0 else strategy)


any_configs = st.fixed_dictionaries(
    {},
    optional={
        "preset": _maybe(st.sampled_from(list(EdgeLLMCacheConfig.PRESETS)), st.just("bogus")),
        "bases": _maybe(
            st.lists(st.sampled_from(SMALL_BASES), min_size=1, max_size=3, unique=True),
            st.sampled_from([[], ["gpt-5"], ["gpt2", "gpt2"], [3]]),
        ),
        "base_precision": _maybe(st.sampled_from(["fp16", "bf16", "fp32"]), st.just("fp8")),
        "lora_ranks": _maybe(
            st.lists(st.integers(1, 256), max_size=3, unique=True),
            st.sampled_from([[0], [5000], [8, 8], [2.5]]),
        ),
        "lora_targets": _maybe(
            st.lists(
                st.sampled_from(["q,v", "all_linear", "q,k,v,o", "up,down"]),
                min_size=1,
                max_size=2,
                unique=True,
            ),
            st.sampled_from([["gate,up"], ["xyz"], [""], []]),
        ),
        "adapter_precision": st.sampled_from(["fp16", "fp32", "int8"]),
        "partial_top_layers": _maybe(
            st.lists(st.integers(1, 12), max_size=3, unique=True),
            st.sampled_from([[0], [99], [2, 2]]),
        ),
        "quant_precisions": _maybe(
            st.lists(st.sampled_from(["int8", "int4", "q4_0", "q8_0"]), max_size=3, unique=True),
            st.sampled_from([["fp16"], ["fp8"], ["int8", "int8"]]),
        ),
        "sharing": st.booleans(),
        "capacity_fraction": _maybe(st.floats(0.01, 1.0), st.sampled_from([0.0, -0.5, 1.5])),
        "capacity_bytes": _maybe(
            st.one_of(st.just(0.0), st.floats(1.0, 1e11)), st.sampled_from([-1.0, 0.5])
        ),
        "zipf_exponent": _maybe(st.floats(0.0, 5.0), st.sampled_from([-1.0, 9.0])),
        "drift_rate": _maybe(st.floats(0.0, 1.0), st.sampled_from([-0.1, 1.5])),
        "phase_count": _maybe(st.integers(1, 5), st.sampled_from([0, -2, 1.5, 1001])),
        "phase_length": _maybe(st.integers(1, 30), st.sampled_from([0, 2.5, 10**8])),
        "requests_per_episode": _maybe(st.integers(1, 40), st.sampled_from([0, -3, 2.5])),
        "backhaul_rate_bps": _maybe(st.floats(1e6, 1e11), st.sampled_from([0.0, -1.0])),
        "user_rate_bps": _maybe(st.floats(1e6, 1e10), st.just(0.0)),
        "cloud_rtt_s": _maybe(st.floats(0.0, 1.0), st.just(-0.1)),
        "fetch_deadline_s": _maybe(st.floats(0.0, 10.0), st.just(-1.0)),
        "reward": _maybe(st.sampled_from(["hits", "bytes", "latency"]), st.just("energy")),
        "invalid_action": _maybe(st.sampled_from(["bypass", "raise"]), st.just("ignore")),
        "info": _maybe(st.sampled_from(["full", "lean"]), st.just("verbose")),
        "half_lives": _maybe(
            st.lists(st.floats(1.0, 1e4), min_size=1, max_size=3),
            st.sampled_from([[], [0.5], [1.0] * 9]),
        ),
        "obs_regime_features": _maybe(st.booleans(), st.sampled_from([2, "maybe"])),
    },
)

_CALLS = {"n": 0, "accepted": 0, "t0": 0.0}


@settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cfg=any_configs, seed=st.integers(0, 2**16), unknown_key=st.integers(0, 29))
def test_every_accepted_config_builds_resets_and_steps(
    cfg: dict, seed: int, unknown_key: int
) -> None:
    if unknown_key == 0:
        cfg = {**cfg, "bogus_key": 1}
    if _CALLS["n"] == 0:
        _CALLS["t0"] = time.perf_counter()
    _CALLS["n"] += 1
    try:
        env = EdgeLLMCacheEnv(config=cfg)
    except ConfigError as exc:
        msg = str(exc)
        names = set(EdgeLLMCacheConfig.field_names())
        named = re.findall(r"EdgeLLMCacheConfig\.(\w+)", msg)
        if "unknown key" in msg:
            assert "bogus_key" in msg
        else:
            assert named and named[0] in names, msg
        return
    _CALLS["accepted"] += 1
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for _ in range(3):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, r, term, _, info = env.step(a)
        assert np.isfinite(r) and np.all(np.isfinite(obs))
        assert env.observation_space.contains(obs)
        assert np.isfinite(info["mean_latency_s"])
        if term:
            break


def test_config_space_run_was_large_and_fast() -> None:
    """Runs after the property test (file order): it accepted and rejected many configs."""
    if _CALLS["n"] == 0:  # run alone (-k): nothing to check
        return
    assert _CALLS["n"] >= 2000
    assert 200 <= _CALLS["accepted"] <= _CALLS["n"] - 200
    assert time.perf_counter() - _CALLS["t0"] < 180
    print(f"config space: {_CALLS['n']} configs, {_CALLS['accepted']} accepted")


def test_precision_table_has_what_the_presets_use() -> None:
    for name in EdgeLLMCacheConfig.PRESETS:
        for p in EdgeLLMCacheConfig.from_dict(preset=name).quant_precisions:
            assert p in costs.PRECISION_BITS


def test_recency_rounding_stays_in_the_box():
    """Hypothesis found it: with T = 2 requests, 1 - log(1 + T) / log(1 + T) rounded to
    -2.2e-16, just outside the observation's [0, 1] box (recency and time-cached rows)."""
    env = EdgeLLMCacheEnv(EdgeLLMCacheConfig(half_lives=(1.0,), requests_per_episode=2))
    for seed in (0, 2):  # both gave -2.2e-16 entries before the fix
        obs, _ = env.reset(seed=seed)
        assert env.observation_space.contains(obs) and obs.min() >= 0.0
