"""EdgeLLMCache-v0: catalog sizes, cache state, requests, env semantics, baselines, oracles."""

from __future__ import annotations

import copy
import json
import pickle

import gymnasium as gym
import numpy as np
import pytest

from mei_envs import cache
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.baselines.registry import make_policy
from mei_envs.config import ConfigError
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig, EdgeLLMCacheEnv
from mei_envs.llm import costs

ENV_ID = "mei_envs/EdgeLLMCache-v0"
POLICIES = [
    "random",
    "fifo",
    "lru",
    "lfu",
    "gdsf",
    "trim_greedy",
    "belady",
    "belady_bytes",
    "belady_shared",
]


def write_catalog(path, sizes: dict[str, float], models: dict[str, list[str]]) -> str:
    doc = {"blocks": sizes, "models": [{"name": n, "blocks": b} for n, b in models.items()]}
    path.write_text(json.dumps(doc))
    return str(path)


def play(env: EdgeLLMCacheEnv, policy, **reset_kw) -> tuple[float, dict]:
    obs, info = env.reset(**reset_kw)
    policy.reset(obs, info)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, info = env.step(policy.act(obs, info))
        total += r
        done = term or trunc
    return total, info


# ---- catalog from the cost tables ------------------------------------------------------------
def test_generated_catalog_sizes_come_from_the_cost_tables() -> None:
    cat = cache.build_catalog(
        ["llama-3.2-1b"],
        lora_ranks=[8],
        lora_targets=["q,v", "all_linear"],
        partial_top_layers=[4],
        quant_precisions=["q4_0"],
    )
    i = cat.index
    full = costs.weight_bytes("llama-3.2-1b", "fp16", include_embedding=True, include_lm_head=True)
    assert cat.model_bytes[i["llama-3.2-1b"]] == pytest.approx(full, rel=1e-12)
    # Llama-3.2-1B has 1,235,814,400 parameters (REFERENCE.md 3): 2 bytes each in fp16.
    assert full == 2 * 1_235_814_400
    for tag, targets in (("qv", ("q", "v")), ("all", "all_linear")):
        adapter = costs.lora_params("llama-3.2-1b", 8, targets) * 2.0
        assert cat.model_bytes[i[f"llama-3.2-1b+lora-r8-{tag}"]] == pytest.approx(full + adapter)
    assert cat.model_bytes[i["llama-3.2-1b@q4_0"]] == pytest.approx(
        costs.weight_bytes("llama-3.2-1b", "q4_0", include_embedding=True, include_lm_head=True)
    )
    # The partial fine-tune owns its top 4 layers; everything else is the base's.
    layer = costs.weight_bytes("llama-3.2-1b", "fp16", layers=(0, 1))
    assert cat.model_bytes[i["llama-3.2-1b+ft-top4"]] == pytest.approx(full)
    mem = cat.membership
    shared = cat.member_bytes[i["llama-3.2-1b+ft-top4"]] @ mem[i["llama-3.2-1b"]]
    assert shared == pytest.approx(full - 4 * layer)
    # The quantised variant shares nothing; unique bytes count each shared block once.
    assert not (mem[i["llama-3.2-1b@q4_0"]] & mem[i["llama-3.2-1b"]]).any()
    adapters = sum(
        costs.lora_params("llama-3.2-1b", 8, t) * 2.0 for t in (("q", "v"), "all_linear")
    )
    expect = full + adapters + 4 * layer + cat.model_bytes[i["llama-3.2-1b@q4_0"]]
    assert cat.unique_bytes == pytest.approx(expect)
    # Blocks used by the same models are merged: base layers 0..11 are one block.
    assert cat.n_blocks < cat.raw_blocks


