"""Agent vs baselines on EdgeLLMCache-v0 from ``mei-envs compare`` run folders.

    python -m mei_envs.experiments.edge_llm_cache_gap [LABEL=]RUN_DIR ... [--out PATH.md]
        [--baselines-from RUN_DIR]
    python -m mei_envs.experiments.edge_llm_cache_gap --evaluate CONFIG.yml [--set KEY=VALUE]
        [--policies NAME ...] [--run-name NAME]

Reads each run's ``episodes.csv`` (every policy on the same held-out episodes) and reports,
per policy (agents per training seed and pooled): hit ratio and byte hit ratio with 95%
bootstrap CIs, the share of the LRU-to-``belady_shared`` hit-ratio gap closed
(``(x - lru) / (belady_shared - lru)`` on the means), and the paired per-episode difference
to the best online heuristic with a 95% CI. Several run folders (e.g. one per training
seed) are merged; their held-out seeds must agree, and so must their env and resolved env
config (read from each folder's ``config.yml`` or ``evaluation.yml``). Agents are labelled
``LABEL/seedN`` (``LABEL`` defaults to the algorithm) and ``LABEL/all`` pools the seeds of one
label.
A baseline found in several folders must have the same value on every episode there, or the
merge stops; ``--baselines-from RUN_DIR`` (repeatable) takes every baseline row from those
folders only (e.g. after a baseline changed) and the agents from the others. ``--episodes N``
restricts the table to the first N held-out seeds (for policies evaluated on fewer episodes).
``--baselines-json PATH.json SCENARIO`` takes every baseline row from an
``edge_llm_cache_baselines`` run's JSON instead (its per-episode values of that scenario,
episodes seeded from its ``seed``) and the agents from the run folders; repeat it to join runs
on other episode seeds (e.g. 100000..100039 and 100040..100099): a policy's rows are the union,
a seed found in two files must have the same values there, and a policy missing from one file
is left out.

``--evaluate CONFIG.yml`` runs no training: it evaluates the config's baselines (or
``--policies``) on its held-out episodes (``eval_episodes`` seeded from ``eval_seed``) and
writes a run folder ``{out_dir}/{env}__{run_name}__{time}/`` with ``episodes.csv`` in
``mei-envs compare``'s format, ``evaluation.yml`` (what was run) and ``COMPLETE``, which the
table mode merges with agents' run folders. ``--set`` overrides config keys as in
``mei-envs compare`` (e.g. ``--set eval_episodes=30``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mei_envs.experiments.io import emit_text
from mei_envs.experiments.stats import bootstrap_ci

ONLINE = ("random", "fifo", "lru", "lfu", "gdsf", "trim_greedy", "knapsack_greedy")
# A clock-aware online heuristic (periodic demand): when present, a column of paired
# differences to it follows the one to the best clock-blind heuristic (ONLINE).
CLOCK = "phase_knapsack"
METRICS = ("hit_ratio", "byte_hit_ratio")
_KIND_ORDER = {"heuristic": 0, "oracle": 1, "agent": 2}


def load(
    run_dirs: list[str], baselines_from: list[str] | None = None
) -> dict[str, dict[int, dict[str, float]]]:
    """``{policy label: {episode seed: row}}``; see :func:`load_with_kinds`."""
    return load_with_kinds(run_dirs, baselines_from)[0]


def load_with_kinds(
    run_dirs: list[str], baselines_from: list[str] | None = None
) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, str]]:
    """``({policy label: {episode seed: row}}, {policy label: kind})``.

    Agents are labelled ``LABEL/seedN``. With ``baselines_from`` (folders), baseline rows are
    read from those folders only (agent rows from every folder).

    Raises:
        ValueError: an agent label given by two folders, a baseline whose values differ
            between folders on an episode, or folders evaluated on different env configs
            (from their ``config.yml`` / ``evaluation.yml``, see :func:`check_same_scenario`).
    """
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    kinds: dict[str, str] = {}
    sources: dict[str, str] = {}
    specs = list(run_dirs) + [f"={d}" for d in baselines_from or []]
    check_same_scenario([spec.rpartition("=")[2] for spec in specs])
    for i, spec in enumerate(specs):
        name, _, d = spec.rpartition("=")
        only_agents = bool(baselines_from) and i < len(run_dirs)
        with open(Path(d) / "episodes.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                label = row["policy"]
                if row["kind"] == "agent":
                    label = f"{name or row['algo']}/seed{row['train_seed']}"
                    if sources.setdefault(label, d) != d:
                        raise ValueError(f"{label}: given twice; name the runs LABEL=RUN_DIR")
                elif only_agents:
                    continue
                ep = int(row["episode_seed"])
                values = {k: float(row[k]) for k in METRICS}
                old = out[label].get(ep)
                if old is not None and old != values:
                    raise ValueError(
                        f"{label}: episode {ep} differs between {sources[label]} and {d} "
                        f"({old} vs {values}); pick one with --baselines-from RUN_DIR"
                    )
                sources.setdefault(label, d)
                kinds[label] = row["kind"]
                out[label][ep] = values
    return out, kinds


def run_scenario(run_dir: str | Path) -> tuple[str, dict] | None:
    """``(env id, resolved env config)`` a run folder was evaluated on, or None if unknown.

    Read from ``config.yml`` (``mei-envs compare``) or ``evaluation.yml`` (``--evaluate``);
    the env config is resolved through the env's config class (preset values applied), so
    ``{}`` and ``{preset: default}`` compare equal. A folder with neither file (a bare
    ``episodes.csv``) gives None.
    """
    import gymnasium as gym
    import yaml

    from mei_envs.registration import env_config_class

    for name in ("config.yml", "evaluation.yml"):
        path = Path(run_dir) / name
        if path.is_file():
            info = yaml.safe_load(path.read_text()) or {}
            env_id, env_config = info.get("env_id"), dict(info.get("env_config") or {})
            if env_id is None:
                return None
            try:
                cfg_cls = env_config_class(env_id)
            except gym.error.Error:  # an env id no longer registered: compare as written
                cfg_cls = None
            resolved = cfg_cls.from_dict(env_config).to_dict() if cfg_cls else env_config
            return env_id, resolved
    return None


def check_same_scenario(run_dirs: list[str]) -> None:
    """Refuse to merge run folders evaluated on different envs or env configs.

    Raises:
        ValueError: naming both folders and the config fields that differ.
    """
    first: tuple[str, tuple[str, dict]] | None = None
    for d in run_dirs:
        scenario = run_scenario(d)
        if scenario is None:
            continue
        if first is None:
            first = (d, scenario)
            continue
        (d0, (env0, cfg0)), (env1, cfg1) = first, scenario
        if env0 != env1:
            raise ValueError(f"{d}: env {env1!r} differs from {d0}'s {env0!r}")
        keys = sorted(set(cfg0) | set(cfg1))
        diff = {k: (cfg0.get(k), cfg1.get(k)) for k in keys if cfg0.get(k) != cfg1.get(k)}
        if diff:
            fields = ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{d}: env config differs from {d0}'s ({fields})")


def load_baselines_json(path: str | Path, scenario: str) -> tuple[dict, dict[str, str]]:
    """Baseline rows ``({policy: {episode seed: row}}, {policy: kind})`` from an
    ``edge_llm_cache_baselines`` JSON (its per-episode values of ``scenario``; the
    policies are deterministic, so they equal a fresh evaluation on the same seeds)."""
    import json

    from mei_envs.baselines.registry import list_policies

    doc = json.loads(Path(path).read_text())
    if scenario not in doc.get("scenarios", {}):
        raise ValueError(f"{path}: no scenario {scenario!r} (has {sorted(doc['scenarios'])})")
    seed0 = int(doc["seed"])
    env_id = "mei_envs/EdgeLLMCache-v0"
    registered = {spec.name: spec.kind for spec in list_policies(env_id)[env_id]}
    data: dict[str, dict[int, dict[str, float]]] = {}
    kinds: dict[str, str] = {}
    for name, row in doc["scenarios"][scenario].items():
        per = row["per_episode"]
        data[name] = {
            seed0 + i: {m: float(per[m][i]) for m in METRICS} for i in range(len(per["hit_ratio"]))
        }
        kinds[name] = registered.get(name, "")
    return data, kinds


def join_baselines_json(sources: list[list[str]]) -> tuple[dict, dict[str, str]]:
    """:func:`load_baselines_json` of every ``(path, scenario)``, joined by episode seed.
    Policies missing from one of the files are left out (named on stderr), so every row
    covers the same episodes.

    Raises:
        ValueError: one episode seed has different values of one policy in two files.
    """
    data: dict[str, dict[int, dict[str, float]]] = {}
    kinds: dict[str, str] = {}
    seen: list[set[str]] = []
    for path, scenario in sources:
        part, part_kinds = load_baselines_json(path, scenario)
        kinds |= part_kinds
        for name, rows in part.items():
            have = data.setdefault(name, {})
            for seed, row in rows.items():
                if seed in have and have[seed] != row:
                    raise ValueError(
                        f"--baselines-json {path} {scenario}: {name} on episode seed {seed} "
                        f"is {row}, but an earlier file has {have[seed]}"
                    )
                have[seed] = row
        seen.append(set(part))
    common = set.intersection(*seen)
    if set(data) - common:
        print(f"--baselines-json: left out (not in every file): {sorted(set(data) - common)}",
              file=sys.stderr)  # fmt: skip
    return {k: v for k, v in data.items() if k in common}, {k: kinds[k] for k in common}


def table(
    data: dict,
    rng: np.random.Generator,
    kinds: dict[str, str] | None = None,
    episodes: int | None = None,
    versus: list[str] | None = None,
):
    """``(rows, markdown)``: one row per policy, agents per seed and pooled (``LABEL/all``).

    ``episodes``: use only the first ``episodes`` held-out seeds (every policy must have
    them); default: all, and every policy must have the same ones. ``versus``: more
    references (a baseline, an agent seed ``LABEL/seedN`` or pooled ``LABEL/all``), each a
    column of paired per-episode differences to it (after the clock-aware one).

    Raises:
        ValueError: a policy's held-out episodes differ from ``lru``'s (or lack one of the
            first ``episodes``), or ``lru`` is missing. Without ``belady_shared`` rows (e.g.
            on more episodes than it was run on) the gap-closed column is ``-``.
    """
    if "lru" not in data:
        raise ValueError("no 'lru' rows: the table needs lru")
    kinds = dict(kinds or {})
    seeds = sorted(data["lru"])
    if episodes is not None:
        if not 1 <= episodes <= len(seeds):
            raise ValueError(f"episodes={episodes}: must be in 1..{len(seeds)} (lru's episodes)")
        seeds = seeds[:episodes]
    for label, rows in data.items():
        have = sorted(rows) if episodes is None else [s for s in seeds if s in rows]
        if have != seeds:
            raise ValueError(f"{label}: held-out episodes differ from lru's")

    def arr(label: str, metric: str) -> np.ndarray:
        return np.array([data[label][s][metric] for s in seeds])

    agents = sorted(k for k in data if "/" in k)
    for a in agents:
        kinds[a] = "agent"
    order = sorted(
        (k for k in data if "/" not in k), key=lambda k: _KIND_ORDER.get(kinds.get(k, ""), 1)
    )
    groups = {k: [k] for k in order}
    for lab in sorted({a.split("/")[0] for a in agents}):
        members = [a for a in agents if a.startswith(lab + "/")]
        groups |= {a: [a] for a in members}
        groups[f"{lab}/all"] = members
    for ref in versus or []:
        if ref not in groups:
            raise ValueError(f"versus={ref!r}: not a row of the table (rows: {sorted(groups)})")
    refs = ([CLOCK] if CLOCK in data else []) + [r for r in versus or [] if r != CLOCK]

    def hits(label: str) -> np.ndarray:
        return np.mean([arr(m, "hit_ratio") for m in groups[label]], axis=0)

    lru = arr("lru", "hit_ratio").mean()
    bs = arr("belady_shared", "hit_ratio").mean() if "belady_shared" in data else None
    best = max((k for k in ONLINE if k in data), key=lambda k: arr(k, "hit_ratio").mean())
    rows = []
    for label, members in groups.items():
        hit = np.mean([arr(m, "hit_ratio") for m in members], axis=0)
        byte = np.mean([arr(m, "byte_hit_ratio") for m in members], axis=0)
        diff = hit - arr(best, "hit_ratio")
        extra = {}
        for ref in refs:
            d2 = hit - hits(ref)
            key = "vs_clock" if ref == CLOCK else f"vs_{ref}"
            extra[key] = (d2.mean(), *bootstrap_ci(d2, rng))
        rows.append(
            {
                "policy": label,
                "kind": "agent" if "/" in label else kinds.get(label, ""),
                "hit": (hit.mean(), *bootstrap_ci(hit, rng)),
                "byte": (byte.mean(), *bootstrap_ci(byte, rng)),
                "gap_closed": None if bs is None else (hit.mean() - lru) / (bs - lru),
                "vs_best": (diff.mean(), *bootstrap_ci(diff, rng)),
                **extra,
            }
        )
    lines = [
        f"Held-out episodes: {len(seeds)} (seeds {seeds[0]}..{seeds[-1]}); best online "
        f"heuristic by hit ratio: `{best}`. Gap closed = (x - lru) / (belady_shared - lru) "
        "on mean hit ratios; agents' `all` rows average the training seeds per episode.",
        "",
        "| policy | kind | hit ratio % | byte hit ratio % | LRU-to-belady_shared gap closed | "
        f"hit ratio - {best} (paired, points) |"
        + "".join(
            f" hit ratio - {ref} ({'clock-aware; ' if ref == CLOCK else ''}paired, points) |"
            for ref in refs
        ),
        "|---|---|---|---|---|---|" + "---|" * len(refs),
    ]
    for r in rows:
        h, b, v = r["hit"], r["byte"], r["vs_best"]
        closed = "-" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
        lines.append(
            f"| {r['policy']} | {r['kind']} | {100 * h[0]:.1f} [{100 * h[1]:.1f}, "
            f"{100 * h[2]:.1f}] | {100 * b[0]:.1f} [{100 * b[1]:.1f}, {100 * b[2]:.1f}] | "
            f"{closed} | {100 * v[0]:+.1f} [{100 * v[1]:+.1f}, "
            f"{100 * v[2]:+.1f}] |"
            + "".join(
                f" {100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] |"
                for d in (r["vs_clock" if ref == CLOCK else f"vs_{ref}"] for ref in refs)
            )
        )
    return rows, "\n".join(lines)


def evaluate_baselines(
    config: str | Path,
    overrides: dict | None = None,
    policies: list[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Evaluate baselines (no training) on a compare config's held-out episodes.

    Args:
        config: a ``mei-envs compare`` YAML (env, env_config, eval_seed, eval_episodes,
            baselines, out_dir, run_name are used).
        overrides: config keys to override (as ``mei-envs compare --set``).
        policies: registered policy names; default: the config's ``baselines`` (every
            registered policy if it is ``"all"``).

    Returns:
        The run folder (``episodes.csv``, ``evaluation.yml``, ``COMPLETE``).

    Raises:
        CompareConfigError: an invalid config or an unknown policy name (before any
            folder is created).
    """
    from mei_envs.baselines.evaluation import run_episodes
    from mei_envs.experiments.compare import (
        CompareConfig,
        _episode_rows,
        _select_baselines,
        new_run_dir,
    )
    from mei_envs.experiments.io import (
        mark_complete,
        write_csv_atomic,
        write_manifest,
        write_yaml_atomic,
    )

    cfg = CompareConfig.from_yaml(config, **dict(overrides or {}))
    if policies is not None:
        cfg = cfg.replace(baselines=list(policies))
    specs = _select_baselines(cfg)
    if not specs:
        cfg = cfg.replace(baselines="all")
        specs = _select_baselines(cfg)
    run_dir = new_run_dir(cfg.replace(run_name=cfg.run_name or "baselines")).resolve()
    write_manifest(run_dir, ["evaluation.yml", "episodes.csv"], {"kind": "baselines"})
    info = {
        "env_id": cfg.env_id,
        "env_config": dict(cfg.env_config),
        "eval_seed": cfg.eval_seed,
        "eval_episodes": cfg.eval_episodes,
        "policies": [s.name for s in specs],
        "config": str(config),
        "overrides": dict(overrides or {}),
        "seconds": {},
    }
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        res = run_episodes(
            cfg.env_id,
            spec.name,
            episodes=cfg.eval_episodes,
            seed=cfg.eval_seed,
            env_config=dict(cfg.env_config),
        )
        info["seconds"][spec.name] = round(time.perf_counter() - t0, 1)
        rows += _episode_rows(res, spec.name, spec.kind, "", "")
        if not quiet:
            print(
                f"{spec.name}: hit ratio {100 * float(np.mean(res.metrics['hit_ratio'])):.1f}% "
                f"({info['seconds'][spec.name]} s)",
                flush=True,
            )
    write_csv_atomic(run_dir / "episodes.csv", rows)
    write_yaml_atomic(run_dir / "evaluation.yml", info)
    mark_complete(run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dirs", nargs="*", help="[LABEL=]RUN_DIR of compare runs (table mode)")
    ap.add_argument("--out", default=None, help="write the table here (table mode)")
    ap.add_argument(
        "--baselines-from",
        action="append",
        default=None,
        metavar="RUN_DIR",
        help="take baseline rows from this folder only (repeatable)",
    )
    ap.add_argument(
        "--baselines-json",
        nargs=2,
        action="append",
        default=None,
        metavar=("PATH.json", "SCENARIO"),
        help="take every baseline row from an edge_llm_cache_baselines JSON's scenario "
        "(agents from the run folders); repeatable: the files' episodes are joined",
    )
    ap.add_argument("--episodes", type=int, default=None, help="use the first N held-out seeds")
    ap.add_argument(
        "--versus",
        nargs="+",
        default=None,
        metavar="ROW",
        help="more paired-difference columns against these rows (a baseline, LABEL/seedN or "
        "LABEL/all)",
    )
    ap.add_argument("--evaluate", default=None, metavar="CONFIG.yml", help="baselines-only run")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--policies", nargs="+", default=None)
    ap.add_argument("--run-name", default=None)
    args = ap.parse_args(argv)
    if args.evaluate:
        from mei_envs.config import parse_set_options

        overrides = parse_set_options(args.sets)
        if args.run_name:
            overrides["run_name"] = args.run_name
        run_dir = evaluate_baselines(args.evaluate, overrides, args.policies)
        print(run_dir)
        return str(run_dir)
    if not args.run_dirs:
        ap.error("give RUN_DIRs (table mode) or --evaluate CONFIG.yml")
    data, kinds = load_with_kinds(args.run_dirs, args.baselines_from)
    if args.baselines_json:
        data = {k: v for k, v in data.items() if "/" in k}  # agents only
        extra, extra_kinds = join_baselines_json(args.baselines_json)
        data |= extra
        kinds = {k: v for k, v in kinds.items() if "/" in k} | extra_kinds
    _, text = table(data, np.random.default_rng(0), kinds, args.episodes, args.versus)
    return emit_text(text, args.out)


if __name__ == "__main__":
    main()
