"""Tune ``phase_knapsack``'s constants on validation episodes, then score the choice held out.

    python -m mei_envs.experiments.edge_llm_cache_phase_tune --preset diurnal \\
        --episodes 10 --seed 200000 --heldout 40 --heldout-seed 100000 \\
        --baselines-json experiments/figures/edge_llm_cache_diurnal_baselines_40.json \\
        --out experiments/figures/edge_llm_cache_diurnal_phase_tune

``phase_knapsack`` (``baselines/edge_llm_cache_phase.py``) has four constants set a priori:
the half-life of a regime's moving average, the weight of the clock-blind prior, the
look-ahead horizon and the re-solve period. This script searches them by coordinate descent
on validation episodes (seeds ``--seed``.., which must be disjoint from the held-out
100000..): starting from the defaults, each constant in turn takes every value of its grid
with the others fixed, and keeps the one with the best mean hit ratio (a tie keeps the
current value); ``--passes`` repeats the sweep. The chosen constants are then run on the
held-out episodes (seeds ``--heldout-seed``..), and, with ``--baselines-json`` (written by
``edge_llm_cache_baselines`` on the same held-out seeds), compared with the policies there by
paired differences with 95% bootstrap CIs. Writes ``--out``.md and ``--out``.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mei_envs.baselines.edge_llm_cache import ENV_ID
from mei_envs.baselines.edge_llm_cache_phase import (
    PHASE_HALF_LIFE,
    PHASE_HORIZON,
    PHASE_PRIOR,
    PHASE_REFRESH,
)
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.experiments.io import emit_text
from mei_envs.experiments.stats import bootstrap_ci

# The grids: around the a-priori defaults, from a short memory to a plain count (a half-life
# of 1e9 requests), from no prior to a strong one, from the current regime only to two
# regimes ahead of the diurnal preset's 125-request regimes.
GRIDS: dict[str, list[float]] = {
    "half_life": [50.0, 100.0, 200.0, 400.0, 1000.0, 1.0e9],
    "prior": [0.0, 10.0, 25.0, 50.0, 100.0, 200.0],
    "horizon": [1, 10, 25, 50, 100, 200],
    "refresh": [5, 10, 25, 50],
}
DEFAULTS: dict[str, float] = {
    "half_life": PHASE_HALF_LIFE,
    "prior": PHASE_PRIOR,
    "horizon": PHASE_HORIZON,
    "refresh": PHASE_REFRESH,
}
INT_PARAMS = ("horizon", "refresh")
# Held-out comparisons against these policies of the baselines JSON, when present.
COMPARE_WITH = ("knapsack_greedy", "phase_knapsack", "belady_shared", "popularity_knapsack")


def hit_ratios(cfg: dict, params: dict, episodes: int, seed: int) -> np.ndarray:
    """Per-episode hit ratio of ``phase_knapsack`` with ``params``."""
    res = run_episodes(
        ENV_ID, "phase_knapsack", episodes=episodes, seed=seed, env_config=cfg, policy_params=params
    )
    return res.metrics["hit_ratio"]


def coordinate_search(
    cfg: dict, episodes: int, seed: int, grids: dict[str, list], passes: int, log=print
) -> tuple[dict, list[dict]]:
    """The constants with the best mean validation hit ratio, and every trial run."""
    best = dict(DEFAULTS)
    cache: dict[tuple, float] = {}
    trials: list[dict] = []

    def score(params: dict) -> float:
        key = tuple(sorted(params.items()))
        if key not in cache:
            t0 = time.perf_counter()
            cache[key] = float(hit_ratios(cfg, params, episodes, seed).mean())
            trials.append({"params": dict(params), "hit_ratio": cache[key]})
            log(f"  {params}: {100 * cache[key]:.2f}% ({time.perf_counter() - t0:.0f} s)")
        return cache[key]

    current = score(best)
    for _ in range(passes):
        changed = False
        for name, grid in grids.items():
            for value in grid:
                trial = {**best, name: value}
                s = score(trial)
                if s > current:
                    best, current, changed = trial, s, True
        if not changed:
            break
    return best, trials


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` in points with its 95% bootstrap CI."""
    d = 100.0 * (np.asarray(a) - np.asarray(b))
    lo, hi = bootstrap_ci(d, np.random.default_rng(seed))
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"# `phase_knapsack` tuned on `{out['preset']}` (EdgeLLMCache-v0)",
        "",
        f"Command: `{out['command']}` ({out['wall_s']:.0f} s, {out['date_utc']}).",
        "",
        f"Coordinate search on {out['episodes']} validation episodes (seeds {out['seed']}..): "
        f"{len(out['trials'])} settings. Defaults {out['defaults']}: "
        f"{100 * out['default_validation']:.2f}%; chosen {out['chosen']}: "
        f"{100 * out['chosen_validation']:.2f}%.",
        "",
        "| half_life | prior | horizon | refresh | validation hit ratio % |",
        "|---|---|---|---|---|",
    ]
    for t in sorted(out["trials"], key=lambda t: -t["hit_ratio"]):
        p = t["params"]
        lines.append(
            f"| {p['half_life']:g} | {p['prior']:g} | {p['horizon']:g} | {p['refresh']:g} | "
            f"{100 * t['hit_ratio']:.2f} |"
        )
    h = out.get("heldout")
    if h:
        lines += [
            "",
            f"Held out ({h['episodes']} episodes, seeds {h['seed']}..): tuned "
            f"{100 * h['mean']:.2f}% [{100 * h['lo']:.2f}, {100 * h['hi']:.2f}].",
            "",
            "| tuned - policy | policy's hit ratio % | difference [points, 95% CI] |",
            "|---|---|---|",
        ]
        for name, c in h.get("vs", {}).items():
            lines.append(
                f"| {name} | {c['policy_mean']:.2f} | "
                f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}] |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="diurnal")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="env config overrides (JSON values), e.g. requests_per_episode=200",
    )
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="replace one constant's grid",
    )
    ap.add_argument("--heldout", type=int, default=0, help="held-out episodes (0 = skip)")
    ap.add_argument("--heldout-seed", type=int, default=100_000)
    ap.add_argument("--baselines-json", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.seed < 200_000:
        raise SystemExit(f"--seed {args.seed}: tune on validation seeds (>= 200000)")
    if args.heldout and args.heldout_seed + args.heldout > args.seed:
        raise SystemExit("--heldout-seed: held-out seeds must stay below the validation seeds")
    if args.baselines_json and args.sets:
        raise SystemExit("--baselines-json: its episodes are the preset's own; drop --set")
    cfg: dict[str, Any] = {"preset": args.preset}
    for s in args.sets:
        key, _, value = s.partition("=")
        cfg[key] = json.loads(value)
    grids = {k: list(v) for k, v in GRIDS.items()}
    for g in args.grid:
        name, _, values = g.partition("=")
        if name not in grids:
            raise SystemExit(f"--grid {g!r}: name must be one of {sorted(grids)}")
        cast = int if name in INT_PARAMS else float
        grids[name] = [cast(float(v)) for v in values.split(",")]
    t0 = time.perf_counter()
    print(f"validation: {args.episodes} episodes from seed {args.seed}, config {cfg}")
    chosen, trials = coordinate_search(cfg, args.episodes, args.seed, grids, args.passes)
    by_key = {tuple(sorted(t["params"].items())): t["hit_ratio"] for t in trials}
    out: dict[str, Any] = {
        "preset": args.preset,
        "env_config": cfg,
        "episodes": args.episodes,
        "seed": args.seed,
        "defaults": DEFAULTS,
        "default_validation": by_key[tuple(sorted(DEFAULTS.items()))],
        "chosen": chosen,
        "chosen_validation": by_key[tuple(sorted(chosen.items()))],
        "trials": trials,
        "command": "python -m mei_envs.experiments.edge_llm_cache_phase_tune "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    if args.heldout:
        h = hit_ratios(cfg, chosen, args.heldout, args.heldout_seed)
        lo, hi = bootstrap_ci(h, np.random.default_rng(0))
        held: dict[str, Any] = {
            "episodes": args.heldout,
            "seed": args.heldout_seed,
            "mean": float(h.mean()),
            "lo": float(lo),
            "hi": float(hi),
            "per_episode": h.tolist(),
            "vs": {},
        }
        if args.baselines_json:
            data = json.loads(args.baselines_json.read_text())
            if data["seed"] != args.heldout_seed or data["episodes"] < args.heldout:
                raise SystemExit(
                    f"--baselines-json {args.baselines_json}: seeds {data['seed']}.. x "
                    f"{data['episodes']} do not cover the held-out episodes"
                )
            rows = data["scenarios"][args.preset]
            for name in COMPARE_WITH:
                if name in rows:
                    b = np.asarray(rows[name]["per_episode"]["hit_ratio"][: args.heldout])
                    held["vs"][name] = {**paired(h, b), "policy_mean": 100.0 * float(b.mean())}
        out["heldout"] = held
    out["wall_s"] = time.perf_counter() - t0
    out["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    emit_text(markdown(out), args.out.with_suffix(".md") if args.out else None)
    return out


if __name__ == "__main__":
    main()