def test_without_sharing_stores_every_model_whole() -> None:
    cat = EdgeLLMCacheConfig().build_catalog()
    flat = cat.without_sharing()
    np.testing.assert_allclose(flat.model_bytes, cat.model_bytes)
    assert flat.unique_bytes == pytest.approx(cat.model_bytes.sum())
    assert not flat.sharing and cat.sharing
    assert cat.unique_bytes < 0.5 * flat.unique_bytes  # the default catalog shares a lot


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"blocks": {"a": 1.0}, "models": [{"name": "m", "blocks": ["b"]}]}, "unknown block 'b'"),
        ({"blocks": {"a": -1.0}, "models": [{"name": "m", "blocks": ["a"]}]}, "block 'a'"),
        ({"blocks": {"a": 1.0, "z": 2.0}, "models": [{"name": "m", "blocks": ["a"]}]}, "'z'"),
        (
            {"blocks": {"a": 1.0}, "models": [{"name": "m", "blocks": ["a"]}] * 2},
            "duplicate model name 'm'",
        ),
        ({"blocks": {"a": 1.0}, "models": [{"name": "m", "blocks": []}]}, "model 'm'"),
        (
            {"blocks": {"a": 1.0}, "models": [{"name": "m", "blocks": ["a"], "x": 1}]},
            "models\\[0\\]",
        ),
        ({"blocks": {"a": 1.0}, "models": [{"name": 3, "blocks": ["a"]}]}, "models\\[0\\].name"),
        ({"blocks": {}, "models": []}, "blocks"),
    ],
)
def test_bad_catalog_entries_are_named(doc, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        cache.catalog_from_dict(doc)


def test_bad_catalog_file_is_a_config_error(tmp_path) -> None:
    bad = tmp_path / "cat.json"
    bad.write_text(json.dumps({"blocks": {"a": 1.0}, "models": [{"name": "m", "blocks": ["q"]}]}))
    with pytest.raises(ConfigError, match="catalog_file.*unknown block 'q'"):
        EdgeLLMCacheEnv(catalog_file=str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="catalog_file"):
        EdgeLLMCacheEnv(catalog_file=str(bad))


# ---- cache state ------------------------------------------------------------------------------
def _family_catalog() -> cache.Catalog:
    # base = {e, l, h}; child = base + adapter; ft = {e, h, own}; q = own quantised block.
    sizes = {"e": 2.0, "l": 4.0, "h": 1.0, "ad": 0.5, "own": 4.0, "q": 3.0}
    models = {
        "base": ["e", "l", "h"],
        "child": ["e", "l", "h", "ad"],
        "ft": ["e", "h", "own"],
        "q": ["q"],
    }
    return cache.catalog_from_dict(
        {"blocks": sizes, "models": [{"name": n, "blocks": b} for n, b in models.items()]}
    )


def test_cache_state_shares_blocks_and_frees_only_unique_ones() -> None:
    cat = _family_catalog()
    base, child, ft, q = (cat.index[n] for n in ("base", "child", "ft", "q"))
    st = cache.CacheState(cat, capacity_bytes=12.0)
    assert st.missing_bytes(child) == 7.5
    new = st.admit(child)
    # Caching the child makes its base available too (all its blocks are held).
    assert set(np.flatnonzero(new)) == {base, child}
    assert st.used_bytes == 7.5 and st.missing_bytes(ft) == 4.0
    st.admit(ft)
    assert st.used_bytes == 11.5
    st.check()
    freed = st.freed_bytes()
    # child frees its adapter; base frees nothing (child uses every block); ft frees "own".
    assert freed[child] == 0.5 and freed[base] == 0.0 and freed[ft] == 4.0 and freed[q] == 0
    # Pinned for a request of base: evicting child still frees the adapter only.
    assert st.freed_bytes(pinned=base)[child] == 0.5
    assert st.evict(child) == 0.5
    assert st.cached[base] and not st.cached[child]
    # Now base's "l" is unique to it; pinned for a request of child, l is kept.
    assert st.freed_bytes(pinned=child)[base] == 0.0
    assert st.freed_bytes()[base] == 4.0
    st.evict(base, pinned=child)
    assert st.used_bytes == 11.0  # nothing dropped: every block of base is pinned
    st.check()


def test_orphans_dropped_after_a_bypass() -> None:
    cat = _family_catalog()
    base, ft = cat.index["base"], cat.index["ft"]
    st = cache.CacheState(cat, capacity_bytes=8.0)
    st.admit(base)  # 7 bytes
    # Request ft (missing "own": 4 bytes): evicting base (pinned ft: e, h) frees "l" only.
    assert st.freed_bytes(pinned=ft)[base] == 4.0
    st.evict(base, pinned=ft)
    assert st.used_bytes == 3.0 and not st.cached.any()
    assert st.drop_orphans() == 3.0 and st.used_bytes == 0.0
    st.check()


# ---- request processes ----------------------------------------------------------------------
def test_zipf_requests_match_popularity_and_drift() -> None:
    gen = cache.ZipfDriftRequests(10, 1.0, 0.0)
    req = gen.sample(np.random.default_rng(1), 200_000)
    counts = np.sort(np.bincount(req, minlength=10))[::-1] / req.size
    np.testing.assert_allclose(counts, cache.zipf_probabilities(10, 1.0), atol=0.005)
    # Same seed, same sequence; drift moves popularity between halves of the sequence.
    a = cache.ZipfDriftRequests(10, 1.0, 0.01).sample(np.random.default_rng(2), 20_000)
    b = cache.ZipfDriftRequests(10, 1.0, 0.01).sample(np.random.default_rng(2), 20_000)
    np.testing.assert_array_equal(a, b)
    top_first = np.argmax(np.bincount(a[:500], minlength=10))
    shares = [np.mean(a[k : k + 500] == top_first) for k in range(0, 20_000, 500)]
    assert min(shares) < 0.5 * max(shares)
    static = np.bincount(req[:100_000], minlength=10) / 1e5
    static2 = np.bincount(req[100_000:], minlength=10) / 1e5
    np.testing.assert_allclose(static, static2, atol=0.01)


def test_next_use() -> None:
    nxt = cache.next_use(np.array([0, 1, 0, 2, 1, 0]), 3)
    np.testing.assert_array_equal(nxt, [2, 4, 5, 6, 6, 6])


def test_trace_errors_name_the_line(tmp_path) -> None:
    names = ["a", "b", "c"]
    p = tmp_path / "t.csv"
    p.write_text("model\na\n2\n\n# comment\nb\n")
    np.testing.assert_array_equal(cache.load_trace(p, names), [0, 2, 1])
    p.write_text("model\na\nzzz\n")
    with pytest.raises(ValueError, match=r"t.csv:3: unknown model 'zzz'"):
        cache.load_trace(p, names)
    p.write_text("a\n7\n")
    with pytest.raises(ValueError, match=r"t.csv:2: model id 7 out of range"):
        cache.load_trace(p, names)
    p.write_text("a\nb,c\n")
    with pytest.raises(ValueError, match=r"t.csv:2: expected one column"):
        cache.load_trace(p, names)


def test_trace_replay_and_reset_options(tmp_path) -> None:
    cat_path = write_catalog(
        tmp_path / "c.json", {"x": 1.0, "y": 1.0, "z": 1.0}, {"a": ["x"], "b": ["y"], "c": ["z"]}
    )
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(["a", "b", "c", "a", "b", "c", "c", "a"]))
    env = EdgeLLMCacheEnv(
        catalog_file=cat_path, trace_file=str(trace), requests_per_episode=8, capacity_bytes=2.0
    )
    env.reset(seed=0)
    np.testing.assert_array_equal(env.requests, [0, 1, 2, 0, 1, 2, 2, 0])
    env.reset(seed=0, options={"requests": ["c", 0, "c"]})
    np.testing.assert_array_equal(env.requests, [2, 0, 2])
    with pytest.raises(ValueError, match=r"requests\[1\]"):
        env.reset(seed=0, options={"requests": ["a", "nope"]})
    with pytest.raises(ValueError, match="bogus"):
        env.reset(seed=0, options={"bogus": 1})
    with pytest.raises(ConfigError, match="requests_per_episode=9"):
        EdgeLLMCacheEnv(catalog_file=cat_path, trace_file=str(trace), requests_per_episode=9)
    trace.write_text("a\nb\nq\n")
    with pytest.raises(ConfigError, match=r"trace_file.*t.csv:3"):
        EdgeLLMCacheEnv(catalog_file=cat_path, trace_file=str(trace), requests_per_episode=2)


