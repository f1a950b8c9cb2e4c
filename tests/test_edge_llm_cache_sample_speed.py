"""The faster EdgeLLMCache-v0 reset (session 9) against brute force: the request sampler's
bucket look-up of the Zipf ranks and its one call for both blocks of uniforms give the
requests (and leave the generator in the state) of a per-request walk that draws in the
documented order, and an env whose episode length changes between resets observes what a
new env observes."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs import cache
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheEnv


def _brute_force(gen: cache.ZipfDriftRequests, rng: np.random.Generator, n: int) -> np.ndarray:
    """The unphased sampler, request by request: a permutation, n rank uniforms, n swap
    uniforms (if M > 1), the swapped models and their partners; before request t a drawn
    swap exchanges two models' ranks."""
    M = gen.n_models
    perm = rng.permutation(M).tolist()
    u = rng.random(n)
    ranks = [int(np.searchsorted(gen.cdf, x, side="right")) for x in u]
    swap = (rng.random(n) < gen.drift_rate) if M > 1 else np.zeros(n, dtype=bool)
    k = int(swap.sum())
    a = rng.integers(0, M, size=k).tolist()
    b = ((np.asarray(a, dtype=np.int64) + 1 + rng.integers(0, max(M - 1, 1), size=k)) % M).tolist()
    out, e = [], 0
    for t in range(n):
        if swap[t]:
            ra, rb = perm.index(a[e]), perm.index(b[e])
            perm[ra], perm[rb] = perm[rb], perm[ra]
            e += 1
        out.append(perm[min(ranks[t], M - 1)])
    return np.asarray(out, dtype=np.int64)


@pytest.mark.parametrize(
    ("n_models", "exponent", "drift_rate", "n"),
    [
        (45, 1.0, 0.01, 1000),  # the default: the bucket look-up
        (45, 1.0, 0.05, 2000),  # fast_drift
        (45, 1.0, 0.9, 1000),  # a swap before most requests
        (300, 0.8, 0.02, 800),
        (45, 5.0, 0.02, 500),  # ranks too close for buckets: searchsorted
        (2, 0.0, 0.5, 200),
        (1, 1.0, 0.3, 50),
        (45, 1.0, 0.0, 300),
    ],
)
def test_sample_equals_the_walk_request_by_request(n_models, exponent, drift_rate, n) -> None:
    gen = cache.ZipfDriftRequests(n_models, exponent, drift_rate)
    if (n_models, exponent) == (45, 1.0):
        assert gen._buckets is not None
    if exponent == 5.0:
        assert gen._buckets is None
    for seed in range(4):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        got = gen.sample(r1, n)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, _brute_force(gen, r2, n))
        assert r1.bit_generator.state == r2.bit_generator.state


@pytest.mark.parametrize(("n_models", "exponent"), [(45, 1.0), (1000, 1.0), (7, 2.5), (1, 1.0)])
def test_bucket_ranks_equal_searchsorted(n_models, exponent) -> None:
    gen = cache.ZipfDriftRequests(n_models, exponent, 0.0)
    u = np.random.default_rng(0).random(20_000)
    # The cdf's values and their neighbours: the bucket edges a look-up could get wrong.
    edges = np.concatenate([gen.cdf, np.nextafter(gen.cdf, 0.0), np.nextafter(gen.cdf, 2.0)])
    u = np.concatenate([u, np.clip(edges, 0.0, np.nextafter(1.0, 0.0)), [0.0]])
    want = np.searchsorted(gen.cdf, u, side="right")
    np.testing.assert_array_equal(gen.ranks(u.copy()), want)
    assert want.max() <= n_models - 1


def test_reset_after_another_episode_length_observes_a_new_envs_start() -> None:
    cfg = {"requests_per_episode": 200}
    env, fresh = EdgeLLMCacheEnv(config=cfg), EdgeLLMCacheEnv(config=cfg)
    env.reset(seed=1)
    for _ in range(5):
        env.step(int(np.flatnonzero(env.action_masks())[-1]))
    env.reset(options={"requests": [0, 1, 2, 0, 3, 1, 0]})
    env.step(env.bypass_action)
    for seed in (2, 3):  # back to the configured length, then the same length again
        o1, _ = env.reset(seed=seed)
        o2, _ = fresh.reset(seed=seed)
        np.testing.assert_array_equal(o1, o2)
        rng = np.random.default_rng(seed)
        for _ in range(60):
            a = int(rng.choice(np.flatnonzero(fresh.action_masks())))
            s1, s2 = env.step(a), fresh.step(a)
            np.testing.assert_array_equal(s1[0], s2[0])
            assert s1[1:4] == s2[1:4]
            if s1[2]:
                break
