"""Validation sweep behind the ``diurnal`` preset of EdgeLLMCache-v0 (note section 8).

    python -m mei_envs.experiments.edge_llm_cache_phase_sweep --episodes 4 --seed 200000 \\
        --configs '[{"phase_count": 4, "phase_length": 100, "capacity_fraction": 0.4}]' \\
        --policies knapsack_greedy phase_knapsack belady_shared [--bound]

For each env config (a JSON list of config dicts), the mean hit ratio (%) of each policy over
``--episodes`` episodes seeded ``--seed``.. (``run_episodes``; deterministic policies, so a
policy's numbers do not depend on which others run), ``belady_shared - knapsack_greedy`` when
both ran, and with ``--bound`` the online hit-ratio bound of section 2c (from the generator's
replayed popularity schedule). One line per config, printed as it finishes. Use validation
seeds (200000..) for choosing a preset; held-out tables come from
``edge_llm_cache_baselines``.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

from mei_envs.baselines.edge_llm_cache_popularity import PopularityOracle, online_hit_bound
from mei_envs.baselines.evaluation import run_episodes

ENV_ID = "mei_envs/EdgeLLMCache-v0"


def bound(cfg: dict, episodes: int, seed: int) -> float:
    """Mean online hit-ratio bound (%) over the episodes."""
    env = gym.make(ENV_ID, **cfg).unwrapped
    pol = PopularityOracle(env)
    out = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        pol.reset(None, None)
        out.append(
            online_hit_bound(
                env.catalog, env.capacity_bytes, pol.swap_times, pol.probs, len(env.requests)
            )
        )
    return 100.0 * float(np.mean(out))


def sweep_line(cfg: dict, policies: list[str], episodes: int, seed: int, with_bound: bool) -> str:
    t0 = time.perf_counter()
    row = {
        p: 100.0
        * float(
            run_episodes(ENV_ID, p, episodes=episodes, seed=seed, env_config=cfg)
            .metrics["hit_ratio"]
            .mean()
        )
        for p in policies
    }
    if with_bound:
        row["online bound"] = bound(cfg, episodes, seed)
    parts = [f"{k} {v:.1f}" for k, v in row.items()]
    if "belady_shared" in row and "knapsack_greedy" in row:
        parts.append(
            f"belady_shared - knapsack_greedy {row['belady_shared'] - row['knapsack_greedy']:+.1f}"
        )
    return f"{json.dumps(cfg)}: " + ", ".join(parts) + f" ({time.perf_counter() - t0:.0f} s)"


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--configs", required=True, help="JSON list of env config dicts")
    ap.add_argument(
        "--policies", nargs="+", default=["knapsack_greedy", "phase_knapsack", "belady_shared"]
    )
    ap.add_argument("--bound", action="store_true", help="add the online hit-ratio bound")
    args = ap.parse_args(argv)
    configs = json.loads(args.configs)
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SystemExit(f"--configs {args.configs!r}: must be a JSON list of objects")
    lines = []
    for cfg in configs:
        lines.append(sweep_line(cfg, args.policies, args.episodes, args.seed, args.bound))
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