# ---- env semantics --------------------------------------------------------------------------
def _unit_env(tmp_path, n_models: int, capacity: float, **kw) -> EdgeLLMCacheEnv:
    sizes = {f"b{i}": 1.0 for i in range(n_models)}
    path = write_catalog(
        tmp_path / "unit.json", sizes, {f"m{i}": [f"b{i}"] for i in range(n_models)}
    )
    return EdgeLLMCacheEnv(catalog_file=path, capacity_bytes=capacity, **kw)


def test_decisions_only_when_a_choice_exists(tmp_path) -> None:
    env = _unit_env(tmp_path, 3, 2.0)
    # 0, 1 fill the cache; 0 hits; 2 needs space: the first decision.
    obs, info = env.reset(seed=0, options={"requests": [0, 1, 0, 2, 1]})
    assert info["t"] == 3 and info["model"] == 2
    np.testing.assert_array_equal(info["action_mask"], [True, True, False, True])
    # Evict 1 (LRU-style): 2 is admitted, then 1 misses and asks again.
    obs, r, term, _, info = env.step(1)
    assert r == 1.0 and not term  # the hit of 0 (served in reset) is delivered now
    assert info["t"] == 4 and info["model"] == 1 and info["evictions"] == 1
    obs, r, term, _, info = env.step(3)  # bypass 1
    assert term and r == 0.0 and info["bypasses"] == 1
    assert info["hit_ratio"] == pytest.approx(1 / 5)


