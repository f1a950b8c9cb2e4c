"""The EdgeLLMCache agent-vs-baselines table: baselines-only runs and merging run folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mei_envs.baselines.evaluation import run_episodes
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig
from mei_envs.experiments import edge_llm_cache_gap as gap
from mei_envs.experiments.compare import CompareConfigError

ENV = "mei_envs/EdgeLLMCache-v0"
ENV_CFG = {"preset": "small_cache", "requests_per_episode": 60}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yml"
    path.write_text(
        f"env_id: {ENV}\n"
        f"env_config: {{preset: small_cache, requests_per_episode: 60}}\n"
        "algos: [maskable_ppo]\nseeds: [0]\ntotal_timesteps: 1000\n"
        "eval_episodes: 3\neval_seed: 500\n"
        "baselines: [lru, trim_greedy, knapsack_greedy, belady_shared]\n"
        f"out_dir: {tmp_path / 'out'}\n"
    )
    return path


def _write_agent_run(d: Path, algo: str, seed: int, ep_values: dict[int, tuple[float, float]]):
    d.mkdir(parents=True)
    with open(d / "episodes.csv", "w", newline="") as fh:
        w = csv.DictWriter(
            fh, ["policy", "kind", "algo", "train_seed", "episode_seed", "hit_ratio",
                 "byte_hit_ratio"],
        )  # fmt: skip
        w.writeheader()
        for ep, (h, b) in ep_values.items():
            w.writerow(
                {"policy": algo, "kind": "agent", "algo": algo, "train_seed": seed,
                 "episode_seed": ep, "hit_ratio": h, "byte_hit_ratio": b}
            )  # fmt: skip


def test_evaluate_writes_the_compare_episode_rows(tmp_path):
    run = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    assert (run / "COMPLETE").is_file() and (run / "evaluation.yml").is_file()
    data, kinds = gap.load_with_kinds([str(run)])
    assert sorted(data) == ["belady_shared", "knapsack_greedy", "lru", "trim_greedy"]
    assert kinds["lru"] == "heuristic" and kinds["belady_shared"] == "oracle"
    for name in ("lru", "belady_shared"):
        ref = run_episodes(ENV, name, episodes=3, seed=500, env_config=ENV_CFG)
        assert sorted(data[name]) == [500, 501, 502]
        got = [data[name][s]["hit_ratio"] for s in (500, 501, 502)]
        np.testing.assert_allclose(got, ref.metrics["hit_ratio"], rtol=0, atol=1e-12)


def test_evaluate_overrides_and_policies(tmp_path):
    run = gap.evaluate_baselines(
        _config(tmp_path), {"eval_episodes": 2, "run_name": "bl"}, ["lru", "belady_shared"],
        quiet=True,
    )  # fmt: skip
    assert "__bl__" in run.name
    data = gap.load([str(run)])
    assert sorted(data) == ["belady_shared", "lru"] and sorted(data["lru"]) == [500, 501]


def test_evaluate_unknown_policy_fails_before_any_folder(tmp_path):
    with pytest.raises(CompareConfigError, match="nope"):
        gap.evaluate_baselines(_config(tmp_path), policies=["lru", "nope"], quiet=True)
    assert not (tmp_path / "out").exists()


def _baseline_hits(tmp_path):
    """A baselines run, its per-episode rows, its seeds, and lru's and belady_shared's hit
    ratios per seed."""
    base = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    data = gap.load([str(base)])
    eps = sorted(data["lru"])
    lru = {s: data["lru"][s]["hit_ratio"] for s in eps}
    bs = {s: data["belady_shared"][s]["hit_ratio"] for s in eps}
    return base, data, eps, lru, bs


def test_table_merges_agents_and_computes_gap_and_paired_difference(tmp_path):
    base, data, eps, lru, bs = _baseline_hits(tmp_path)
    # seed 0 plays exactly like belady_shared, seed 1 exactly like lru
    _write_agent_run(tmp_path / "a0", "maskable_ppo", 0, {s: (bs[s], 0.5) for s in eps})
    _write_agent_run(tmp_path / "a1", "maskable_ppo", 1, {s: (lru[s], 0.1) for s in eps})
    merged, kinds = gap.load_with_kinds([f"m={tmp_path / 'a0'}", f"m={tmp_path / 'a1'}", str(base)])
    rows, text = gap.table(merged, np.random.default_rng(0), kinds)
    by = {r["policy"]: r for r in rows}
    assert by["m/seed0"]["gap_closed"] == pytest.approx(1.0)
    assert by["m/seed1"]["gap_closed"] == pytest.approx(0.0)
    assert by["m/all"]["gap_closed"] == pytest.approx(0.5)
    assert by["m/all"]["byte"][0] == pytest.approx(0.3)
    best = max(("lru", "trim_greedy", "knapsack_greedy"), key=lambda k: by[k]["hit"][0])
    want = np.mean([bs[s] - data[best][s]["hit_ratio"] for s in eps])
    assert by["m/seed0"]["vs_best"][0] == pytest.approx(want)
    assert by[best]["vs_best"][0] == 0.0
    assert f"hit ratio - {best}" in text
    # heuristics, then oracles, then agents (per seed, then pooled)
    assert [r["policy"] for r in rows][-3:] == ["m/seed0", "m/seed1", "m/all"]
    assert by["belady_shared"]["kind"] == "oracle"


def test_versus_adds_paired_columns_against_agents_and_baselines(tmp_path):
    """--versus: a column of paired differences per reference (a pooled agent, a seed, a
    baseline); the reference's own entry is 0 and an unknown row is refused by name."""
    base, data, eps, lru, bs = _baseline_hits(tmp_path)
    _write_agent_run(tmp_path / "a0", "maskable_ppo", 0, {s: (bs[s], 0.5) for s in eps})
    _write_agent_run(tmp_path / "b0", "maskable_ppo", 0, {s: (lru[s], 0.1) for s in eps})
    merged, kinds = gap.load_with_kinds(
        [f"new={tmp_path / 'a0'}", f"old={tmp_path / 'b0'}", str(base)]
    )
    rows, text = gap.table(merged, np.random.default_rng(0), kinds, versus=["old/all", "lru"])
    by = {r["policy"]: r for r in rows}
    want = np.mean([bs[s] - lru[s] for s in eps])
    assert by["new/all"]["vs_old/all"][0] == pytest.approx(want)
    assert by["new/seed0"]["vs_lru"][0] == pytest.approx(want)
    assert by["old/all"]["vs_old/all"][0] == 0.0 and by["lru"]["vs_lru"][0] == 0.0
    header = next(line for line in text.splitlines() if line.startswith("| policy"))
    assert header.endswith(
        "| hit ratio - old/all (paired, points) | hit ratio - lru (paired, points) |"
    )
    assert all(line.count("|") == header.count("|") for line in text.splitlines()[2:])
    with pytest.raises(ValueError, match="versus='nope/all': not a row"):
        gap.table(merged, np.random.default_rng(0), kinds, versus=["nope/all"])


