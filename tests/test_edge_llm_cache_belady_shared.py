"""``belady_shared`` (the offline best-set rule) on tiny instances: its keep set is the
brute-force best set for the true future requests, it reads no request beyond its window,
and it is optimal on a case the old ``(next request - now) x bytes`` rule gets wrong."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from mei_envs.baselines.edge_llm_cache import BeladySharedPolicy, solve_offline
from mei_envs.baselines.registry import list_policies, make_policy
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheEnv
from tests.test_edge_llm_cache_oracles import ENV_ID, _env, _return


def _brute_best(env: EdgeLLMCacheEnv, value: np.ndarray) -> float:
    """The most ``value`` a model set whose unique blocks fit in the capacity holds."""
    mem, sizes, M = env.catalog.membership, env.catalog.block_bytes, env.n_models
    best = 0.0
    for r in range(M + 1):
        for subset in itertools.combinations(range(M), r):
            blocks = mem[list(subset)].any(axis=0) if subset else np.zeros(mem.shape[1], bool)
            if sizes[blocks].sum() <= env.capacity_bytes * (1 + 1e-12):
                best = max(best, float(value[list(subset)].sum()))
    return best


def _decisions(env: EdgeLLMCacheEnv, pol, requests: list[int]) -> list[tuple[int, int]]:
    """``(t, action)`` of every decision of ``pol`` on ``requests``."""
    obs, info = env.reset(seed=0, options={"requests": requests})
    pol.reset(obs, info)
    out, done = [], False
    while not done:
        a = pol.act(obs, info)
        if env._pending >= 0:
            out.append((env._t, a))
        obs, _, done, _, info = env.step(a)
    return out


@pytest.mark.parametrize(
    "reward, window, gamma, refresh",
    [("hits", 200, 1.0, 1), ("hits", 4, 0.8, 1), ("bytes", 5, 1.0, 3)],
)
def test_keep_set_is_the_brute_force_best_set_for_the_future_requests(
    tmp_path, reward, window, gamma, refresh
) -> None:
    rng = np.random.default_rng({"hits": 11, "bytes": 12}[reward] + window)
    checked = 0
    for _ in range(25):
        env, req = _env(tmp_path, rng, unit=False, reward=reward)
        pol = BeladySharedPolicy(env, window=window, gamma=gamma, refresh=refresh)
        decisions = dict(_decisions(env, pol, req))
        for t in range(len(req)):
            v, keep = pol.keep_set(t)
            # The values, recomputed here: weighted requests in (anchor, anchor + window],
            # cut at the episode's end.
            anchor = t - t % refresh
            want = np.zeros(env.n_models)
            for s in range(anchor + 1, min(anchor + 1 + window, len(req))):
                want[req[s]] += gamma ** (s - anchor - 1)
            if reward != "hits":
                want *= env.catalog.model_bytes
            np.testing.assert_allclose(v, want)
            held = env.catalog.membership[keep].any(axis=0)
            assert env.catalog.block_bytes[held].sum() <= env.capacity_bytes * (1 + 1e-9)
            assert (v[keep] > 0).all()
            assert v[keep].sum() == pytest.approx(_brute_best(env, v))
            if t in decisions and not keep[req[t]]:
                assert decisions[t] == env.bypass_action  # a request outside the set
            checked += t in decisions
    assert checked >= 10  # decisions seen


def test_keep_set_reads_no_request_beyond_its_window_or_the_episode(tmp_path) -> None:
    """Two sequences that agree up to index ``t + window`` give the same values and keep
    set at ``t``; with an unbounded window the values are the counts of the requests left."""
    rng = np.random.default_rng(5)
    window, compared = 3, 0
    for _ in range(20):
        env, req = _env(tmp_path, rng, unit=False)
        M = env.n_models
        other = req[:8] + [(m + 1) % M for m in req[8:]] + [0, M - 1]  # differs from 8 on
        sets = []
        for seq in (req, other):
            pol = BeladySharedPolicy(env, window=window, refresh=1)
            obs, info = env.reset(seed=0, options={"requests": seq})
            pol.reset(obs, info)
            sets.append([pol.keep_set(t) for t in range(min(8, len(req)) - window)])
        for (v1, k1), (v2, k2) in zip(*sets, strict=True):
            np.testing.assert_array_equal(v1, v2)
            np.testing.assert_array_equal(k1, k2)
            compared += 1
        pol = BeladySharedPolicy(env, window=10**6, gamma=1.0, refresh=1)
        obs, info = env.reset(seed=0, options={"requests": req})
        pol.reset(obs, info)
        for t in range(len(req)):
            left = np.bincount(req[t + 1 :], minlength=env.n_models)
            np.testing.assert_allclose(pol.values(t), left)
    assert compared >= 40


def test_optimal_where_the_distance_times_bytes_rule_is_not(tmp_path) -> None:
    """Cache {B (2 bytes), S1 (1 byte)} of 3 bytes; S2 (1 byte) is requested at t=2, then
    S2, B, S1, S2, B, B. ``belady_bytes`` scores B (4 - 2) x 2 = 4 > S1 (5 - 2) x 1 = 3 and
    evicts B, which is requested 3 more times; ``belady_shared`` values B 3, S1 1, S2 2,
    keeps {B, S2} (5 of the 3-byte knapsack) and evicts S1: optimal."""
    path = tmp_path / "bs.json"
    path.write_text(
        json.dumps(
            {
                "blocks": {"big": 2.0, "s1": 1.0, "s2": 1.0},
                "models": [
                    {"name": "B", "blocks": ["big"]},
                    {"name": "S1", "blocks": ["s1"]},
                    {"name": "S2", "blocks": ["s2"]},
                ],
            }
        )
    )
    env = EdgeLLMCacheEnv(catalog_file=str(path), capacity_bytes=3.0, invalid_action="raise")
    req = [0, 1, 2, 2, 0, 1, 2, 0, 0]
    assert _decisions(env, make_policy(ENV_ID, "belady_bytes", env), req)[0] == (2, 0)
    assert _decisions(env, make_policy(ENV_ID, "belady_shared", env), req)[0] == (2, 1)
    env.reset(seed=0, options={"requests": req})
    opt, _ = solve_offline(env)
    assert _return(env, "belady_shared", req) == pytest.approx(opt) == 5.0
    assert _return(env, "belady_bytes", req) == pytest.approx(4.0)


def test_registered_with_the_old_rule_kept_and_parameters_checked(tmp_path) -> None:
    specs = {s.name: s for s in list_policies(ENV_ID)[ENV_ID]}
    assert specs["belady_shared"].kind == specs["belady_bytes"].kind == "oracle"
    env, _ = _env(tmp_path, np.random.default_rng(0), unit=False)
    for bad, match in (
        ({"window": 0}, "window=0"),
        ({"refresh": 1.5}, "refresh=1.5"),
        ({"gamma": 0.0}, "gamma=0.0"),
        ({"gamma": 1.5}, "gamma=1.5"),
    ):
        with pytest.raises(ValueError, match=match):
            make_policy(ENV_ID, "belady_shared", env, **bad)


def test_baselines_script_tables_every_policy_but_the_excluded(tmp_path) -> None:
    from mei_envs.experiments import edge_llm_cache_baselines as script

    out = tmp_path / "b.md"
    res = script.main(
        ["--episodes", "1", "--presets", "small_cache", "--tiny", "2", "--ip", "0"]
        + ["--out", str(out)]
    )
    table = res["scenarios"]["small_cache"]
    names = {s.name for s in list_policies(ENV_ID)[ENV_ID]} - {"offline_opt", "rollout"}
    assert set(table) == names
    assert set(res["tiny"]) == {*script.ONLINE, *script.OFFLINE}
    assert all(0 < v["mean_ratio"] <= 1 + 1e-9 for v in res["tiny"].values())
    assert json.loads(out.with_suffix(".json").read_text())["scenarios"]["small_cache"]
    assert "| belady_bytes |" in out.read_text() and "--exclude offline_opt rollout" in (
        out.read_text()
    )
    # The online-room table from those per-episode values equals a fresh run of it.
    from mei_envs.experiments import edge_llm_cache_online_room as room

    common = ["--episodes", "1", "--seed", "100000", "--presets", "small_cache"]
    room.main(
        [*common, "--from-baselines", str(out.with_suffix(".json"))]
        + ["--out", str(tmp_path / "r1")]
    )
    room.main([*common, "--out", str(tmp_path / "r2")])
    r1, r2 = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in (1, 2))
    assert r1 == r2 and set(r1["small_cache"]) >= {"belady_shared", "belady_bytes", "online bound"}
