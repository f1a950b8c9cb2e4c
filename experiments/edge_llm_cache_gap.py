"""Agent vs baselines on EdgeLLMCache-v0 from a ``mei-envs compare`` run folder.

    python -m mei_envs.experiments.edge_llm_cache_gap [LABEL=]RUN_DIR ... [--out PATH.md]

Reads each run's ``episodes.csv`` (every policy on the same held-out episodes) and reports,
per policy (agents per training seed and pooled): hit ratio and byte hit ratio with 95%
bootstrap CIs, the share of the LRU-to-``belady_shared`` hit-ratio gap closed
(``(x - lru) / (belady_shared - lru)`` on the means), and the paired per-episode difference
to the best online heuristic with a 95% CI. Several run folders (e.g. one per training
seed) are merged; their held-out seeds must agree. Agents are labelled ``LABEL/seedN``
(``LABEL`` defaults to the algorithm) and ``LABEL/all`` pools the seeds of one label.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from mei_envs.experiments.stats import bootstrap_ci

ONLINE = ("random", "fifo", "lru", "lfu", "gdsf", "trim_greedy", "knapsack_greedy")
_SOURCES: dict[str, set[str]] = {}


def load(run_dirs: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """``{policy label: {episode seed: row}}``; agents are labelled ``LABEL/seedN``."""
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for spec in run_dirs:
        name, _, d = spec.rpartition("=")
        with open(Path(d) / "episodes.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                label = row["policy"]
                if row["kind"] == "agent":
                    label = f"{name or row['algo']}/seed{row['train_seed']}"
                    if label in out and d not in _SOURCES.setdefault(label, {d}):
                        raise ValueError(f"{label}: given twice; name the runs LABEL=RUN_DIR")
                ep = int(row["episode_seed"])
                out[label][ep] = {k: float(row[k]) for k in ("hit_ratio", "byte_hit_ratio")}
    return out


def table(data: dict, rng: np.random.Generator) -> tuple[list[dict], str]:
    seeds = sorted(data["lru"])
    for label, rows in data.items():
        if sorted(rows) != seeds:
            raise ValueError(f"{label}: held-out episodes differ from lru's")

    def arr(label: str, metric: str) -> np.ndarray:
        return np.array([data[label][s][metric] for s in seeds])

    agents = sorted(k for k in data if "/" in k)
    groups = {k: [k] for k in data}
    labels = sorted({a.split("/")[0] for a in agents})
    for lab in labels:
        groups[f"{lab}/all"] = [a for a in agents if a.startswith(lab + "/")]
    lru = arr("lru", "hit_ratio").mean()
    bs = arr("belady_shared", "hit_ratio").mean()
    best = max((k for k in ONLINE if k in data), key=lambda k: arr(k, "hit_ratio").mean())
    rows = []
    for label, members in groups.items():
        hit = np.mean([arr(m, "hit_ratio") for m in members], axis=0)
        byte = np.mean([arr(m, "byte_hit_ratio") for m in members], axis=0)
        diff = hit - arr(best, "hit_ratio")
        rows.append(
            {
                "policy": label,
                "hit": (hit.mean(), *bootstrap_ci(hit, rng)),
                "byte": (byte.mean(), *bootstrap_ci(byte, rng)),
                "gap_closed": (hit.mean() - lru) / (bs - lru),
                "vs_best": (diff.mean(), *bootstrap_ci(diff, rng)),
            }
        )
    lines = [
        f"Held-out episodes: {len(seeds)} (seeds {seeds[0]}..{seeds[-1]}); best online "
        f"heuristic by hit ratio: `{best}`. Gap closed = (x - lru) / (belady_shared - lru) "
        "on mean hit ratios; agents' `all` rows average the training seeds per episode.",
        "",
        "| policy | hit ratio % | byte hit ratio % | LRU-to-belady_shared gap closed | "
        f"hit ratio - {best} (paired, points) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        h, b, v = r["hit"], r["byte"], r["vs_best"]
        lines.append(
            f"| {r['policy']} | {100 * h[0]:.1f} [{100 * h[1]:.1f}, {100 * h[2]:.1f}] | "
            f"{100 * b[0]:.1f} [{100 * b[1]:.1f}, {100 * b[2]:.1f}] | "
            f"{100 * r['gap_closed']:.0f}% | {100 * v[0]:+.1f} [{100 * v[1]:+.1f}, "
            f"{100 * v[2]:+.1f}] |"
        )
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    _, text = table(load(args.run_dirs), np.random.default_rng(0))
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