def test_table_without_belady_shared_still_pairs_against_the_best_heuristic(tmp_path):
    # e.g. 100 episodes where belady_shared ran on 40: the gap-closed column is "-", the
    # paired difference is still computed; lru stays required
    base = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    data = gap.load([str(base)])
    eps = sorted(data["lru"])
    lru = {s: data["lru"][s]["hit_ratio"] for s in eps}
    _write_agent_run(tmp_path / "a0", "maskable_ppo", 0, {s: (lru[s], 0.1) for s in eps})
    merged, kinds = gap.load_with_kinds([f"m={tmp_path / 'a0'}", str(base)])
    del merged["belady_shared"]
    rows, text = gap.table(merged, np.random.default_rng(0), kinds)
    by = {r["policy"]: r for r in rows}
    assert by["m/seed0"]["gap_closed"] is None
    best = max(("lru", "trim_greedy", "knapsack_greedy"), key=lambda k: by[k]["hit"][0])
    want = np.mean([lru[s] - data[best][s]["hit_ratio"] for s in eps])
    assert by["m/seed0"]["vs_best"][0] == pytest.approx(want)
    assert "| m/seed0 | agent |" in text and "| - |" in text
    del merged["lru"]
    with pytest.raises(ValueError, match="needs lru"):
        gap.table(merged, np.random.default_rng(0), kinds)


