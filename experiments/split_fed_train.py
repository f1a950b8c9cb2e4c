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

import yaml

from mei_envs.baselines.registry import list_policies
from mei_envs.experiments.split_fed_presets import ENV_ID, run_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML file (see experiments/configs/split_fed_*.yml)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = Path(cfg["out_dir"])
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
    results: dict[str, Any] = {}
    for name, policy in [*((n, n) for n in names), *agents.items()]:
        results[name] = run_policy(env_config, policy, cfg["eval_episodes"], cfg["eval_seed"])
        r = results[name]
        print(
            f"{name:18s} time {r['time_s']:8.0f} s energy {r['energy_J']:9.0f} J reached "
            f"{r['reached']:.2f} cut {r['cut_mean']:.2f} rank {r['rank_mean']:.2f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    ref, orc = results["fixed_equal"]["time_s"], results["myopic_oracle"]["time_s"]
    lines = [
        f"# SplitFedAlloc-v0: {cfg['algo']} vs baselines and the oracle",
        "",
        f"Command: `python -m mei_envs.experiments.split_fed_train {args.config}`; env config "
        f"{env_config}; {cfg['total_timesteps']} training steps per seed; "
        f"{cfg['eval_episodes']} held-out episodes (seeds {cfg['eval_seed']}..).",
        "",
        "| policy | time to target [s] (mean +- sd) | vs fixed_equal | vs myopic_oracle | "
        "energy [J] | reached | mean cut | mean rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['time_s']:.0f} +- {r['time_s_std']:.0f} | "
            f"{(r['time_s'] / ref - 1) * 100:+.1f}% | {(r['time_s'] / orc - 1) * 100:+.1f}% | "
            f"{r['energy_J']:.0f} | {r['reached']:.0%} | {r['cut_mean']:.2f} | "
            f"{r['rank_mean']:.2f} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