def test_env_keeps_asking_until_the_request_fits(tmp_path) -> None:
    sizes = {"a": 1.0, "b": 1.0, "c": 2.0}
    path = write_catalog(tmp_path / "c.json", sizes, {"a": ["a"], "b": ["b"], "c": ["c"]})
    env = EdgeLLMCacheEnv(catalog_file=path, capacity_bytes=2.0)
    env.reset(seed=0, options={"requests": ["a", "b", "c", "a"]})
    _, _, _, _, info = env.step(0)  # evict a: c (2 bytes) still does not fit
    assert info["t"] == 2 and info["model"] == 2
    np.testing.assert_array_equal(info["action_mask"], [False, True, False, True])
    _, _, term, _, info = env.step(1)  # evict b: c fits, then a needs space
    assert info["t"] == 3 and not term and env.state.cached.tolist() == [False, False, True]


def test_models_larger_than_the_cache_are_bypassed_without_asking(tmp_path) -> None:
    path = write_catalog(tmp_path / "big.json", {"a": 2.0, "b": 3.0}, {"a": ["a"], "b": ["b"]})
    env = EdgeLLMCacheEnv(catalog_file=path, capacity_bytes=1.0)
    obs, info = env.reset(seed=0, options={"requests": [0, 1, 0]})
    assert info["model"] == -1  # no decision: one ignored step delivers the episode
    _, r, term, _, info = env.step(0)
    assert term and r == 0.0 and info["bypasses"] == 3 and info["requests"] == 3
    with pytest.raises(RuntimeError, match="ended"):
        env.step(0)


def test_invalid_actions(tmp_path) -> None:
    env = _unit_env(tmp_path, 4, 2.0)  # the default: invalid_action="raise"
    assert env.config.invalid_action == "raise"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0, options={"requests": [0, 1, 2, 3, 0]})
    before = copy.deepcopy(env.__dict__)
    for bad, fragment in ((3, "not cached"), (2, "not cached"), (5, r"\[0, 4\]"), (-1, "action")):
        with pytest.raises(ValueError, match=fragment):
            env.step(bad)
    for bad in (0.5, "1", [0, 1], None):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    after = env.__dict__
    np.testing.assert_array_equal(after["state"].held, before["state"].held)
    assert (after["_t"], after["_pending"], after["_acc"]) == (
        before["_t"],
        before["_pending"],
        before["_acc"],
    )
    # invalid_action="bypass" serves an illegal eviction as a bypass and counts it.
    env = _unit_env(tmp_path, 4, 2.0, invalid_action="bypass")
    env.reset(seed=0, options={"requests": [0, 1, 2, 3, 0]})
    _, _, _, _, info = env.step(3)
    assert info["invalid_actions"] == 1 and info["bypasses"] == 1 and info["model"] == 3


def test_masked_eviction_of_a_shared_base_raises(tmp_path) -> None:
    cat = _family_catalog()
    path = tmp_path / "fam.json"
    path.write_text(json.dumps(cat.to_dict()))
    env = EdgeLLMCacheEnv(catalog_file=str(path), capacity_bytes=10.0, invalid_action="raise")
    # child (7.5 B) cached -> base cached too; q (3 B) needs space: base frees nothing.
    _, info = env.reset(seed=0, options={"requests": ["child", "q"]})
    base = env.catalog.index["base"]
    assert info["model"] == env.catalog.index["q"] and not info["action_mask"][base]
    with pytest.raises(ValueError, match="frees no bytes"):
        env.step(base)


@pytest.mark.parametrize("reward", ["hits", "bytes", "latency"])
def test_rewards_equal_their_definitions(reward: str) -> None:
    env = EdgeLLMCacheEnv(reward=reward, requests_per_episode=400)
    pol = make_policy(ENV_ID, "trim_greedy", env)
    obs, info = env.reset(seed=4)
    pol.reset(obs, info)
    cfg, done, steps = env.config, False, 0
    while not done:
        obs, r, done, _, info = env.step(pol.act(obs, info))
        misses = info["requests"] - info["hits"]
        if reward == "hits":
            expect = info["hits"]
        elif reward == "bytes":
            expect = info["bytes_hit"] / env.bytes_ref
        else:
            fetch_s = cfg.cloud_rtt_s * misses + 8 * info["backhaul_bytes"] / cfg.backhaul_rate_bps
            expect = -fetch_s / env.latency_ref_s
        assert r == pytest.approx(expect, rel=1e-9, abs=1e-12)
        # Latency = fetch + delivery of every served model to the user.
        assert info["latency_s"] >= 8 * info["bytes_requested"] / cfg.user_rate_bps - 1e-9
        steps += 1
    assert steps > 10


