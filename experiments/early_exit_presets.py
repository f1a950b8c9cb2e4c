"""Per scenario preset of EarlyExitUpload: the DP oracle against every tuned baseline.

    python -m mei_envs.experiments.early_exit_presets [--presets default vehicular ...]
        [--episodes 500] [--seed 100000] [--out experiments/figures/early_exit_presets.md]
        [--ppo PRESET=RUN_DIR ...]

For each preset (``EarlyExitUploadConfig.PRESETS``) one table:

* every registered baseline, the threshold ones tuned on training seeds (exactly, by policy
  evaluation over the DP's state space, in ``fsmc`` mode; common random numbers otherwise);
* its exact expected cost (``fsmc`` mode: the DP's recursion with the policy fixed) and its
  mean return on held-out episodes ``seed .. seed + episodes - 1`` (the same episodes, hence
  the same exit and channel paths, for every policy);
* the oracle's margin over the best heuristic (the one with the best held-out mean): the
  mean of the paired per-episode differences, relative to the heuristic's cost, with a 95%
  CI (normal approximation of the paired mean over >= 500 episodes);
* with ``--ppo PRESET=RUN_DIR`` (a finished ``mei-envs compare --config
  experiments/configs/early_exit_<preset>.yml`` folder on the same held-out seeds), PPO's
  gap to the oracle, from the run's ``episodes.csv`` (mean over its training seeds).

The markdown goes to ``--out``; ``--json`` prints the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mei_envs.baselines.early_exit import (
    ENV_ID,
    BacklogThresholdPolicy,
    SNRThresholdPolicy,
    evaluate_thresholds,
    solve_dp,
    threshold_grid,
)
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.envs.early_exit_upload import EarlyExitUploadConfig, EarlyExitUploadEnv

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def tuned_thresholds(cfg: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """Tuned threshold of each threshold baseline and its exact expected return (fsmc)."""
    env = EarlyExitUploadEnv(config=cfg)
    exact = env.config.channel == "fsmc"
    out = {}
    for kind in ("snr_threshold", "backlog_threshold"):
        grid = threshold_grid(env, kind)
        scores = evaluate_thresholds(cfg, kind, grid)
        best = int(np.argmax(scores))
        out[kind] = (float(grid[best]), float(scores[best]) if exact else None)
    return out


def exact_value(env: EarlyExitUploadEnv, name: str, threshold: float | None) -> float | None:
    """Exact expected return of a policy in fsmc mode (None in gauss_markov mode)."""
    if env.config.channel != "fsmc":
        return None
    m = env.model
    fr = env.config.upload_fractions
    if name == "dp_oracle":
        return -solve_dp(m).initial_value
    if name == "eager":
        return -solve_dp(m, policy=np.int64(fr.index(1.0))).initial_value
    if name == "lazy":
        return -solve_dp(m, policy=np.int64(fr.index(0.0))).initial_value
    cls = SNRThresholdPolicy if name == "snr_threshold" else BacklogThresholdPolicy
    return -solve_dp(m, policy=cls(env, threshold).action_table(m)).initial_value


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95% CI (normal approximation)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    half = Z95 * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def ppo_returns(run_dir: Path, seeds: list[int]) -> np.ndarray:
    """Per held-out episode, PPO's return averaged over its training seeds."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    with (run_dir / "episodes.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["policy"] == "ppo":
                by_seed[int(row["episode_seed"])].append(float(row["return"]))
    missing = [s for s in seeds if s not in by_seed]
    if missing:
        raise ValueError(f"{run_dir}: no PPO episodes for held-out seeds {missing[:5]}...")
    return np.array([np.mean(by_seed[s]) for s in seeds])


