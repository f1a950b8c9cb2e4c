"""How far the best online heuristic is from the rollout oracle, per EdgeLLMCache preset.

    python -m mei_envs.experiments.edge_llm_cache_rollout_gap --episodes 8 --seed 100000

Per preset (and the default with sharing off): hit ratio of ``trim_greedy`` (the best online
baseline on every preset, see ``experiments/figures/edge_llm_cache_note.md``), ``belady``,
``belady_shared`` and ``rollout`` on the same held-out episodes, with the paired difference
rollout - trim_greedy and its 95% percentile-bootstrap CI. Writes a Markdown table and JSON
to ``--out`` (default ``experiments/figures/edge_llm_cache_rollout_gap.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mei_envs.baselines.evaluation import run_episodes
from mei_envs.experiments.stats import bootstrap_ci

ENV_ID = "mei_envs/EdgeLLMCache-v0"
POLICIES = ("trim_greedy", "belady", "belady_shared", "rollout")
SCENARIOS = {
    "default": {},
    "adapter_heavy": {"preset": "adapter_heavy"},
    "quantised": {"preset": "quantised"},
    "fast_drift": {"preset": "fast_drift"},
    "small_cache": {"preset": "small_cache"},
    "default, sharing off": {"sharing": False},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    default_out = Path("experiments/figures/edge_llm_cache_rollout_gap")
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args(argv)
    results: dict[str, dict] = {}
    lines = [
        f"Hit ratio (%) on {args.episodes} held-out episodes (seeds {args.seed}..."
        f"{args.seed + args.episodes - 1}, 1000 requests each); rollout horizon {args.horizon} "
        "decisions. Command: `python -m mei_envs.experiments.edge_llm_cache_rollout_gap "
        f"--episodes {args.episodes} --seed {args.seed} --horizon {args.horizon}`.",
        "",
        "| scenario | trim_greedy | belady | belady_shared | rollout | rollout - trim_greedy "
        "[95% CI] | rollout s/episode |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.scenarios:
        cfg = SCENARIOS[name]
        hits, secs = {}, 0.0
        for pol in POLICIES:
            params = {"horizon": args.horizon} if pol == "rollout" else None
            t0 = time.perf_counter()
            res = run_episodes(
                ENV_ID,
                pol,
                episodes=args.episodes,
                seed=args.seed,
                env_config=cfg,
                policy_params=params,
            )
            if pol == "rollout":
                secs = (time.perf_counter() - t0) / args.episodes
            hits[pol] = 100.0 * res.metrics["hit_ratio"]
        diff = hits["rollout"] - hits["trim_greedy"]
        lo, hi = bootstrap_ci(diff, np.random.default_rng(0))
        results[name] = {p: v.tolist() for p, v in hits.items()} | {
            "rollout_minus_trim_greedy": [float(diff.mean()), float(lo), float(hi)],
            "rollout_s_per_episode": secs,
        }
        row = " | ".join(f"{hits[p].mean():.1f}" for p in POLICIES)
        lines.append(f"| {name} | {row} | {diff.mean():+.1f} [{lo:+.1f}, {hi:+.1f}] | {secs:.0f} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