def test_conflicting_baselines_need_baselines_from(tmp_path):
    base = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    with open(base / "episodes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["policy"] == "belady_shared":
            r["hit_ratio"] = str(float(r["hit_ratio"]) + 0.01)
    with open(other / "episodes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match="belady_shared: episode 500 differs"):
        gap.load([str(other), str(base)])
    # the same values in two folders merge; --baselines-from picks one folder's baselines
    assert gap.load([str(base), str(base)])["lru"] == gap.load([str(base)])["lru"]
    picked = gap.load([str(other)], baselines_from=[str(base)])
    assert picked["belady_shared"] == gap.load([str(base)])["belady_shared"]


def test_cli_table_mode_writes_the_table(tmp_path):
    base = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    out = tmp_path / "t.md"
    text = gap.main([str(base), "--out", str(out)])
    assert out.read_text() == text + "\n" and "| lru | heuristic |" in text


def test_episodes_restricts_to_the_first_seeds(tmp_path):
    full = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    short = gap.evaluate_baselines(
        _config(tmp_path), {"eval_episodes": 2}, ["belady_shared", "belady"], quiet=True
    )
    data, kinds = gap.load_with_kinds([str(full), str(short)])
    with pytest.raises(ValueError, match="held-out episodes differ"):
        gap.table(data, np.random.default_rng(0), kinds)
    rows, text = gap.table(data, np.random.default_rng(0), kinds, episodes=2)
    assert "Held-out episodes: 2 (seeds 500..501)" in text
    lru = {r["policy"]: r for r in rows}["lru"]["hit"][0]
    assert lru == pytest.approx(np.mean([data["lru"][s]["hit_ratio"] for s in (500, 501)]))
    with pytest.raises(ValueError, match="episodes=4"):
        gap.table(data, np.random.default_rng(0), kinds, episodes=4)


def _copy_run(src: Path, dst: Path, config_yml: str) -> Path:
    dst.mkdir()
    (dst / "episodes.csv").write_bytes((src / "episodes.csv").read_bytes())
    (dst / "config.yml").write_text(config_yml)
    return dst


def test_folders_of_different_scenarios_do_not_merge(tmp_path):
    base = gap.evaluate_baselines(_config(tmp_path), quiet=True)
    resolved = EdgeLLMCacheConfig.from_dict(ENV_CFG).to_dict()
    assert gap.run_scenario(base) == (ENV, resolved) and resolved["capacity_fraction"] == 0.08
    # the same scenario spelt out field by field (the preset's value given explicitly) merges
    spelt = _copy_run(
        base, tmp_path / "spelt",
        f"env_id: {ENV}\nenv_config: {{capacity_fraction: 0.08, requests_per_episode: 60, "
        "preset: small_cache}\n",
    )  # fmt: skip
    assert gap.load([str(spelt), str(base)])["lru"] == gap.load([str(base)])["lru"]
    # same episodes.csv, other scenario: refused, naming the field, also via --baselines-from
    other = _copy_run(
        base, tmp_path / "other",
        f"env_id: {ENV}\nenv_config: {{preset: small_cache, requests_per_episode: 61}}\n",
    )  # fmt: skip
    with pytest.raises(ValueError, match="requests_per_episode=60 vs 61"):
        gap.load([str(base), str(other)])
    with pytest.raises(ValueError, match="requests_per_episode=61 vs 60"):
        gap.load([str(other)], baselines_from=[str(base)])
    preset = _copy_run(base, tmp_path / "preset", f"env_id: {ENV}\nenv_config: {{}}\n")
    with pytest.raises(ValueError, match="capacity_fraction=0.08 vs"):
        gap.load([str(base), str(preset)])
    env = _copy_run(base, tmp_path / "env", "env_id: mei_envs/EarlyExitUpload-v1\n")
    with pytest.raises(ValueError, match="env 'mei_envs/EarlyExitUpload-v1' differs"):
        gap.load([str(base), str(env)])
    # an env id no longer registered (a deprecated version) is compared as written
    old = _copy_run(
        base, tmp_path / "old", "env_id: mei_envs/EarlyExitUpload-v0\nenv_config: {x: 1}\n"
    )
    assert gap.run_scenario(old) == ("mei_envs/EarlyExitUpload-v0", {"x": 1})
    # a bare episodes.csv (no config.yml / evaluation.yml) is not checked
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "episodes.csv").write_bytes((base / "episodes.csv").read_bytes())
    assert gap.run_scenario(bare) is None
    assert gap.load([str(other), str(bare)])["lru"] == gap.load([str(base)])["lru"]


def test_online_room_agents_must_be_on_the_json_preset(tmp_path, capsys):
    from mei_envs.experiments import edge_llm_cache_online_room as room

    eps = {500: (0.4, 0.2), 501: (0.5, 0.3)}
    ref = {"trim_greedy": [30.0, 40.0], "knapsack_greedy": [35.0, 45.0],
           "online bound": [50.0, 60.0], "best_online": "knapsack_greedy"}  # fmt: skip
    out = tmp_path / "room"
    out.with_suffix(".json").write_text(json.dumps({"_seed": 500, "small_cache": ref}))
    _write_agent_run(tmp_path / "a", "maskable_ppo", 0, eps)
    (tmp_path / "a" / "config.yml").write_text(f"env_id: {ENV}\nenv_config: {{}}\n")
    with pytest.raises(ValueError, match="not on preset 'small_cache'"):
        room.main(["--preset-agents", "small_cache", f"m={tmp_path / 'a'}", "--out", str(out)])
    (tmp_path / "a" / "config.yml").write_text(
        f"env_id: {ENV}\nenv_config: {{preset: small_cache}}\n"
    )
    room.main(["--preset-agents", "small_cache", f"m={tmp_path / 'a'}", "--out", str(out)])
    # agent 40 / 50 %: 10 points above trim_greedy, 5 above knapsack_greedy, 10 below the bound
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| m/seed0 |")]
    assert row and row[0].startswith("| m/seed0 | 45.0 | +10.0 [+10.0, +10.0] | +5.0 [+5.0, +5.0]")
    assert "| -10.0 [-10.0, -10.0] | 33% | 50% |" in row[0]


def test_baselines_json_rows_equal_an_evaluation_and_the_clock_column(tmp_path):
    import json

    cfg = tmp_path / "cfg.yml"
    cfg.write_text(
        f"env_id: {ENV}\n"
        "env_config: {phase_count: 3, phase_length: 20, requests_per_episode: 60}\n"
        "algos: [maskable_ppo]\nseeds: [0]\ntotal_timesteps: 1000\n"
        "eval_episodes: 3\neval_seed: 500\n"
        "baselines: [lru, knapsack_greedy, phase_knapsack, belady_shared]\n"
        f"out_dir: {tmp_path / 'out'}\n"
    )
    base = gap.evaluate_baselines(cfg, quiet=True)
    want, want_kinds = gap.load_with_kinds([str(base)])
    # The baselines script's JSON layout, from the same policies on the same seeds.
    env_cfg = {"phase_count": 3, "phase_length": 20, "requests_per_episode": 60}
    table = {}
    for name in ("lru", "knapsack_greedy", "phase_knapsack", "belady_shared"):
        res = run_episodes(ENV, name, episodes=3, seed=500, env_config=env_cfg)
        table[name] = {"per_episode": {m: res.metrics[m].tolist() for m in gap.METRICS}}
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"seed": 500, "episodes": 3, "scenarios": {"phased": table}}))
    got, kinds = gap.load_baselines_json(path, "phased")
    assert got == want and kinds == want_kinds
    with pytest.raises(ValueError, match="no scenario 'other'"):
        gap.load_baselines_json(path, "other")
    ep = sorted(want["lru"])
    _write_agent_run(tmp_path / "a0", "maskable_ppo", 0, {s: (0.5, 0.5) for s in ep})
    text = gap.main([f"m={tmp_path / 'a0'}", "--baselines-json", str(path), "phased"])
    assert "hit ratio - phase_knapsack (clock-aware" in text
    row = next(line for line in text.splitlines() if line.startswith("| m/seed0 |"))
    ph = np.mean([want["phase_knapsack"][s]["hit_ratio"] for s in ep])
    assert row.rstrip(" |").split("| ")[-1].startswith(f"{100 * (0.5 - ph):+.1f}")