def preset_table(
    preset: str, episodes: int, seed: int, ppo_dir: Path | None = None
) -> dict[str, Any]:
    cfg = {"preset": preset}
    env = EarlyExitUploadEnv(config=cfg)
    t0 = time.time()
    tuned = tuned_thresholds(cfg)
    rows = []
    returns = {}
    for name in ("dp_oracle", "eager", "lazy", "snr_threshold", "backlog_threshold"):
        thr = tuned[name][0] if name in tuned else None
        params = {}
        if name == "snr_threshold":
            params = {"threshold_db": thr}
        elif name == "backlog_threshold":
            params = {"threshold": int(thr)}
        res = run_episodes(
            ENV_ID, name, episodes=episodes, seed=seed, env_config=cfg, policy_params=params
        )
        returns[name] = res.returns
        rows.append(
            {
                "policy": name,
                "threshold": thr,
                "exact_return": exact_value(env, name, thr),
                "mean_return": float(res.returns.mean()),
                "ci_half": float(Z95 * res.returns.std(ddof=1) / math.sqrt(episodes)),
            }
        )
    heur = [r for r in rows if r["policy"] != "dp_oracle"]
    best = max(heur, key=lambda r: r["mean_return"])
    oracle = returns["dp_oracle"]
    diff, lo, hi = paired(oracle, returns[best["policy"]])
    scale = abs(float(oracle.mean()))  # margins relative to the oracle's cost
    out = {
        "preset": preset,
        "config": EarlyExitUploadConfig.PRESETS[preset],
        "rows": rows,
        "best_heuristic": best["policy"],
        "margin": diff / scale,
        "margin_ci": (lo / scale, hi / scale),
        "exact_margin": None,
        "episodes": episodes,
        "seed": seed,
        "seconds": time.time() - t0,
    }
    exact_best = max(
        (r for r in heur if r["exact_return"] is not None),
        default=None,
        key=lambda r: r["exact_return"],
    )
    if exact_best is not None:
        ex_oracle = rows[0]["exact_return"]
        out["exact_margin"] = (ex_oracle - exact_best["exact_return"]) / abs(ex_oracle)
    if ppo_dir is not None:
        ppo = ppo_returns(ppo_dir, list(range(seed, seed + episodes)))
        d, plo, phi = paired(oracle, ppo)
        out["ppo"] = {
            "run_dir": str(ppo_dir),
            "mean_return": float(ppo.mean()),
            "gap": d / scale,
            "gap_ci": (plo / scale, phi / scale),
        }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(tables: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# EarlyExitUpload-v1: DP oracle vs tuned heuristics per scenario preset",
        "",
        f"Produced by `{command}`. Returns are negative costs (higher is better). "
        "`exact` is the policy's exact expected return (fsmc mode: the DP's recursion with "
        "the policy fixed); `held-out` is the mean over the same held-out episodes for every "
        "policy (+- 95% CI half-width). The margin is the oracle's paired advantage over the "
        "best heuristic (best held-out mean), relative to the oracle's cost: how much more "
        "the best tuned heuristic costs than the oracle.",
        "",
        "| preset | best tuned heuristic | oracle margin (held-out, 95% CI) | exact margin "
        "| PPO gap to oracle |",
        "|---|---|---|---|---|",
    ]
    for t in tables:
        lo, hi = t["margin_ci"]
        ppo = t.get("ppo")
        ppo_s = (
            f"{_pct(ppo['gap'])} [{_pct(ppo['gap_ci'][0])}, {_pct(ppo['gap_ci'][1])}]"
            if ppo
            else "not run"
        )
        lines.append(
            f"| {t['preset']} | {t['best_heuristic']} | {_pct(t['margin'])} "
            f"[{_pct(lo)}, {_pct(hi)}] | {_pct(t['exact_margin'])} | {ppo_s} |"
        )
    for t in tables:
        lines += [
            "",
            f"## {t['preset']}",
            "",
            f"Config: `{json.dumps(t['config'])}`; {t['episodes']} held-out episodes from seed "
            f"{t['seed']}.",
            "",
            "| policy | tuned threshold | exact return | held-out return |",
            "|---|---|---|---|",
        ]
        for r in t["rows"]:
            thr = "-" if r["threshold"] is None else f"{r['threshold']:.3g}"
            lines.append(
                f"| {r['policy']} | {thr} | {_num(r['exact_return'])} | "
                f"{r['mean_return']:.2f} +- {r['ci_half']:.2f} |"
            )
        if t.get("ppo"):
            p = t["ppo"]
            lines.append(f"| ppo (3 seeds, `{p['run_dir']}`) | - | - | {p['mean_return']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--presets",
        nargs="*",
        default=list(EarlyExitUploadConfig.PRESETS),
        help="presets to run (default: all)",
    )
    ap.add_argument("--episodes", type=int, default=500, help="held-out episodes per policy")
    ap.add_argument(
        "--seed",
        type=int,
        default=100_000,
        help="first held-out episode seed "
        "(mei-envs compare's eval_seed, so PPO runs pair episode by episode)",
    )
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write")
    ap.add_argument(
        "--ppo",
        action="append",
        default=[],
        metavar="PRESET=RUN_DIR",
        help="a finished `mei-envs compare` run folder of that preset",
    )
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.presets) - set(EarlyExitUploadConfig.PRESETS))
    if unknown:
        ap.error(f"--presets {unknown}: unknown; known: {list(EarlyExitUploadConfig.PRESETS)}")
    ppo_dirs = {}
    for item in args.ppo:
        name, _, path = item.partition("=")
        if name not in EarlyExitUploadConfig.PRESETS or not path:
            ap.error(f"--ppo {item!r}: expected PRESET=RUN_DIR with a known preset")
        ppo_dirs[name] = Path(path)
    tables = []
    for name in args.presets:
        t = preset_table(name, args.episodes, args.seed, ppo_dirs.get(name))
        tables.append(t)
        print(
            f"{name:<22} best={t['best_heuristic']:<18} margin={_pct(t['margin'])} "
            f"[{_pct(t['margin_ci'][0])}, {_pct(t['margin_ci'][1])}] "
            f"exact={_pct(t['exact_margin'])} ({t['seconds']:.0f} s)",
            flush=True,
        )
    given = sys.argv[1:] if argv is None else argv
    command = "python -m mei_envs.experiments.early_exit_presets " + " ".join(given)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(tables, command.strip()))
    if args.json:
        print(json.dumps(tables, indent=2, default=float))
    return tables


if __name__ == "__main__":
    main()
