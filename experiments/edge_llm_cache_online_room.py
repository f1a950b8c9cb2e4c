"""Online room vs offline room per EdgeLLMCache preset.

    python -m mei_envs.experiments.edge_llm_cache_online_room --episodes 40 --seed 100000

The offline oracles (``belady_shared``, ``rollout``) know the future requests; their lead over
the best online heuristic is not necessarily reachable by any online policy. This script
measures, per preset, on the same held-out episodes:

* the online heuristics ``trim_greedy`` and ``knapsack_greedy`` (best set for the estimated
  popularity), the better of the two by mean being the "best online";
* ``popularity_oracle`` and ``popularity_knapsack``: the same two rules with the request
  generator's TRUE current popularity (known drift state, no future requests): what knowing
  the popularity exactly buys;
* the online bound: per request, the most popularity a cache content that fits can hold,
  averaged over the episode; an upper bound on the expected hit ratio of EVERY policy that
  does not read future requests (MaskablePPO included; see
  ``mei_envs.baselines.edge_llm_cache_popularity``);
* ``belady_shared`` (offline).

Differences to ``trim_greedy`` are paired per episode with 95% percentile-bootstrap CIs
(``mei_envs.experiments.stats.bootstrap_ci``). Writes ``--out``.md/.json (default
``experiments/figures/edge_llm_cache_online_room``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from mei_envs.baselines.edge_llm_cache_popularity import PopularityOracle, online_hit_bound
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.experiments.stats import bootstrap_ci

ENV_ID = "mei_envs/EdgeLLMCache-v0"
POLICIES = (
    "trim_greedy",
    "knapsack_greedy",
    "popularity_oracle",
    "popularity_knapsack",
    "belady_shared",
)
PRESETS = ("default", "adapter_heavy", "quantised", "fast_drift", "small_cache")


def bound_per_episode(preset: str, episodes: int, seed: int) -> np.ndarray:
    """The online hit-ratio bound of each episode (same seeds, same requests)."""
    env = gym.make(ENV_ID, preset=preset).unwrapped
    pol = PopularityOracle(env)
    out = np.zeros(episodes)
    for i in range(episodes):
        env.reset(seed=seed + i)
        pol.reset(None, None)
        out[i] = online_hit_bound(
            env.catalog, env.capacity_bytes, pol.swap_times, pol.probs, len(env.requests)
        )
    return out


def _fmt(diff: np.ndarray) -> str:
    lo, hi = bootstrap_ci(diff, np.random.default_rng(0))
    return f"{diff.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument(
        "--out", type=Path, default=Path("experiments/figures/edge_llm_cache_online_room")
    )
    args = ap.parse_args(argv)
    cmd = (
        "python -m mei_envs.experiments.edge_llm_cache_online_room "
        f"--episodes {args.episodes} --seed {args.seed} --presets {' '.join(args.presets)}"
    )
    lines = [
        f"Hit ratio (%) on {args.episodes} held-out episodes per preset (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}, 1000 requests each). Command: `{cmd}`. Paired "
        "differences in points with 95% bootstrap CIs; best online = the better of "
        "trim_greedy and knapsack_greedy by mean.",
        "",
        "| preset | trim_greedy | knapsack_greedy | popularity_oracle | popularity_knapsack "
        "| online bound | belady_shared | popularity_oracle - trim_greedy | popularity_knapsack"
        " - best online | bound - best online | belady_shared - best online |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results: dict[str, dict] = {}
    for preset in args.presets:
        t0 = time.perf_counter()
        hits = {
            pol: 100.0
            * run_episodes(
                ENV_ID, pol, episodes=args.episodes, seed=args.seed, env_config={"preset": preset}
            ).metrics["hit_ratio"]
            for pol in POLICIES
        }
        hits["online bound"] = 100.0 * bound_per_episode(preset, args.episodes, args.seed)
        best = max(("trim_greedy", "knapsack_greedy"), key=lambda p: hits[p].mean())
        cols = [*POLICIES[:4], "online bound", "belady_shared"]
        row = " | ".join(f"{hits[p].mean():.1f}" for p in cols)
        diffs = [
            hits["popularity_oracle"] - hits["trim_greedy"],
            hits["popularity_knapsack"] - hits[best],
            hits["online bound"] - hits[best],
            hits["belady_shared"] - hits[best],
        ]
        lines.append(f"| {preset} | {row} | " + " | ".join(_fmt(d) for d in diffs) + " |")
        results[preset] = {p: v.tolist() for p, v in hits.items()} | {"best_online": best}
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