def test_baselines_json_files_join_by_episode_seed(tmp_path):
    """Two baselines JSONs on seeds 500..501 and 502: one table over the three episodes, and a
    policy only one file has is left out; the same seed with other values in a second file
    stops the join, naming policy and seed."""
    import json

    def write(name, seed, hits, more=()):
        per = {m: list(hits) for m in gap.METRICS}
        rows = {p: {"per_episode": per} for p in ("lru", *more)}
        doc = {"seed": seed, "episodes": len(hits), "scenarios": {"s": rows}}
        (tmp_path / name).write_text(json.dumps(doc))
        return str(tmp_path / name)

    a, b = write("a.json", 500, [0.1, 0.2], ["belady"]), write("b.json", 502, [0.3])
    data, kinds = gap.join_baselines_json([[a, "s"], [b, "s"]])  # belady: only in a
    assert sorted(data["lru"]) == [500, 501, 502] and kinds == {"lru": "heuristic"}
    assert [data["lru"][s]["hit_ratio"] for s in (500, 501, 502)] == [0.1, 0.2, 0.3]
    _write_agent_run(tmp_path / "a0", "maskable_ppo", 0, {s: (0.5, 0.5) for s in (500, 501, 502)})
    text = gap.main(
        [f"m={tmp_path / 'a0'}", "--baselines-json", a, "s", "--baselines-json", b, "s"]
    )
    lru = next(line for line in text.splitlines() if line.startswith("| lru |"))
    assert lru.startswith("| lru | heuristic | 20.0 ")  # the mean over all three episodes
    clash = write("c.json", 501, [0.9])
    with pytest.raises(ValueError, match="lru on episode seed 501"):
        gap.join_baselines_json([[a, "s"], [clash, "s"]])


def test_baselines_script_only_runs_the_named_policies_in_order(tmp_path):
    from mei_envs.experiments import edge_llm_cache_baselines as script

    out = tmp_path / "b.md"
    res = script.main(
        ["--episodes", "1", "--presets", "small_cache", "--no-sharing-off", "--tiny", "0"]
        + ["--ip", "0", "--only", "trim_greedy", "lru", "--out", str(out)]
    )
    assert list(res["scenarios"]["small_cache"]) == ["trim_greedy", "lru"]
    assert "--only trim_greedy lru" in out.read_text()
    with pytest.raises(ValueError, match="--only \\['nope'\\]"):
        script.main(["--episodes", "1", "--presets", "small_cache", "--only", "nope"])
