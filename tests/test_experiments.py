"""Tests for experiments/: statistics, atomic IO, run manifests, plots, sweep and compare."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mei_envs.experiments import io as xio
from mei_envs.experiments.stats import bootstrap_ci, describe, grouped_bootstrap_ci, iqm, summarize


# ---- stats --------------------------------------------------------------------------------
def test_iqm_known_values():
    assert iqm(np.arange(1, 101)) == pytest.approx(50.5)  # mean of 26..75
    # Outliers in the outer quartiles do not move the IQM; they move the mean.
    x = np.array([1, 2, 3, 4, 5, 6, 7, 1000.0])
    assert iqm(x) == pytest.approx(4.5)
    assert np.mean(x) > 100
    np.testing.assert_allclose(iqm(np.arange(8.0).reshape(2, 4), axis=1), [1.5, 5.5])


def test_bootstrap_ci_contains_point_and_is_seeded():
    x = np.random.default_rng(3).normal(10.0, 2.0, size=200)
    lo, hi = bootstrap_ci(x, np.random.default_rng(0))
    assert lo < x.mean() < hi
    assert 0.3 < hi - lo < 1.0  # ~ 2 * 1.96 * 2 / sqrt(200) = 0.55
    assert (lo, hi) == bootstrap_ci(x, np.random.default_rng(0))
    ilo, ihi = bootstrap_ci(x, np.random.default_rng(0), statistic="iqm")
    assert ilo < iqm(x) < ihi
    # A constant sample or a single value collapses to the point.
    assert bootstrap_ci([4.0, 4.0, 4.0], np.random.default_rng(0)) == (4.0, 4.0)
    assert bootstrap_ci([7.0], np.random.default_rng(0)) == (7.0, 7.0)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(x, np.random.default_rng(0), statistic="median")


def test_bootstrap_ci_vectorised_over_axis():
    x = np.vstack([np.zeros(5), np.arange(5.0), np.arange(5.0) + 10]).T  # samples on axis 0
    lo, hi = bootstrap_ci(x, np.random.default_rng(1), axis=0)
    assert lo.shape == hi.shape == (3,)
    assert lo[0] == hi[0] == 0.0
    assert lo[1] < 2.0 < hi[1] and lo[2] < 12.0 < hi[2]
    np.testing.assert_allclose(hi[2] - lo[2], hi[1] - lo[1])  # shift-invariant


def test_grouped_bootstrap_includes_between_seed_spread():
    rng = np.random.default_rng(5)
    # Three seeds far apart, tiny within-seed noise: the interval must span the seeds,
    # which a plain bootstrap over pooled episodes would not.
    groups = [m + rng.normal(0, 0.01, 50) for m in (0.0, 5.0, 10.0)]
    lo, hi = grouped_bootstrap_ci(groups, np.random.default_rng(0))
    plo, phi = bootstrap_ci(np.concatenate(groups), np.random.default_rng(0))
    assert lo < 5.0 < hi
    assert hi - lo > 3 * (phi - plo)
    # Unequal group sizes take the looped path and still contain the pooled mean.
    ragged = [np.arange(10.0), np.arange(13.0) + 3]
    lo, hi = grouped_bootstrap_ci(ragged, np.random.default_rng(0), n_resamples=300)
    assert lo < np.concatenate(ragged).mean() < hi


def test_summarize_rows_per_policy_seed_and_metric():
    recs = [
        {"policy": "ppo", "kind": "agent", "train_seed": s, "return": float(s + i), "lat": 1.0}
        for s in (0, 1)
        for i in range(4)
    ] + [{"policy": "eager", "kind": "heuristic", "train_seed": "", "return": 2.0, "lat": 3.0}] * 4
    rows = summarize(recs, ["return", "lat"], np.random.default_rng(0), n_resamples=200)
    keyed = {(r["policy"], r["seed"], r["metric"]): r for r in rows}
    assert set(keyed) == {
        ("ppo", "all", "return"),
        ("ppo", 0, "return"),
        ("ppo", 1, "return"),
        ("ppo", "all", "lat"),
        ("ppo", 0, "lat"),
        ("ppo", 1, "lat"),
        ("eager", "", "return"),
        ("eager", "", "lat"),
    }
    assert keyed["ppo", "all", "return"]["mean"] == pytest.approx(2.0)  # (1.5 + 2.5) / 2
    assert keyed["ppo", "all", "return"]["n"] == 8
    assert keyed["ppo", "all", "return"]["n_groups"] == 2
    assert keyed["ppo", 1, "return"]["mean"] == pytest.approx(2.5)
    assert keyed["eager", "", "return"]["ci_low"] == keyed["eager", "", "return"]["ci_high"] == 2.0
    d = describe([np.arange(1, 101)], np.random.default_rng(0), n_resamples=500)
    assert d["iqm"] == pytest.approx(50.5)
    assert d["ci_low"] < 50.5 < d["ci_high"]
    assert d["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))


# ---- atomic IO and manifests ----------------------------------------------------------------
def test_atomic_write_leaves_no_partial_file(tmp_path: Path):
    target = tmp_path / "out.csv"
    xio.write_text_atomic(target, "old\n")

    def _boom(handle):
        handle.write("half a fi")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        xio.write_with_atomic(target, _boom)
    assert target.read_text() == "old\n"  # previous content intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temp file left

    fresh = tmp_path / "never.txt"
    with pytest.raises(RuntimeError):
        xio.write_with_atomic(fresh, _boom)
    assert not fresh.exists()

    class _BadRow(dict):
        def keys(self):  # csv.DictWriter fails half-way through the rows
            raise RuntimeError("bad row")

    with pytest.raises(RuntimeError):
        xio.write_csv_atomic(target, [{"a": 1}, _BadRow(a=2)], fieldnames=["a"])
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_csv_and_yaml_round_trip(tmp_path: Path):
    rows = [{"policy": "a", "return": 1.5}, {"policy": "b", "extra": 3}]
    xio.write_csv_atomic(tmp_path / "r.csv", rows)
    back = xio.read_csv(tmp_path / "r.csv")
    assert back == [
        {"policy": "a", "return": "1.5", "extra": ""},
        {"policy": "b", "return": "", "extra": "3"},
    ]
    import yaml

    xio.write_yaml_atomic(tmp_path / "c.yml", {"b": [1, 2], "a": None})
    assert yaml.safe_load((tmp_path / "c.yml").read_text()) == {"b": [1, 2], "a": None}


def test_manifest_and_complete_marker(tmp_path: Path):
    run = tmp_path / "run"
    xio.write_manifest(run, ["a.txt", "sub/b.txt"])
    with pytest.raises(xio.IncompleteRunError) as err:
        xio.check_run_complete(run)
    assert set(err.value.missing) == {"a.txt", "sub/b.txt", "COMPLETE"}
    xio.write_text_atomic(run / "a.txt", "x")
    with pytest.raises(xio.IncompleteRunError, match="sub/b.txt"):
        xio.mark_complete(run)
    assert not (run / "COMPLETE").exists()
    xio.write_text_atomic(run / "sub" / "b.txt", "y")
    xio.mark_complete(run)
    assert xio.check_run_complete(run) == run
    (run / "a.txt").unlink()  # deleted after completion
    with pytest.raises(xio.IncompleteRunError, match=r"a\.txt"):
        xio.check_run_complete(run)
    with pytest.raises(xio.IncompleteRunError, match="MANIFEST"):
        xio.check_run_complete(tmp_path)  # no manifest at all
    with pytest.raises(ValueError, match="relative"):
        xio.write_manifest(run, ["../escape.txt"])


# ---- plots ----------------------------------------------------------------------------------
def _png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib import image

    return image.imread(str(path)).shape


def _synthetic_run(root: Path, complete: bool = True) -> Path:
    """A compare run folder as run_compare writes it, with made-up numbers."""
    from mei_envs.experiments.compare import CompareConfig, _expected_outputs, summary_markdown

    cfg = CompareConfig(seeds=[0, 1], eval_episodes=5)
    run = root / "run"
    xio.write_manifest(run, _expected_outputs(cfg, aggregates=False))
    xio.write_yaml_atomic(run / "config.yml", cfg.to_dict())
    rng = np.random.default_rng(0)
    for seed in cfg.seeds:
        d = run / "train" / f"ppo__{seed}"
        d.mkdir(parents=True)
        t = np.arange(1, 11) * 1000
        res = (t / 1000.0)[:, None] + rng.normal(0, 0.5, (10, 4)) + seed
        np.savez(d / "evaluations.npz", timesteps=t, results=res, ep_lengths=np.ones((10, 4)))
        (d / "model.zip").write_bytes(b"zip")
    episodes = [
        {"policy": "ppo", "kind": "agent", "train_seed": s, "return": 9.0 + s + i, "lat": 0.1}
        for s in cfg.seeds
        for i in range(5)
    ]
    episodes += [
        {"policy": name, "kind": kind, "train_seed": "", "return": r + i, "lat": 0.2}
        for name, kind, r in (("eager", "heuristic", 4.0), ("dp_oracle", "oracle", 12.0))
        for i in range(5)
    ]
    xio.write_csv_atomic(run / "episodes.csv", episodes)
    summary = summarize(episodes, ["return", "lat"], np.random.default_rng(0), n_resamples=200)
    xio.write_csv_atomic(run / "summary.csv", summary)
    xio.write_text_atomic(run / "summary.md", summary_markdown(cfg, summary))
    xio.write_csv_atomic(
        run / "curve_levels.csv",
        [
            {"policy": "eager", "kind": "heuristic", "mean_return": 5.0, "episodes": 5},
            {"policy": "dp_oracle", "kind": "oracle", "mean_return": 11.0, "episodes": 5},
        ],
    )
    if complete:
        from mei_envs.experiments.plot import render_run_plots

        render_run_plots(run, np.random.default_rng(0))
        xio.mark_complete(run)
    return run


def test_plot_run_refuses_incomplete_folder(tmp_path: Path):
    from mei_envs.experiments.plot import plot_run

    run = _synthetic_run(tmp_path, complete=False)
    with pytest.raises(xio.IncompleteRunError) as err:
        plot_run(run)
    assert "COMPLETE" in err.value.missing
    assert "learning_curves.png" in err.value.missing
    assert not (run / "learning_curves.png").exists()


def test_plot_run_writes_nonempty_figures(tmp_path: Path):
    from mei_envs.experiments.plot import plot_run

    run = _synthetic_run(tmp_path)
    for name in ("learning_curves.png", "final_comparison.png"):
        (run / name).unlink()
    (run / "COMPLETE").unlink()
    with pytest.raises(xio.IncompleteRunError):
        plot_run(run)
    from mei_envs.experiments.plot import render_run_plots

    render_run_plots(run, np.random.default_rng(0))
    xio.mark_complete(run)
    before = (run / "learning_curves.png").stat().st_mtime_ns
    paths = plot_run(run)
    assert {p.name for p in paths} == {
        "learning_curves.png",
        "learning_curves.pdf",
        "final_comparison.png",
        "final_comparison.pdf",
    }
    assert (run / "learning_curves.png").stat().st_mtime_ns >= before
    for p in paths:
        assert p.stat().st_size > 10_000, p
    h, w, channels = _png_shape(run / "learning_curves.png")
    assert h > 300 and w > 500 and channels in (3, 4)
    assert _png_shape(run / "final_comparison.png")[1] > 500  # two metric panels side by side
    assert (run / "learning_curves.pdf").read_bytes()[:4] == b"%PDF"


def test_plot_zoo_log_folder(tmp_path: Path):
    from mei_envs.experiments.plot import find_zoo_runs, plot_zoo

    logs = tmp_path / "logs"
    for algo, n in (("ppo", 1), ("ppo", 2), ("a2c", 1)):
        d = logs / algo / f"mei_envs-EarlyExitUpload-v1_{n}"
        d.mkdir(parents=True)
        t = np.arange(1, 6) * 500
        np.savez(d / "evaluations.npz", timesteps=t, results=np.outer(t, np.ones(3)) / 500 + n)
    (logs / "ppo" / "not_a_run").mkdir()
    runs = find_zoo_runs(logs)
    assert list(runs) == ["mei_envs-EarlyExitUpload-v1"]
    assert {a: len(p) for a, p in runs["mei_envs-EarlyExitUpload-v1"].items()} == {
        "ppo": 2,
        "a2c": 1,
    }
    paths = plot_zoo(logs)
    assert [p.name for p in paths] == ["learning_curves.png", "learning_curves.pdf"]
    assert paths[0].stat().st_size > 10_000 and _png_shape(paths[0])[0] > 300
    with pytest.raises(FileNotFoundError, match="no rl-zoo runs"):
        plot_zoo(tmp_path / "empty")


# ---- compare config and CLI -----------------------------------------------------------------
def test_compare_config_validation_names_bad_keys(tmp_path: Path):
    from mei_envs.experiments.compare import CompareConfig, CompareConfigError

    with pytest.raises(CompareConfigError, match=r"unknown key\(s\) \['sedes'\]"):
        CompareConfig.from_dict({"sedes": [0]})
    with pytest.raises(CompareConfigError, match="backend"):
        CompareConfig.from_dict({"backend": "slurm"})
    with pytest.raises(CompareConfigError, match="eval_seed"):
        CompareConfig.from_dict({"eval_seed": 2, "seeds": [0]})
    with pytest.raises(CompareConfigError, match="seeds"):
        CompareConfig.from_dict({"seeds": [1, 1]})
    with pytest.raises(CompareConfigError, match="env_id"):
        CompareConfig.from_dict({"env_id": "CartPole-v1"})
    with pytest.raises(CompareConfigError, match="hyperparams_override"):
        CompareConfig.from_dict({"hyperparams_override": {"a2c": {"n_steps": 8}}})
    cfg = CompareConfig.from_dict({"total_timesteps": 2e4})
    assert cfg.total_timesteps == 20_000 and isinstance(cfg.total_timesteps, int)
    path = tmp_path / "c.yml"
    xio.write_yaml_atomic(path, cfg.to_dict())
    assert CompareConfig.from_yaml(path) == cfg


def test_cli_builds_config_from_default_yaml_and_overrides():
    import argparse

    from mei_envs.experiments.cli import add_compare_parser, add_plot_parser, add_sweep_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    add_compare_parser(sub)
    add_plot_parser(sub)
    add_sweep_parser(sub)
    from mei_envs.experiments.cli import build_compare_config

    args = parser.parse_args(
        ["compare", "--set", "seeds=[4,5]", "--set", "run_name=x", "--backend", "ray"]
        + ["--env-set", "foo=1.5"]
    )
    cfg = build_compare_config(args)
    assert cfg.seeds == [4, 5] and cfg.run_name == "x" and cfg.backend == "ray"
    assert cfg.env_config["foo"] == 1.5
    assert cfg.env_id == "mei_envs/EarlyExitUpload-v1"  # from the packaged default YAML
    bad = parser.parse_args(["compare", "--set", "nope=1"])
    assert bad.func(bad) == 2
    plot_args = parser.parse_args(["plot"])
    assert plot_args.func(plot_args) == 2  # neither RUN_DIR nor --zoo


def test_plot_cli_reports_incomplete_run(tmp_path: Path, capsys):
    import argparse

    from mei_envs.experiments.cli import add_plot_parser

    run = _synthetic_run(tmp_path, complete=False)
    parser = argparse.ArgumentParser()
    add_plot_parser(parser.add_subparsers())
    args = parser.parse_args(["plot", str(run)])
    assert args.func(args) == 1
    assert "incomplete" in capsys.readouterr().err


# ---- sweep ----------------------------------------------------------------------------------
def test_grid_builds_product_and_rejects_bad_input(tmp_path: Path):
    from mei_envs.experiments.sweep import grid, run_sweep

    jobs = grid(
        ["mei_envs/EarlyExitUpload-v1"],
        ["ppo", "a2c"],
        [0, 1],
        {"x": [1, 2]},
        out_dir=tmp_path,
        total_timesteps=100,
    )
    assert len(jobs) == 8
    assert len({j.run_dir for j in jobs}) == 8
    assert {j.env_config["x"] for j in jobs} == {1, 2}
    assert all(j.total_timesteps == 100 for j in jobs)
    assert Path(jobs[0].run_dir).name == "mei_envs-EarlyExitUpload-v1__ppo__x=1__s0"
    with pytest.raises(ValueError, match="unknown job field"):
        grid(["e"], ["ppo"], [0], total_steps=5)
    with pytest.raises(ValueError, match="seeds"):
        grid(["e"], ["ppo"], [])
    with pytest.raises(ValueError, match=r"backend='slurm'.*\['local', 'ray'\]"):
        run_sweep(jobs, backend="slurm")
    with pytest.raises(ValueError, match="share run_dir"):
        run_sweep([jobs[0], jobs[0]])


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise RuntimeError("two is bad")
    return x


def test_map_tasks_local_pool_runs_all_and_reports_failures():
    from mei_envs.experiments.sweep import SweepError, map_tasks

    with pytest.raises(SweepError, match="two is bad") as err:
        map_tasks(_fail_on_two, [1, 2, 3], workers=2, labels=["a", "b", "c"])
    assert list(err.value.failures) == ["b"]
    assert err.value.results == [1, None, 3]  # the other tasks still ran


def test_limit_threads_pins_torch_to_one_thread():
    import torch

    from mei_envs.experiments.sweep import limit_threads

    before = torch.get_num_threads()
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        limit_threads()
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ray_backend_without_ray_gives_clear_error(monkeypatch):
    import sys

    from mei_envs.experiments.sweep import map_tasks

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'ray\[default\]'"):
        map_tasks(_fail_on_two, [1], backend="ray")


# ---- end to end: tiny training budgets ------------------------------------------------------
# PPO with 2 envs x 64 steps per rollout: 512 steps are 4 updates, a few seconds per run.
_TINY_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


def tiny_sweep_jobs(out_dir: Path) -> list:
    """Two 256-step PPO jobs (seeds 0 and 1) on the first registered env."""
    import mei_envs
    from mei_envs.experiments.sweep import grid

    return grid(
        [mei_envs.ENV_IDS[0]],
        ["ppo"],
        [0, 1],
        out_dir=out_dir,
        total_timesteps=256,
        n_envs=2,
        hyperparams_override=_TINY_PPO,
        eval_freq=128,
        eval_episodes=1,
        checkpoint_freq=0,
        tensorboard=False,
    )


def check_tiny_sweep(paths: list[Path], jobs: list) -> None:
    """Every job of :func:`tiny_sweep_jobs` finished in its own folder with two evaluations."""
    assert [p.resolve() for p in paths] == [Path(j.run_dir).resolve() for j in jobs]
    for path in paths:
        assert (path / "COMPLETE").is_file() and (path / "model.zip").is_file()
        with np.load(path / "evaluations.npz") as ev:
            assert list(ev["timesteps"]) == [128, 256]


def test_local_sweep_trains_two_jobs(tmp_path: Path):
    from mei_envs.experiments.sweep import run_sweep

    jobs = tiny_sweep_jobs(tmp_path)
    check_tiny_sweep(run_sweep(jobs, backend="local", workers=2), jobs)


def test_tiny_compare_produces_every_output(tmp_path: Path):
    import yaml

    import mei_envs
    from mei_envs.baselines.evaluation import run_episodes
    from mei_envs.baselines.registry import list_policies
    from mei_envs.experiments.compare import CompareConfig, run_compare
    from mei_envs.experiments.plot import plot_run

    env_id = mei_envs.ENV_IDS[0]
    cfg = CompareConfig(
        env_id=env_id,
        algos=["ppo"],
        seeds=[0, 1],
        total_timesteps=512,
        n_envs=2,
        hyperparams_override={"ppo": _TINY_PPO},
        eval_freq=256,
        train_eval_episodes=2,
        eval_episodes=3,
        eval_seed=100_000,
        out_dir=str(tmp_path),
        run_name="tiny",
        bootstrap_resamples=200,
    )
    run = run_compare(cfg, quiet=True)
    assert run.parent == tmp_path.resolve()
    assert run.name.startswith("mei_envs-EarlyExitUpload-v1__tiny__")
    xio.check_run_complete(run)
    for name in (
        "config.yml",
        "episodes.csv",
        "summary.csv",
        "summary.md",
        "learning_curves.png",
        "learning_curves.pdf",
        "final_comparison.png",
        "final_comparison.pdf",
        "train/ppo__0/model.zip",
        "train/ppo__1/evaluations.npz",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert CompareConfig.from_dict(yaml.safe_load((run / "config.yml").read_text())) == cfg

    episodes = xio.read_csv(run / "episodes.csv")
    specs = list_policies(env_id)[env_id]
    policies = {(r["policy"], r["train_seed"]) for r in episodes}
    assert policies == {("ppo", "0"), ("ppo", "1")} | {(s.name, "") for s in specs}
    assert len(episodes) == 3 * (2 + len(specs))
    # Every policy saw exactly the same held-out episode seeds.
    seeds_of = {}
    for r in episodes:
        seeds_of.setdefault((r["policy"], r["train_seed"]), []).append(int(r["episode_seed"]))
    assert all(s == [100_000, 100_001, 100_002] for s in seeds_of.values())
    info_metrics = list(mei_envs_metrics(env_id))
    assert set(info_metrics) <= set(episodes[0])
    # The stored returns are what an independent evaluation on those seeds gives.
    oracle = run_episodes(env_id, "dp_oracle", episodes=3, seed=100_000)
    got = [float(r["return"]) for r in episodes if r["policy"] == "dp_oracle"]
    np.testing.assert_allclose(got, oracle.returns)
    agent = run_episodes(env_id, str(run / "train/ppo__1/model.zip"), episodes=3, seed=100_000)
    got = [float(r["return"]) for r in episodes if r["policy"] == "ppo" and r["train_seed"] == "1"]
    np.testing.assert_allclose(got, agent.returns)

    # The learning curves' reference lines: baselines on the trainer's evaluation episodes.
    levels = {r["policy"]: float(r["mean_return"]) for r in xio.read_csv(run / "curve_levels.csv")}
    assert set(levels) == {s.name for s in specs}
    on_train_eval = run_episodes(env_id, "dp_oracle", episodes=2, seed=cfg.train_eval_seed)
    assert levels["dp_oracle"] == pytest.approx(on_train_eval.returns.mean())

    summary = xio.read_csv(run / "summary.csv")
    keys = {(r["policy"], r["seed"], r["metric"]) for r in summary}
    for metric in ["return", *info_metrics]:
        assert {("ppo", "all", metric), ("ppo", "0", metric), ("ppo", "1", metric)} <= keys
        assert all((s.name, "", metric) in keys for s in specs)
    for r in summary:
        assert float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]), r
    assert "| dp_oracle | oracle |" in (run / "summary.md").read_text()
    from mei_envs.experiments.stats import rliable_problem

    # learning curves and final comparison (+ performance profiles with rliable), PNG and PDF
    assert len(plot_run(run)) == (6 if rliable_problem() is None else 4)
    if rliable_problem() is None:
        agg = xio.read_csv(run / "aggregates.csv")
        assert {r["aggregate"] for r in agg} == {"IQM", "mean", "optimality_gap"}
        assert {r["policy"] for r in agg} == {"ppo"} | {s.name for s in specs}


def mei_envs_metrics(env_id: str) -> dict[str, str]:
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        return dict(env.unwrapped.metadata["info_metrics"])
    finally:
        env.close()


# ---- rliable aggregates and figures ----------------------------------------------------------
def test_rliable_aggregates_on_known_scores():
    from mei_envs.experiments import stats

    if stats.rliable_problem():
        pytest.skip(stats.rliable_problem())
    records = [
        {"policy": p, "train_seed": s, "episode_seed": e, "return": v}
        for p, s, base in (("agent", 0, 1.0), ("agent", 1, 3.0), ("base", "", 0.0))
        for e in range(8)
        for v in [base + e]
    ]
    mats = stats.score_matrices(records)
    assert mats["agent"].shape == (2, 8) and mats["base"].shape == (1, 8)
    scores = stats.normalize_scores(mats, low=0.0, high=10.0)
    rows = {(r["policy"], r["aggregate"]): r for r in stats.rliable_aggregates(scores, reps=200)}
    assert rows[("agent", "mean")]["value"] == pytest.approx(np.mean(mats["agent"]) / 10)
    gap = np.mean(np.maximum(1 - scores["base"], 0))
    assert rows[("base", "optimality_gap")]["value"] == pytest.approx(gap)
    for r in rows.values():
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    # Every run of "agent" beats "base" on every task except ties: P = 1.
    (imp,) = stats.rliable_improvement(scores, [("agent", "base")])
    assert imp["probability"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no scale"):
        stats.normalize_scores(mats, 1.0, 1.0)


def test_constant_metrics_get_no_panel():
    from mei_envs.experiments.plot import constant_metrics

    rows = [
        {"policy": p, "kind": "heuristic", "seed": "", "metric": m, "mean": v}
        for p, vals in (("a", (1.0, 5.0)), ("b", (2.0, 5.0)))
        for m, v in zip(("return", "bytes"), vals, strict=True)
    ]
    assert constant_metrics(rows, ["return", "bytes"]) == ["bytes"]


def test_prepare_resume_reuses_continues_or_restarts(tmp_path: Path):
    from mei_envs.experiments.sweep import SweepJob, prepare_resume

    def job(name: str) -> SweepJob:
        return SweepJob.of(env_id="mei_envs/EarlyExitUpload-v1", run_dir=str(tmp_path / name))

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "COMPLETE").write_text("num_timesteps: 8\n")
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    (tmp_path / "cut" / "checkpoints" / "model_128_steps.zip").write_bytes(b"zip")
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "progress.csv").write_text("a\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")

    done = prepare_resume(job("done"))
    assert done.reuse_complete and not done.args.resume
    cut = prepare_resume(job("cut"))
    assert cut.args.resume
    early = prepare_resume(job("early"))
    assert not early.args.resume and not (tmp_path / "early").exists()  # starts over
    assert not prepare_resume(job("new")).args.resume
    with pytest.raises(FileExistsError, match="notes.txt"):
        prepare_resume(job("foreign"))
    assert (tmp_path / "foreign" / "notes.txt").is_file()


def test_progress_line_reads_like_a_status():
    from mei_envs.experiments.sweep import progress_line

    line = progress_line("ppo seed 0", 40_960, 301_056, 1234.0)
    assert line == "ppo seed 0: 40,960/301,056 steps (14%), 1,234 steps/s, ETA 3m 30s"
    assert progress_line("ppo seed 0", 0, 2048, 0.0) == "ppo seed 0: started, 2,048 steps to go"


def test_emit_text_prints_writes_and_returns(tmp_path, capsys):
    out = tmp_path / "sub.md"
    assert xio.emit_text("| a |", out) == "| a |"
    assert out.read_text() == "| a |\n"
    assert capsys.readouterr().out == "| a |\n"
    assert xio.emit_text("x") == "x"  # no file without ``out``
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.md"]
