"""Train an agent on SplitFedAlloc-v0 and compare it with every baseline and the oracle.

Reads a YAML config (``experiments/configs/split_fed_default.yml``), trains ``algo`` for
each seed with :func:`mei_envs.agents.train.train` (hyperparameters from
``agents/hyperparams/<algo>.yml``), then evaluates the trained agents and every registered
policy on the same held-out episodes and writes a table of time-to-target and energy::

    OMP_NUM_THREADS=1 nice -n 10 python -m mei_envs.experiments.split_fed_train \\
        experiments/configs/split_fed_default.yml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mei_envs.baselines.registry import list_policies
from mei_envs.experiments.split_fed_presets import ENV_ID, run_policy


def gap_ci(
    times: Any, reference: Any, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Relative gap of ``times`` to ``reference`` on the same episodes, with a percentile
    bootstrap interval.

    ``times``: per-episode times of one run (1-D) or of several seeds (2-D, seeds x
    episodes); ``reference``: the reference policy's per-episode times on the same episodes.
    The gap is ``mean(times) / mean(reference) - 1``, i.e. the mean paired difference
    ``times - reference`` over the reference's mean; the interval resamples episodes (and,
    with several seeds, seeds first: :func:`mei_envs.experiments.stats.grouped_bootstrap_ci`)
    and keeps the pairing.

    Returns:
        ``(gap, low, high)`` as fractions (0.1 = 10% slower than the reference).
    """
    from mei_envs.experiments.stats import bootstrap_ci, grouped_bootstrap_ci

    ref = np.asarray(reference, float)
    x = np.atleast_2d(np.asarray(times, float))
    if x.shape[1] != ref.size:
        raise ValueError(f"times: {x.shape[1]} episodes per seed, reference has {ref.size}")
    d = (x - ref) / ref.mean()
    if d.shape[0] == 1:
        low, high = bootstrap_ci(d[0], rng, confidence=confidence)
    else:
        low, high = grouped_bootstrap_ci(list(d), rng, confidence=confidence)
    return float(d.mean()), low, high


