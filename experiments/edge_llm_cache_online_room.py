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
* ``belady_shared`` (offline; the best-set rule over the true future requests) and
  ``belady_bytes`` (offline; the ``belady_shared`` of sessions 1-5), and the issue's target
  for a learned policy, half of the gap from the best online heuristic to ``belady_shared``,
  next to the online bound (a target above the bound is out of reach for every online policy).

On presets with periodic demand (``phase_count > 1``, e.g. ``diurnal``) the clock-aware
online heuristic ``phase_knapsack`` is run too and shown in its own columns, beside the
clock-blind best online rule.

``--from-baselines PATH.json`` takes the policies' per-episode hit ratios from an
``edge_llm_cache_baselines`` run with the same ``--seed`` and at least ``--episodes``
episodes (its first episodes are these; the policies are deterministic, so the numbers are
the same) and computes only the bound.

Differences to ``trim_greedy`` are paired per episode with 95% percentile-bootstrap CIs
(``mei_envs.experiments.stats.bootstrap_ci``). Writes ``--out``.md/.json (default
``experiments/figures/edge_llm_cache_online_room``).

Agents against the same episodes (no re-run of the policies; reads ``--out``.json):

    python -m mei_envs.experiments.edge_llm_cache_online_room --preset-agents fast_drift \
        RUN_DIR [RUN_DIR ...]

prints, per training seed and pooled, the agent's hit ratio on the JSON's episodes (the
compare runs must have evaluated them, e.g. held-out seeds from 100000) and its paired
differences to ``trim_greedy``, to the best online heuristic and to the online bound, and the
share of the room closed, ``(agent - best online) / (bound - best online)`` and
``(agent - trim_greedy) / (bound - trim_greedy)`` (on the means).
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
    "belady_bytes",
)
PRESETS = ("default", "adapter_heavy", "quantised", "fast_drift", "small_cache", "diurnal")
# Clock-aware online heuristics, run on presets with periodic demand (phase_count > 1) and
# reported beside the clock-blind best online rule (not folded into it).
CLOCK_POLICIES = ("phase_knapsack",)


def _phased(preset: str) -> bool:
    from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig

    return EdgeLLMCacheConfig.from_dict(preset=preset).phase_count > 1


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
    if np.isnan(diff).any():  # a policy the reused baselines run did not reach
        return "—"
    lo, hi = bootstrap_ci(diff, np.random.default_rng(0))
    return f"{diff.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]"


