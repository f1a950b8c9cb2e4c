"""The popularity oracles of EdgeLLMCache-v0: the replayed popularity schedule is the one the
generator drew with, the oracles read no future request, ``popularity_oracle`` is exactly
``trim_greedy``'s rule when the two popularities coincide, and the best static set (the
online hit-ratio bound) matches brute force on tiny catalogs."""

from __future__ import annotations

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest

from mei_envs import cache
from mei_envs.baselines.edge_llm_cache_popularity import (
    PopularityOracle,
    best_static_set,
    online_hit_bound,
    popularity_schedule,
)
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.baselines.registry import make_policy
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheEnv

ENV_ID = "mei_envs/EdgeLLMCache-v0"


@pytest.mark.parametrize(
    ("M", "exponent", "drift", "n"),
    [
        (1, 1.0, 0.5, 50),
        (2, 0.8, 0.3, 200),
        (5, 1.2, 0.3, 500),
        (45, 1.0, 0.05, 1000),
        (7, 1.0, 0.0, 300),
    ],
)
def test_schedule_replays_the_sampler_and_gives_each_request_its_drawn_rank(M, exponent, drift, n):
    gen = cache.ZipfDriftRequests(M, exponent, drift)
    rng = np.random.default_rng(M * 1000 + n)
    state = rng.bit_generator.state
    out = gen.sample(rng, n)
    rng.bit_generator.state = state
    replay, swaps, probs = popularity_schedule(gen, rng, n)
    np.testing.assert_array_equal(replay, out)
    assert len(probs) == len(swaps) + 1
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # The Zipf rank each request was drawn with (the sampler's first two draws): under the
    # row of request t (all swaps up to and including t's), that model has that rank's
    # probability. Using the row before t's own swap breaks this whenever it moved the model.
    rng.bit_generator.state = state
    rng.permutation(M)
    ranks = np.minimum(np.searchsorted(gen.cdf, rng.random(n), side="right"), M - 1)
    zipf = cache.zipf_probabilities(M, exponent)
    rows = np.searchsorted(swaps, np.arange(n), side="right")
    np.testing.assert_allclose(probs[rows, out], zipf[ranks])
    if drift > 0 and M > 2:
        assert len(swaps) > 0


def _run(env, pol, seed):
    obs, info = env.reset(seed=seed)
    pol.reset(obs, info)
    actions, done = [], False
    while not done:
        a = pol.act(obs, info)
        actions.append(a)
        obs, _, term, trunc, info = env.step(a)
        done = term or trunc
    return actions, info["hit_ratio"]


def test_popularity_oracle_is_trim_greedys_rule_when_popularities_coincide():
    env = gym.make(ENV_ID, preset="quantised", requests_per_episode=400)
    trim = make_policy(ENV_ID, "trim_greedy", env)
    oracle = make_policy(ENV_ID, "popularity_oracle", env)
    inner = env.unwrapped
    # Feed the oracle the online estimate as its "true" popularity: every action must match.
    oracle.popularity = lambda t: inner.stats.ema(t)[oracle.k]
    for seed in (3, 4):
        a_trim, _ = _run(env, trim, seed)
        a_orc, _ = _run(env, oracle, seed)
        assert a_trim == a_orc
    # With the true popularity the two differ (otherwise the oracle would be vacuous).
    orc_true = PopularityOracle(env)
    assert _run(env, orc_true, 3)[0] != _run(env, trim, 3)[0]


@pytest.mark.parametrize("name", ["popularity_oracle", "popularity_knapsack", "knapsack_greedy"])
def test_oracles_never_read_future_requests(monkeypatch, name):
    env = gym.make(ENV_ID, preset="fast_drift", requests_per_episode=300)
    pol = make_policy(ENV_ID, name, env)
    obs, info = env.reset(seed=11)
    pol.reset(obs, info)

    def forbidden(*_):
        raise AssertionError("read the future request sequence")

    monkeypatch.setattr(EdgeLLMCacheEnv, "requests", property(forbidden))
    monkeypatch.setattr(EdgeLLMCacheEnv, "next_use", forbidden)
    done, n = False, 0
    while not done:
        obs, _, term, trunc, info = env.step(pol.act(obs, info))
        done, n = term or trunc, n + 1
    assert n > 10  # decisions happened