def report(cfg: dict[str, Any], results: dict[str, Any], config_path: str) -> str:
    """The Markdown table of every policy and agent, with 95% bootstrap intervals, and a
    pooled row over the agent's seeds."""
    from mei_envs.experiments.stats import bootstrap_ci, grouped_bootstrap_ci

    rng = np.random.default_rng(0)
    ref = np.asarray(results["fixed_equal"]["times"])
    orc = np.asarray(results["myopic_oracle"]["times"])
    algo = cfg["algo"]
    agent_names = [n for n in results if n.startswith(f"{algo}_seed")]
    lines = [
        f"# SplitFedAlloc-v0: {algo} vs baselines and the oracle",
        "",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python -m mei_envs.experiments.split_fed_train "
        f"{config_path}`; env config {cfg.get('env_config') or {}}; "
        f"{cfg['total_timesteps']} training steps per seed, seeds {cfg['seeds']}; "
        f"{cfg['eval_episodes']} held-out episodes (seeds {cfg['eval_seed']}.. "
        f"{cfg['eval_seed'] + cfg['eval_episodes'] - 1}), the same for every row; agents act "
        "deterministically.",
        "",
        "Time to target: mean over episodes with its 95% percentile-bootstrap interval "
        "[low, high]; the gaps are mean(policy) / mean(reference) - 1 on the same episodes, "
        "with a paired bootstrap interval (episodes resampled; for the pooled row seeds "
        "first, then episodes). An episode that misses the target counts its time used "
        f"(the budget is {cfg.get('env_config', {}).get('time_budget_s', 5000.0):.0f} s "
        "by default).",
        "",
        "| policy | time to target [s] [95% CI] | vs fixed_equal [95% CI] | "
        "vs myopic_oracle [95% CI] | energy [J] | reached | mean cut | mean rank |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, times: Any, r: dict[str, Any]) -> str:
        x = np.atleast_2d(np.asarray(times, float))
        if x.shape[0] == 1:
            lo, hi = bootstrap_ci(x[0], rng)
        else:
            lo, hi = grouped_bootstrap_ci(list(x), rng)
        g_ref, g_ref_lo, g_ref_hi = gap_ci(x, ref, rng)
        g_orc, g_orc_lo, g_orc_hi = gap_ci(x, orc, rng)
        return (
            f"| {name} | {x.mean():.0f} [{lo:.0f}, {hi:.0f}] | "
            f"{g_ref:+.1%} [{g_ref_lo:+.1%}, {g_ref_hi:+.1%}] | "
            f"{g_orc:+.1%} [{g_orc_lo:+.1%}, {g_orc_hi:+.1%}] | "
            f"{r['energy_J']:.0f} | {r['reached']:.0%} | {r['cut_mean']:.2f} | "
            f"{r['rank_mean']:.2f} |"
        )

    for name, r in results.items():
        lines.append(row(name, r["times"], r))
    if len(agent_names) > 1:
        pooled = {
            k: float(np.mean([results[n][k] for n in agent_names]))
            for k in ("energy_J", "reached", "cut_mean", "rank_mean")
        }
        times = [results[n]["times"] for n in agent_names]
        lines.append(row(f"**{algo}, {len(agent_names)} seeds pooled**", times, pooled))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML file (see experiments/configs/split_fed_*.yml)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite summary.md from the run's summary.json (no training, no evaluation)",
    )
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = Path(cfg["out_dir"])
    if args.report_only:
        results = json.loads((out / "summary.json").read_text())
        text = report(cfg, results, args.config)
        (out / "summary.md").write_text(text)
        print(text)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env_config = dict(cfg.get("env_config") or {})
    agents: dict[str, str] = {}
    t0 = time.time()
    for seed in cfg["seeds"]:
        run_dir = out / f"{cfg['algo']}_seed{seed}"
        if not args.skip_train:
            from mei_envs.agents.train import TrainArgs, train

            train(
                TrainArgs(
                    env_id=ENV_ID,
                    algo=cfg["algo"],
                    total_timesteps=int(cfg["total_timesteps"]),
                    seed=int(seed),
                    env_config=env_config,
                    hyperparams_override=dict(cfg.get("hyperparams_override") or {}),
                    run_dir=str(run_dir),
                    eval_freq=int(cfg.get("eval_freq", 20000)),
                    eval_episodes=int(cfg.get("train_eval_episodes", 5)),
                    checkpoint_freq=int(cfg.get("checkpoint_freq", 0)),
                    tensorboard=False,
                    torch_threads=1,
                )
            )
            print(f"trained {cfg['algo']} seed {seed} ({time.time() - t0:.0f} s)", flush=True)
        agents[f"{cfg['algo']}_seed{seed}"] = str(run_dir / "model.zip")
    names = [s.name for s in list_policies(ENV_ID)[ENV_ID]]
    if cfg.get("baselines") is not None:  # a subset, e.g. [fixed_equal, myopic_oracle]
        keep = {*cfg["baselines"], "fixed_equal", "myopic_oracle"}  # the table needs both
        names = [n for n in names if n in keep]
    # Baselines are deterministic: a run on the same env config and held-out episodes may
    # reuse another run's numbers (``baselines_from: <out_dir>/summary.json``).
    reused = json.loads(Path(cfg["baselines_from"]).read_text()) if "baselines_from" in cfg else {}
    results: dict[str, Any] = {}
    for name, policy in [*((n, n) for n in names), *agents.items()]:
        if name in reused and name in names:
            results[name] = reused[name]
            print(f"{name:18s} from {cfg['baselines_from']}", flush=True)
            continue
        results[name] = run_policy(env_config, policy, cfg["eval_episodes"], cfg["eval_seed"])
        r = results[name]
        print(
            f"{name:18s} time {r['time_s']:8.0f} s energy {r['energy_J']:9.0f} J reached "
            f"{r['reached']:.2f} cut {r['cut_mean']:.2f} rank {r['rank_mean']:.2f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(cfg, results, args.config)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
