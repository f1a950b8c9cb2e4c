"""Choose ``belady_shared``'s window, discount and re-solve period on validation episodes.

    python -m mei_envs.experiments.edge_llm_cache_belady_tune --episodes 10 --seed 200000 \
        --presets default fast_drift --windows 50 100 200 400 1000 --gammas 1 0.99 \
        --refresh 10

Runs ``belady_shared`` with every (window, gamma, refresh) of the grid on the same
validation episodes (seeds ``--seed``.., which must be disjoint from the held-out 100000..)
and prints, per preset, the mean hit ratio, its 95% bootstrap CI, the wall time per episode
and the knapsack solves per episode. Writes ``--out``.md/.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from mei_envs.baselines.edge_llm_cache import ENV_ID, BeladySharedPolicy
from mei_envs.experiments.stats import bootstrap_ci


def run(preset: str, params: dict, episodes: int, seed: int) -> dict:
    """Hit ratio per episode, seconds per episode and knapsack solves per episode."""
    env = gym.make(ENV_ID, preset=preset, info="lean")
    pol = BeladySharedPolicy(env, **params)
    hits = np.zeros(episodes)
    t0 = time.perf_counter()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        pol.reset(obs, info)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(pol.act(obs, info))
            done = term or trunc
        hits[i] = info["hit_ratio"]
    return {
        "hit_ratio": hits.tolist(),
        "s_per_episode": (time.perf_counter() - t0) / episodes,
        "solves_per_episode": pol.solves / episodes,
        "fallbacks_per_episode": pol.fallbacks / episodes,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--presets", nargs="+", default=["default", "fast_drift"])
    ap.add_argument("--windows", nargs="+", type=int, default=[50, 100, 200, 400, 1000])
    ap.add_argument("--gammas", nargs="+", type=float, default=[1.0, 0.99])
    ap.add_argument("--refresh", nargs="+", type=int, default=[10])
    ap.add_argument(
        "--out", type=Path, default=Path("experiments/figures/edge_llm_cache_belady_tune")
    )
    args = ap.parse_args(argv)
    if args.seed < 200_000:
        raise SystemExit(f"--seed {args.seed}: tune on validation seeds (>= 200000)")
    results: dict = {"seed": args.seed, "episodes": args.episodes, "runs": []}
    lines = [
        f"`belady_shared` on {args.episodes} validation episodes (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}); hit ratio % with 95% bootstrap CI.",
        "",
        "| preset | window | gamma | refresh | hit ratio % | s/episode | solves/episode | "
        "fallbacks/episode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for preset in args.presets:
        for w, g, k in itertools.product(args.windows, args.gammas, args.refresh):
            params = {"window": w, "gamma": g, "refresh": k}
            r = run(preset, params, args.episodes, args.seed)
            h = 100 * np.asarray(r["hit_ratio"])
            lo, hi = bootstrap_ci(h, rng)
            results["runs"].append({"preset": preset, **params, **r})
            lines.append(
                f"| {preset} | {w} | {g:g} | {k} | {h.mean():.1f} [{lo:.1f}, {hi:.1f}] | "
                f"{r['s_per_episode']:.2f} | {r['solves_per_episode']:.0f} | "
                f"{r['fallbacks_per_episode']:.1f} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
