"""Agents vs one reference policy on the same episodes, from compare run folders.

    python -m mei_envs.experiments.edge_llm_cache_hint_table [LABEL=]RUN_DIR ... \
        [--ref knapsack_greedy] [--out PATH.md]

For tuning runs on validation episodes, which hold no ``lru``/``belady_shared`` rows (what
:mod:`mei_envs.experiments.edge_llm_cache_gap` needs): per policy (agents per training seed,
labelled ``LABEL/seedN``) the mean hit ratio and byte hit ratio with 95% bootstrap CIs and the
paired per-episode hit-ratio difference to ``--ref`` with its 95% CI. Baselines are read from
any of the runs (first one wins); every policy must cover the reference's episodes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from mei_envs.experiments.io import emit_text
from mei_envs.experiments.stats import bootstrap_ci


def load(specs: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    for spec in specs:
        name, _, d = spec.rpartition("=")
        with open(Path(d) / "episodes.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        seen: set[str] = set()
        for row in rows:
            label = row["policy"]
            if row["kind"] == "agent":
                label = f"{name or row['algo']}/seed{row['train_seed']}"
            elif label in out and label not in seen:
                continue  # a baseline already read from an earlier run
            seen.add(label)
            out.setdefault(label, {})[int(row["episode_seed"])] = {
                k: float(row[k]) for k in ("hit_ratio", "byte_hit_ratio")
            }
    return out


def table(data: dict[str, dict[int, dict[str, float]]], ref: str, rng: np.random.Generator) -> str:
    if ref not in data:
        raise ValueError(f"--ref {ref!r}: not in the runs; policies: {sorted(data)}")
    seeds = sorted(data[ref])
    for label, rows in data.items():
        if not set(seeds) <= set(rows):
            raise ValueError(f"{label}: misses some of {ref}'s episodes")

    def arr(label: str, metric: str) -> np.ndarray:
        return np.array([data[label][s][metric] for s in seeds])

    lines = [
        f"Episodes: {len(seeds)} (seeds {seeds[0]}..{seeds[-1]}); 95% bootstrap CIs; the last "
        f"column is the paired per-episode difference to `{ref}`.",
        "",
        f"| policy | hit ratio % | byte hit ratio % | hit ratio - {ref} (paired, points) |",
        "|---|---|---|---|",
    ]
    for label in data:
        hit, byte = arr(label, "hit_ratio"), arr(label, "byte_hit_ratio")
        diff = hit - arr(ref, "hit_ratio")
        h, b, v = (
            (x.mean(), *bootstrap_ci(x, rng)) for x in (hit, byte, diff)
        )  # fmt: skip
        lines.append(
            f"| {label} | {100 * h[0]:.1f} [{100 * h[1]:.1f}, {100 * h[2]:.1f}] | "
            f"{100 * b[0]:.1f} [{100 * b[1]:.1f}, {100 * b[2]:.1f}] | "
            f"{100 * v[0]:+.2f} [{100 * v[1]:+.2f}, {100 * v[2]:+.2f}] |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--ref", default="knapsack_greedy")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    text = table(load(args.run_dirs), args.ref, np.random.default_rng(0))
    return emit_text(text, args.out)


if __name__ == "__main__":
    main()