def test_oracle_needs_generated_requests(tmp_path):
    env = gym.make(ENV_ID, requests_per_episode=50)
    pol = make_policy(ENV_ID, "popularity_oracle", env)
    obs, info = env.reset(seed=0, options={"requests": [0, 1, 2] * 10})
    with pytest.raises(ValueError, match="popularity_oracle: .*not drawn by the env's generator"):
        pol.reset(obs, info)
    with pytest.raises(ValueError, match="bypass='sometimes'"):
        make_policy(ENV_ID, "popularity_oracle", env, bypass="sometimes")
    with pytest.raises(ValueError, match="refresh=0"):
        make_policy(ENV_ID, "knapsack_greedy", env, refresh=0)
    # The online knapsack needs no generator: it runs on a replayed sequence.
    pol = make_policy(ENV_ID, "knapsack_greedy", env)
    obs, info = env.reset(seed=0, options={"requests": [0, 1, 2] * 10})
    pol.reset(obs, info)


def test_best_static_set_matches_brute_force_on_tiny_catalogs():
    rng = np.random.default_rng(5)
    for _ in range(60):
        doc, capacity = cache.random_tiny_catalog(rng)
        cat = cache.catalog_from_dict(doc)
        p = rng.dirichlet(np.ones(cat.n_models))
        best = 0.0
        for k in range(cat.n_models + 1):
            for subset in itertools.combinations(range(cat.n_models), k):
                blocks = cat.membership[list(subset)].any(axis=0)
                if cat.block_bytes[blocks].sum() <= capacity:
                    best = max(best, p[list(subset)].sum())
        value, chosen = best_static_set(cat, capacity, p)
        assert value == pytest.approx(best, abs=1e-9)
        assert cat.block_bytes[cat.membership[chosen].any(axis=0)].sum() <= capacity + 1e-9


def test_online_bound_holds_and_the_knapsack_policy_reaches_it_without_drift(tmp_path):
    # Stationary popularity, long episodes: every policy's hit ratio is below the bound (up
    # to sampling noise) and popularity_knapsack, which keeps the best set, comes close.
    doc = {
        "blocks": {"base": 4.0, "a": 1.0, "b": 1.0, "c": 2.0, "q": 3.0, "r": 2.0},
        "models": [
            {"name": "base", "blocks": ["base"]},
            {"name": "ft_a", "blocks": ["base", "a"]},
            {"name": "ft_b", "blocks": ["base", "b"]},
            {"name": "ft_c", "blocks": ["base", "c"]},
            {"name": "quant", "blocks": ["q"]},
            {"name": "other", "blocks": ["r"]},
        ],
    }
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(doc))
    cfg = {
        "catalog_file": str(path),
        "capacity_bytes": 7.0,
        "drift_rate": 0.0,
        "requests_per_episode": 3000,
    }
    env = EdgeLLMCacheEnv(**cfg)
    oracle = PopularityOracle(env)
    bounds = []
    for seed in range(4):
        env.reset(seed=seed)
        oracle.reset(None, None)
        bounds.append(
            online_hit_bound(env.catalog, env.capacity_bytes, oracle.swap_times, oracle.probs, 3000)
        )
    bound = float(np.mean(bounds))
    hits = {
        name: float(
            run_episodes(ENV_ID, name, episodes=4, seed=0, env_config=cfg)
            .metrics["hit_ratio"]
            .mean()
        )
        for name in ("lru", "trim_greedy", "popularity_oracle", "popularity_knapsack")
    }
    assert max(hits.values()) <= bound + 0.02, (hits, bound)
    assert hits["popularity_knapsack"] >= bound - 0.02, (hits, bound)


@pytest.mark.parametrize("reward", ["hits", "bytes", "latency"])
def test_knapsack_greedy_is_legal_and_below_the_offline_optimum(tmp_path, reward):
    from mei_envs.baselines.edge_llm_cache import solve_offline
    from tests.test_edge_llm_cache_oracles import _env, _return

    rng = np.random.default_rng({"hits": 11, "bytes": 12, "latency": 13}[reward])
    for _ in range(20):
        env, req = _env(tmp_path, rng, unit=False, reward=reward)  # invalid_action="raise"
        env.reset(seed=0, options={"requests": req})
        opt, _ = solve_offline(env)
        for refresh in (1, 5):
            assert _return(env, "knapsack_greedy", req, refresh=refresh) <= opt + 1e-9
