"""Periodic demand in EdgeLLMCache-v0 (``phase_count > 1``): the phased sampler, its config
fields and the clock at the end of the observation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from mei_envs import cache
from mei_envs.config import ConfigError
from mei_envs.envs.edge_llm_cache import N_GLOBAL_FEATURES, EdgeLLMCacheEnv

ENV_ID = "mei_envs/EdgeLLMCache-v0"


def test_first_phase_is_the_unphased_sampler_and_regimes_cycle():
    plain = cache.ZipfDriftRequests(20, 1.0, 0.02)
    phased = cache.ZipfDriftRequests(20, 1.0, 0.02, phase_count=3, phase_length=50)
    a = plain.sample(np.random.default_rng(7), 600)
    b = phased.sample(np.random.default_rng(7), 600)
    np.testing.assert_array_equal(a[:50], b[:50])
    assert not np.array_equal(a[50:], b[50:])
    np.testing.assert_array_equal(phased.regime(np.arange(0, 600, 50)), [0, 1, 2] * 4)


def test_without_drift_each_regime_draws_from_its_own_fixed_ranking():
    M, K, L, n = 12, 3, 400, 12_000
    gen = cache.ZipfDriftRequests(M, 1.0, 0.0, phase_count=K, phase_length=L)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    req = gen.sample(rng, n)
    # The permutations: regime 0's is the sampler's first draw, the others come after the
    # ranks, swap events and pairs.
    rng.bit_generator.state = state
    perms = [rng.permutation(M)]
    rng.random(n), rng.random(n), rng.integers(0, M, size=0), rng.integers(0, M - 1, size=0)
    perms += [rng.permutation(M) for _ in range(K - 1)]
    zipf = cache.zipf_probabilities(M, 1.0)
    regime = gen.regime(np.arange(n))
    for k in range(K):
        freq = np.bincount(req[regime == k], minlength=M) / (regime == k).sum()
        want = np.empty(M)
        want[perms[k]] = zipf
        np.testing.assert_allclose(freq, want, atol=0.02)
    # The same regime returns with the same ranking: cycle 0 and cycle 9 of regime 1 agree.
    late = req[(regime == 1) & (np.arange(n) >= 9 * K * L)]
    assert np.bincount(late, minlength=M).argmax() == perms[1][0]


def test_drift_moves_only_the_regime_in_force():
    M, K, L, n = 30, 2, 100, 1000
    gen = cache.ZipfDriftRequests(M, 1.0, 0.05, phase_count=K, phase_length=L)
    rng = np.random.default_rng(5)
    perm0 = rng.permutation(M)
    ranks = np.minimum(np.searchsorted(gen.cdf, rng.random(n), side="right"), M - 1)
    events = np.flatnonzero(rng.random(n) < gen.drift_rate)
    a = rng.integers(0, M, size=events.size)
    b = (a + 1 + rng.integers(0, M - 1, size=events.size)) % M
    req, times, perms = gen.phased_schedule(rng, perm0, ranks, events, a, b)
    assert times[0] == 0 and np.all(np.diff(times) > 0)
    assert set(range(L, n, L)) <= set(times.tolist()) and set(events.tolist()) <= set(times)
    # Each request is the model at its drawn rank under the ranking in force.
    rows = np.searchsorted(times, np.arange(n), side="right") - 1
    np.testing.assert_array_equal(req, perms[rows, ranks])
    # A regime's ranking at its return equals the one it was left with.
    for t in range(2 * L, n, L):
        i_start = int(np.searchsorted(times, t))
        i_prev_end = int(np.searchsorted(times, t - L, side="left")) - 1
        np.testing.assert_array_equal(perms[i_start], perms[i_prev_end])


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"phase_count": 0}, "phase_count"),
        ({"phase_count": 2.5}, "phase_count"),
        ({"phase_count": 1001}, "phase_count"),
        ({"phase_count": 2, "phase_length": 0}, "phase_length"),
    ],
)
def test_bad_phase_fields_name_the_field(cfg, field):
    with pytest.raises(ConfigError, match=rf"EdgeLLMCacheConfig\.{field}="):
        EdgeLLMCacheEnv(config=cfg)


def test_phases_refuse_a_trace(tmp_path):
    env = EdgeLLMCacheEnv(config={"requests_per_episode": 5})
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(env.catalog.names[:10]) + "\n")
    EdgeLLMCacheEnv(config={"trace_file": str(trace), "requests_per_episode": 5})
    with pytest.raises(ConfigError, match=r"phase_count=2: regimes need generated requests"):
        EdgeLLMCacheEnv(config={"trace_file": str(trace), "phase_count": 2})


def test_clock_ends_the_observation_only_when_demand_cycles():
    plain = gym.make(ENV_ID).unwrapped
    F, M = plain.n_features, plain.n_models
    assert plain.observation_space.shape == (F * M + N_GLOBAL_FEATURES,)
    assert plain.n_clock == 0
    env = gym.make(ENV_ID, phase_count=4, phase_length=25).unwrapped
    assert env.observation_space.shape == (F * M + N_GLOBAL_FEATURES + 2,)
    obs, info = env.reset(seed=3)
    seen = set()
    while True:
        t = info["t"]
        x = (t % 100) / 100
        want = np.float32(
            [0.5 + 0.5 * math.sin(2 * math.pi * x), 0.5 + 0.5 * math.cos(2 * math.pi * x)]
        )
        np.testing.assert_array_equal(obs[-2:], want)
        # The rest is the unphased layout: the share of requests served before the clock.
        assert obs[F * M + 2] == np.float32(t / 1000)
        seen.add(t // 25 % 4)
        obs, _, term, _, info = env.step(env.bypass_action)
        if term:
            break
    assert seen == {0, 1, 2, 3}
    assert env.clock_features(7) == env.clock_features(107)
    assert env.clock_features(0) == (0.5, 1.0)


def test_decision_state_logs_past_requests_read_only():
    env = gym.make(ENV_ID, requests_per_episode=300).unwrapped
    env.reset(seed=2)
    s = env.decision_state()
    t = s["t"]
    np.testing.assert_array_equal(s["past_requests"], env.requests[:t])
    assert s["model"] == env.requests[t]
    with pytest.raises(ValueError):
        s["past_requests"][0] = 1