def agent_rows(preset: str, run_dirs: list[str], json_path: Path) -> str:
    """The agents of ``run_dirs`` on the episodes of ``json_path``'s ``preset`` row.

    Raises:
        ValueError: a run folder whose ``config.yml`` names another env or env config than
            ``preset``'s, or agents not evaluated on the JSON's episodes.
    """
    from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig
    from mei_envs.experiments.edge_llm_cache_gap import load, run_scenario

    want = (ENV_ID, EdgeLLMCacheConfig.from_dict({"preset": preset}).to_dict())
    for d in run_dirs:
        got = run_scenario(d.rpartition("=")[2])
        if got is not None and got != want:
            raise ValueError(
                f"{d}: evaluated on {got[0]} {got[1]}, not on preset {preset!r} {want[1]}"
            )

    room = json.loads(json_path.read_text())[preset]
    seed0 = int(json.loads(json_path.read_text()).get("_seed", 100_000))
    n = len(room["trim_greedy"])
    seeds = list(range(seed0, seed0 + n))
    data = load(run_dirs)
    agents = sorted(k for k in data if "/" in k)
    missing = [a for a in agents if not set(seeds) <= set(data[a])]
    if missing:
        raise ValueError(f"{missing}: not evaluated on episode seeds {seeds[0]}..{seeds[-1]}")
    hits = {a: np.array([100.0 * data[a][s]["hit_ratio"] for s in seeds]) for a in agents}
    labels = sorted({a.split("/")[0] for a in agents})
    for lab in labels:
        hits[f"{lab}/all"] = np.mean([hits[a] for a in agents if a.startswith(lab + "/")], axis=0)
    ref = {k: np.asarray(v) for k, v in room.items() if k != "best_online"}
    best = room["best_online"]
    lines = [
        f"Agents on {preset}, episodes {seeds[0]}..{seeds[-1]} (best online: {best}).",
        "",
        f"| agent | hit ratio % | - trim_greedy | - {best} | - online bound | room above {best} "
        "closed | room above trim_greedy closed |",
        "|---|---|---|---|---|---|---|",
    ]
    bound, trim = ref["online bound"].mean(), ref["trim_greedy"].mean()
    for a, h in hits.items():
        closed = (h.mean() - ref[best].mean()) / (bound - ref[best].mean())
        closed_trim = (h.mean() - trim) / (bound - trim)
        lines.append(
            f"| {a} | {h.mean():.1f} | {_fmt(h - ref['trim_greedy'])} | {_fmt(h - ref[best])} | "
            f"{_fmt(h - ref['online bound'])} | {100 * closed:.0f}% | {100 * closed_trim:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument(
        "--out", type=Path, default=Path("experiments/figures/edge_llm_cache_online_room")
    )
    ap.add_argument(
        "--from-baselines",
        type=Path,
        help="reuse the per-episode hit ratios of an edge_llm_cache_baselines JSON",
    )
    ap.add_argument(
        "--preset-agents",
        nargs="+",
        metavar=("PRESET", "RUN_DIR"),
        help="print agents' rows against the stored JSON instead of running the policies",
    )
    args = ap.parse_args(argv)
    if args.preset_agents:
        preset, *runs = args.preset_agents
        print(agent_rows(preset, runs, args.out.with_suffix(".json")))
        return
    cmd = (
        "python -m mei_envs.experiments.edge_llm_cache_online_room "
        f"--episodes {args.episodes} --seed {args.seed} --presets {' '.join(args.presets)}"
    )
    reused = None
    if args.from_baselines:
        reused = json.loads(args.from_baselines.read_text())
        if reused.get("seed") != args.seed or reused.get("episodes", 0) < args.episodes:
            raise SystemExit(
                f"--from-baselines {args.from_baselines}: seed {reused.get('seed')}, "
                f"{reused.get('episodes')} episodes; needs seed {args.seed} and >= "
                f"{args.episodes} episodes"
            )
        cmd += f" --from-baselines {args.from_baselines}"
    lines = [
        f"Hit ratio (%) on {args.episodes} held-out episodes per preset (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}, 1000 requests each). Command: `{cmd}`. Paired "
        "differences in points with 95% bootstrap CIs; best online = the better of "
        "trim_greedy and knapsack_greedy by mean.",
        "",
        "| preset | trim_greedy | knapsack_greedy | popularity_oracle | popularity_knapsack "
        "| online bound | belady_shared | belady_bytes | popularity_oracle - trim_greedy | "
        "popularity_knapsack - best online | bound - best online | belady_shared - best online "
        "| half-gap target (best online + half the gap to belady_shared) | target within the "
        "bound | clock-aware phase_knapsack (periodic demand only) | phase_knapsack - best "
        "online |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results: dict[str, dict] = {"_seed": args.seed}
    for preset in args.presets:
        t0 = time.perf_counter()
        pols = POLICIES + (CLOCK_POLICIES if _phased(preset) else ())
        if reused is not None:
            table = reused["scenarios"][preset]
            # A policy the reused run did not reach (e.g. one cut short) is shown as "—".
            hits = {
                pol: 100.0 * np.asarray(table[pol]["per_episode"]["hit_ratio"][: args.episodes])
                if pol in table
                else np.full(args.episodes, np.nan)
                for pol in pols
            }
        else:
            hits = {
                pol: 100.0
                * run_episodes(
                    ENV_ID,
                    pol,
                    episodes=args.episodes,
                    seed=args.seed,
                    env_config={"preset": preset},
                ).metrics["hit_ratio"]
                for pol in pols
            }
        hits["online bound"] = 100.0 * bound_per_episode(preset, args.episodes, args.seed)
        best = max(("trim_greedy", "knapsack_greedy"), key=lambda p: hits[p].mean())
        cols = [*POLICIES[:4], "online bound", "belady_shared", "belady_bytes"]
        row = " | ".join("—" if np.isnan(hits[p]).any() else f"{hits[p].mean():.1f}" for p in cols)
        diffs = [
            hits["popularity_oracle"] - hits["trim_greedy"],
            hits["popularity_knapsack"] - hits[best],
            hits["online bound"] - hits[best],
            hits["belady_shared"] - hits[best],
        ]
        target = hits[best].mean() + (hits["belady_shared"].mean() - hits[best].mean()) / 2
        within = "yes" if target <= hits["online bound"].mean() else "no"
        clock = "— | —"
        if "phase_knapsack" in hits:
            ph = hits["phase_knapsack"]
            clock = f"{ph.mean():.1f} | {_fmt(ph - hits[best])}"
        lines.append(
            f"| {preset} | {row} | "
            + " | ".join(_fmt(d) for d in diffs)
            + f" | {target:.1f} | {within} | {clock} |"
        )
        results[preset] = {p: v.tolist() for p, v in hits.items() if not np.isnan(v).any()} | {
            "best_online": best
        }
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
