"""EdgeLLMCache-v0 oracles on tiny instances: Belady, exhaustive search and the IP bound."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from mei_envs.baselines.edge_llm_cache import offline_bound, solve_offline
from mei_envs.baselines.registry import make_policy
from mei_envs.cache import random_tiny_catalog
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheEnv
from tests.test_edge_llm_cache import POLICIES

ENV_ID = "mei_envs/EdgeLLMCache-v0"
# Every registered policy the exact optimum must dominate: the cache tests' list plus the
# popularity knapsack heuristic.
ONLINE_AND_OFFLINE = [*POLICIES, "knapsack_greedy", "phase_knapsack"]


def _env(tmp_path, rng: np.random.Generator, *, unit: bool, reward: str = "hits"):
    doc, capacity = random_tiny_catalog(rng, unit=unit)
    M = len(doc["models"])
    path = tmp_path / f"cat{rng.integers(1 << 30)}.json"
    path.write_text(json.dumps(doc))
    env = EdgeLLMCacheEnv(
        catalog_file=str(path), capacity_bytes=capacity, reward=reward, invalid_action="raise"
    )
    T = int(rng.integers(6, 13))
    # Skewed requests so that hits happen.
    p = 1.0 / np.arange(1, M + 1)
    requests = rng.choice(M, size=T, p=p / p.sum()).tolist()
    return env, requests


def _return(env: EdgeLLMCacheEnv, name: str, requests: list[int], **params) -> float:
    pol = make_policy(ENV_ID, name, env, **params)
    obs, info = env.reset(seed=0, options={"requests": requests})
    pol.reset(obs, info)
    total, done = 0.0, False
    while not done:
        obs, r, term, _, info = env.step(pol.act(obs, info))
        total += r
        done = term
    return total


def _brute_force(env: EdgeLLMCacheEnv) -> float:
    """Best return by enumerating every action sequence on deep copies (no memo)."""
    best = -np.inf

    def go(e: EdgeLLMCacheEnv, acc: float) -> None:
        nonlocal best
        for a in np.flatnonzero(e.action_masks()).tolist():
            child = copy.deepcopy(e)
            _, r, term, _, _ = child.step(a)
            if term:
                best = max(best, acc + r)
            else:
                go(child, acc + r)

    go(env, 0.0)
    return best


def test_belady_equals_offline_opt_with_unit_sizes_and_no_sharing(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        env, req = _env(tmp_path, rng, unit=True)
        env.reset(seed=0, options={"requests": req})
        opt, _ = solve_offline(env)
        assert _return(env, "belady", req) == pytest.approx(opt)
        assert _return(env, "offline_opt", req) == pytest.approx(opt)
        # Belady with bypass is optimal for the relaxed problem too: the IP is tight here.
        env.reset(seed=0, options={"requests": req})
        assert offline_bound(env)["bound"] == pytest.approx(opt, abs=1e-6)


@pytest.mark.parametrize("reward", ["hits", "bytes", "latency"])
def test_offline_opt_beats_every_policy_with_sizes_and_sharing(tmp_path, reward) -> None:
    rng = np.random.default_rng({"hits": 1, "bytes": 2, "latency": 3}[reward])
    gaps = []
    for _ in range(25):
        env, req = _env(tmp_path, rng, unit=False, reward=reward)
        env.reset(seed=0, options={"requests": req})
        opt, _ = solve_offline(env)
        for name in ONLINE_AND_OFFLINE:
            assert _return(env, name, req) <= opt + 1e-9, name
        assert _return(env, "offline_opt", req) == pytest.approx(opt)
        env.reset(seed=0, options={"requests": req})
        assert offline_bound(env)["bound"] >= opt - 1e-6  # a relaxation: an upper bound
        gaps.append(opt - _return(env, "belady_shared", req))
    assert min(gaps) >= -1e-9


def test_exhaustive_search_equals_brute_force(tmp_path) -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(30):
        env, req = _env(tmp_path, rng, unit=False)
        req = req[:8]
        env.reset(seed=0, options={"requests": req})
        if env._pending < 0:
            continue
        opt, _ = solve_offline(env)
        # The first step's reward includes the requests reset fast-forwarded over.
        assert _brute_force(env) == pytest.approx(opt)
        checked += 1
    assert checked >= 10


def test_offline_opt_refuses_large_instances() -> None:
    env = EdgeLLMCacheEnv(requests_per_episode=400)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="max_states"):
        solve_offline(env, max_states=50)
