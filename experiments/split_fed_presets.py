"""SplitFedAlloc-v0 presets: what the oracle chooses and how far each heuristic is from it.

For every named preset, runs every registered policy of ``mei_envs/SplitFedAlloc-v0`` on the
same held-out episodes and reports time-to-target, energy, the share of episodes that reach
the target, and the oracle's choices (cut, rank and how uneven its bandwidth split is:
the largest share over the smallest, averaged over rounds). Run::

    OMP_NUM_THREADS=1 python -m mei_envs.experiments.split_fed_presets --episodes 20 \
        --out experiments/figures/split_fed_presets.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the envs)
from mei_envs.baselines.registry import list_policies
from mei_envs.envs.split_fed_alloc import SplitFedAllocConfig

ENV_ID = "mei_envs/SplitFedAlloc-v0"
EVAL_SEED = 100_000  # held-out seeds, disjoint from training seeds


def run_policy(
    preset: str | dict[str, Any], policy: str, episodes: int, seed: int
) -> dict[str, Any]:
    """Episodes of one policy (a registered name or a saved agent's ``.zip``); per-episode
    time-to-target, energy and the choices made. ``preset``: a preset name or a config."""
    from mei_envs.baselines.evaluation import resolve_policy

    cfg = {"preset": preset} if isinstance(preset, str) else dict(preset)
    env = gym.make(ENV_ID, config=cfg)
    pol = resolve_policy(ENV_ID, policy, env)
    times, energy, reached, cuts, ranks, spread = [], [], [], [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        pol.reset(obs, info)
        done, t, e = False, 0.0, 0.0
        while not done:
            obs, _, term, trunc, info = env.step(pol.act(obs, info))
            t += info["round_time_s"]
            e += info["energy_J"]
            cuts.append(info["cut"])
            ranks.append(info["rank"])
            sh = info["shares"][info["shares"] > 0]
            spread.append(float(sh.max() / sh.min()))
            done = term or trunc
        times.append(t)
        energy.append(e)
        reached.append(bool(term))
    return {
        "time_s": float(np.mean(times)),
        "time_s_std": float(np.std(times, ddof=1)) if episodes > 1 else 0.0,
        "energy_J": float(np.mean(energy)),
        "reached": float(np.mean(reached)),
        "cut_mean": float(np.mean(cuts)),
        "cut_mode": int(np.bincount(cuts).argmax()),
        "rank_mean": float(np.mean(ranks)),
        "rank_mode": int(np.bincount(ranks).argmax()),
        "share_spread": float(np.mean(spread)),
        "times": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=list(SplitFedAllocConfig.PRESETS))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--out", default="experiments/figures/split_fed_presets.md")
    args = parser.parse_args(argv)
    names = [s.name for s in list_policies(ENV_ID)[ENV_ID]]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    for preset in args.presets:
        results[preset] = {}
        for name in names:
            results[preset][name] = run_policy(preset, name, args.episodes, args.seed)
            r = results[preset][name]
            print(
                f"{preset:26s} {name:18s} time {r['time_s']:8.0f} s  reached {r['reached']:.2f}"
                f"  cut {r['cut_mean']:5.2f}  rank {r['rank_mean']:5.2f}"
                f"  spread {r['share_spread']:6.2f}  ({time.time() - t0:.0f} s)",
                flush=True,
            )
    lines = [
        "# SplitFedAlloc-v0: presets, oracle choices and heuristic gaps",
        "",
        f"Command: `python -m mei_envs.experiments.split_fed_presets --episodes "
        f"{args.episodes} --seed {args.seed}`; held-out seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}; time = wall-clock training time to the target "
        "loss (time budget when not reached).",
        "",
        "| preset | oracle cut (mean/mode) | oracle rank (mean/mode) | oracle share spread "
        "(max/min) | oracle time [s] | "
        + " | ".join(f"{n} vs oracle" for n in names if n != "myopic_oracle")
        + " |",
        "|---|---|---|---|---|" + "---|" * (len(names) - 1),
    ]
    for preset, res in results.items():
        o = res["myopic_oracle"]
        gaps = [
            f"{(res[n]['time_s'] / o['time_s'] - 1) * 100:+.1f}% (reached {res[n]['reached']:.0%})"
            for n in names
            if n != "myopic_oracle"
        ]
        lines.append(
            f"| {preset} | {o['cut_mean']:.1f} / {o['cut_mode']} | {o['rank_mean']:.1f} / "
            f"{o['rank_mode']} | {o['share_spread']:.2f} | {o['time_s']:.0f} | "
            + " | ".join(gaps)
            + " |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
