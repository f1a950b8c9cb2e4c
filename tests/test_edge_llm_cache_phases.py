"""Periodic demand in EdgeLLMCache-v0 (``phase_count > 1``): the phased sampler, its config
fields and the clock at the end of the observation."""

from __future__ import annotations

import json
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


# ---- the popularity oracles' replay and the clock-aware heuristic ----------------------------
@pytest.mark.parametrize(
    ("M", "drift", "n", "K", "L"),
    [(5, 0.3, 500, 2, 40), (45, 0.05, 1000, 4, 100), (7, 0.0, 300, 3, 1), (9, 0.2, 120, 5, 200)],
)
def test_schedule_replays_the_phased_sampler_and_gives_each_request_its_drawn_rank(
    M, drift, n, K, L
):
    from mei_envs.baselines.edge_llm_cache_popularity import popularity_schedule

    gen = cache.ZipfDriftRequests(M, 1.0, drift, phase_count=K, phase_length=L)
    rng = np.random.default_rng(M * 1000 + n)
    state = rng.bit_generator.state
    out = gen.sample(rng, n)
    after = rng.bit_generator.state
    rng.bit_generator.state = state
    replay, changes, probs = popularity_schedule(gen, rng, n)
    np.testing.assert_array_equal(replay, out)
    assert rng.bit_generator.state == after  # the same draws, no more
    assert len(probs) == len(changes) + 1
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Every regime start is a change; the rows of one regime's requests hold its ranking.
    assert set(range(L, n, L)) <= set(changes.tolist())
    rng.bit_generator.state = state
    rng.permutation(M)
    ranks = np.minimum(np.searchsorted(gen.cdf, rng.random(n), side="right"), M - 1)
    zipf = cache.zipf_probabilities(M, 1.0)
    rows = np.searchsorted(changes, np.arange(n), side="right")
    np.testing.assert_allclose(probs[rows, out], zipf[ranks])


def test_popularity_oracle_and_bound_use_the_phased_popularity():
    from mei_envs.baselines.edge_llm_cache_popularity import online_hit_bound
    from mei_envs.baselines.registry import make_policy

    env = gym.make(ENV_ID, phase_count=3, phase_length=60, requests_per_episode=400)
    pol = make_policy(ENV_ID, "popularity_knapsack", env)
    obs, info = env.reset(seed=9)
    pol.reset(obs, info)
    inner = env.unwrapped
    # The oracle's popularity at t is the ranking of the regime in force: its top model is
    # each regime's most requested one.
    req, regime = inner.requests, inner.generator.regime(np.arange(400))
    for k in range(3):
        t = int(np.flatnonzero(regime == k)[0])
        p = pol.popularity(t)
        assert p.max() == pytest.approx(cache.zipf_probabilities(inner.n_models, 1.0)[0])
        assert np.bincount(req[regime == k], minlength=inner.n_models).argmax() == p.argmax()
    b = online_hit_bound(inner.catalog, inner.capacity_bytes, pol.swap_times, pol.probs, 400)
    assert 0.0 < b <= 1.0


@pytest.mark.parametrize("reward", ["hits", "bytes"])
def test_phase_knapsack_is_online_and_legal(monkeypatch, reward):
    from mei_envs.baselines.registry import make_policy

    env = gym.make(ENV_ID, phase_count=3, phase_length=50, requests_per_episode=300, reward=reward)
    pol = make_policy(ENV_ID, "phase_knapsack", env)
    obs, info = env.reset(seed=4)
    pol.reset(obs, info)

    def forbidden(*_):
        raise AssertionError("read the future request sequence")

    monkeypatch.setattr(EdgeLLMCacheEnv, "requests", property(forbidden))
    monkeypatch.setattr(EdgeLLMCacheEnv, "next_use", forbidden)
    n, done = 0, False
    while not done:
        a = pol.act(obs, info)
        assert env.unwrapped.action_masks()[a]  # invalid_action="raise" would raise anyway
        obs, _, term, _, info = env.step(a)
        done, n = term, n + 1
    assert n > 10


def test_phase_knapsack_estimates_are_per_regime_moving_averages():
    from mei_envs.baselines.edge_llm_cache_phase import PhaseKnapsack

    env = gym.make(ENV_ID, phase_count=2, phase_length=3, requests_per_episode=20).unwrapped
    pol = PhaseKnapsack(env, half_life=2.0, horizon=4, prior=0.0)
    pol.reset(None, None)
    M = env.n_models
    past = np.array([0, 0, 1, 2, 2, 2, 1], dtype=np.int64)  # regimes 0,0,0,1,1,1,0
    s = {"t": 7, "model": 3, "past_requests": past, "ema": np.ones((3, M))}
    est = pol.estimates(s)
    d = 0.5**0.5
    # Regime 0 saw 0, 0, 1, 1, 3 (t = 0, 1, 2, 6, 7); regime 1 saw 2, 2, 2.
    w0 = (1 - d) * d ** np.arange(4, -1, -1)
    want0 = np.zeros(M)
    np.add.at(want0, [0, 0, 1, 1, 3], w0)
    np.testing.assert_allclose(est[0], want0 / (1 - d**5))
    want1 = np.zeros(M)
    want1[2] = 1.0
    np.testing.assert_allclose(est[1], want1)
    # Values over the next 4 requests (t = 7, 8 in regime 0; 9, 10 in regime 1).
    np.testing.assert_allclose(pol.values(s), (2 * est[0] + 2 * est[1]) / 4)
    # Feeding the same decision again folds nothing twice.
    np.testing.assert_allclose(pol.estimates(s), est)
    with pytest.raises(ValueError, match="horizon=0"):
        PhaseKnapsack(env, horizon=0)


def test_phase_sweep_script_reports_policies_and_the_bound():
    from mei_envs.experiments import edge_llm_cache_phase_sweep as sweep

    cfg = {"phase_count": 2, "phase_length": 30, "requests_per_episode": 120}
    (line,) = sweep.main(
        ["--episodes", "2", "--configs", json.dumps([cfg]), "--bound"]
        + ["--policies", "lru", "knapsack_greedy", "belady_shared"]
    )
    from mei_envs.baselines.evaluation import run_episodes

    lru = run_episodes(ENV_ID, "lru", episodes=2, seed=200000, env_config=cfg)
    assert f"lru {100 * lru.metrics['hit_ratio'].mean():.1f}" in line
    assert "online bound" in line and "belady_shared - knapsack_greedy" in line