def test_episode_accounting(tmp_path) -> None:
    env = EdgeLLMCacheEnv(requests_per_episode=500, reward="bytes")
    pol = make_policy(ENV_ID, "lru", env)
    obs, info = env.reset(seed=1)
    pol.reset(obs, info)
    tot = dict.fromkeys(["requests", "bytes_requested", "bytes_hit", "backhaul_bytes", "hits"], 0.0)
    ret, done = 0.0, False
    while not done:
        obs, r, term, _, info = env.step(pol.act(obs, info))
        ret += r
        for k in tot:
            tot[k] += info[k]
        done = term
    assert tot["requests"] == 500
    assert tot["backhaul_bytes"] == pytest.approx(tot["bytes_requested"] - tot["bytes_hit"])
    assert ret == pytest.approx(tot["bytes_hit"] / env.bytes_ref)
    assert info["byte_hit_ratio"] == pytest.approx(tot["bytes_hit"] / tot["bytes_requested"])
    assert info["hit_ratio"] == pytest.approx(tot["hits"] / 500)


# ---- Gymnasium / SB3 API -------------------------------------------------------------------
@pytest.mark.parametrize("preset", list(EdgeLLMCacheConfig.PRESETS))
def test_presets_build_and_pass_check_env(preset: str) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # check_env samples unmasked random actions: serve masked ones as bypasses.
    env = gym.make(ENV_ID, preset=preset, requests_per_episode=300, invalid_action="bypass")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    assert env.unwrapped.config.preset == preset


def _masked_rollout(env: EdgeLLMCacheEnv, seed: int) -> list:
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out = [obs]
    done = False
    while not done:
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["hits"], info["backhaul_bytes"]))
        done = term or trunc
    return out


def test_same_seed_same_trajectory_and_pickle_mid_episode() -> None:
    env = EdgeLLMCacheEnv(requests_per_episode=300)
    a, b = _masked_rollout(env, 5), _masked_rollout(EdgeLLMCacheEnv(requests_per_episode=300), 5)
    assert len(a) == len(b)
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    env.reset(seed=9)
    for _ in range(5):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(50):
        a1 = int(np.flatnonzero(env.action_masks())[-2 if env.action_masks().sum() > 1 else -1])
        o1, r1, t1, _, _ = env.step(a1)
        o2, r2, t2, _, _ = clone.step(a1)
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1) == (r2, t2)
        if t1:
            break


# ---- baselines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_every_baseline_acts_legally(policy: str) -> None:
    env = gym.make(ENV_ID, requests_per_episode=300, invalid_action="raise")
    pol = make_policy(ENV_ID, policy, env)
    obs, info = env.reset(seed=2)
    pol.reset(obs, info)
    done = False
    while not done:
        a = pol.act(obs, info)
        assert info["action_mask"][a]
        obs, _, term, trunc, info = env.step(a)
        done = term or trunc


def test_oracles_beat_lru_on_the_default_scenario() -> None:
    kw = dict(episodes=3, seed=50, env_config={"requests_per_episode": 1000})
    hit = {
        p: run_episodes(ENV_ID, p, **kw).metrics["hit_ratio"].mean()
        for p in ("lru", "belady", "belady_shared", "trim_greedy")
    }
    assert hit["belady_shared"] > hit["lru"] + 0.1
    assert hit["belady"] > hit["lru"]
    assert hit["trim_greedy"] > hit["lru"]


@pytest.mark.parametrize(
    "policy, requests, expect",
    [
        # Cache {0, 1} (capacity 2); request 2 at t=4 after 0, 1, 0, 1, ... decides.
        ("lru", [0, 1, 1, 0, 2, 1], 1),  # 1 last requested at t=2, 0 at t=3
        ("fifo", [0, 1, 1, 0, 2, 1], 0),  # 0 cached first
        ("lfu", [0, 1, 1, 0, 1, 2, 0], 0),  # 0 requested twice, 1 three times
        ("belady", [0, 1, 0, 1, 2, 0, 0, 1], 3),  # 2 never comes back: bypass
        ("belady", [0, 1, 0, 1, 2, 2, 0, 1], 1),  # ... and 2 comes back first: evict 1
        ("belady", [0, 1, 0, 1, 2, 0, 1, 2], 3),  # 2 comes back last: bypass
    ],
)
def test_heuristic_rules_on_a_unit_cache(tmp_path, policy, requests, expect) -> None:
    env = _unit_env(tmp_path, 3, 2.0, invalid_action="raise")
    pol = make_policy(ENV_ID, policy, env)
    obs, info = env.reset(seed=0, options={"requests": requests})
    pol.reset(obs, info)
    assert info["model"] == 2
    assert pol.act(obs, info) == expect
