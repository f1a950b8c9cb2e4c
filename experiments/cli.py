"""Sub-commands ``compare``, ``plot`` and ``sweep`` for the ``mei-envs`` command line.

``mei_envs/cli.py`` imports this module lazily and calls :func:`add_compare_parser`,
:func:`add_plot_parser` and :func:`add_sweep_parser` on its sub-parsers; each sets
``func=handler`` where ``handler(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any


def default_compare_config_path() -> Path:
    """The packaged ``experiments/configs/default_compare.yml``."""
    return Path(str(files("experiments") / "configs" / "default_compare.yml"))


def _parse_sets(items: list[str] | None, flag: str) -> dict[str, Any]:
    from mei_envs.config import parse_set_options

    try:
        return parse_set_options(items or [])
    except ValueError as exc:
        raise ValueError(str(exc).replace("--set", flag)) from exc


# ---- compare ------------------------------------------------------------------------------
def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="train agents and compare them with every baseline/oracle on held-out seeds",
        description=(
            "Train each (algo, seed), evaluate agents, heuristics and oracles on the same "
            "held-out episode seeds, and write a run folder with episodes.csv, summary.csv/.md, "
            "learning_curves.png/.pdf and final_comparison.png/.pdf."
        ),
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="CompareConfig YAML (default: the packaged experiments/configs/default_compare.yml)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a CompareConfig field; VALUE is JSON when it parses "
        '(e.g. --set seeds=[0,1] --set total_timesteps=20000 --set algos=\'["ppo","a2c"]\')',
    )
    p.add_argument(
        "--env-set",
        dest="env_sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one env config key (merged into env_config)",
    )
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="sweep backend")
    p.add_argument("--workers", type=int, default=None, help="parallel workers")
    p.add_argument(
        "--ray-address", default=None, help="Ray cluster address ('auto', 'ray://host:10001')"
    )
    p.add_argument("--out-dir", default=None, help="parent folder of the run folder")
    p.add_argument("--quiet", action="store_true", help="print only the run folder")
    p.set_defaults(func=_compare_main)
    return p


def build_compare_config(args: argparse.Namespace) -> Any:
    """The CompareConfig for parsed ``compare`` arguments (YAML, then --set, then flags)."""
    from mei_envs.experiments.compare import CompareConfig

    overrides = _parse_sets(args.sets, "--set")
    env_over = _parse_sets(args.env_sets, "--env-set")
    for name in ("backend", "workers", "ray_address", "out_dir"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    path = args.config or default_compare_config_path()
    cfg = CompareConfig.from_yaml(path, **overrides)
    if env_over:
        cfg = cfg.replace(env_config=dict(cfg.env_config) | env_over)
    return cfg


def _compare_main(args: argparse.Namespace) -> int:
    from mei_envs.experiments.compare import run_compare
    from mei_envs.experiments.sweep import SweepError

    try:
        cfg = build_compare_config(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    try:
        run_dir = run_compare(cfg, quiet=args.quiet)
    except (ValueError, KeyError, ImportError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    except SweepError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    if args.quiet:
        print(run_dir)
    return 0


# ---- plot ---------------------------------------------------------------------------------
def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plot",
        help="re-plot a finished compare run folder, or an rl-zoo log folder",
        description="plot RUN_DIR  |  plot --zoo LOG_FOLDER [--out STEM]",
    )
    p.add_argument("run_dir", nargs="?", type=Path, help="a compare run folder")
    p.add_argument(
        "--zoo", type=Path, default=None, metavar="LOG_FOLDER", help="rl-zoo log folder (logs/)"
    )
    p.add_argument("--out", type=Path, default=None, help="output stem for --zoo figures")
    p.set_defaults(func=_plot_main)
    return p


def _plot_main(args: argparse.Namespace) -> int:
    from mei_envs.experiments.io import IncompleteRunError
    from mei_envs.experiments.plot import plot_run, plot_zoo

    if (args.run_dir is None) == (args.zoo is None):
        print("plot: give either RUN_DIR or --zoo LOG_FOLDER", file=sys.stderr)
        return 2
    try:
        paths = plot_zoo(args.zoo, args.out) if args.zoo else plot_run(args.run_dir)
    except IncompleteRunError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


# ---- sweep --------------------------------------------------------------------------------
def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="train a grid of (env, env config, algo, seed) runs in parallel",
        description=(
            "Train every combination; --grid KEY=[v1,v2] adds an env-config axis "
            "(cartesian product over all --grid keys)."
        ),
    )
    p.add_argument("--env", dest="envs", action="append", required=True, help="env id")
    p.add_argument("--algo", dest="algos", action="append", default=None, help="default: ppo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=[V1,V2]", help="env-config axis"
    )
    p.add_argument("--env-set", dest="env_sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--total-timesteps", type=int, default=None)
    p.add_argument("--n-envs", type=int, default=None)
    p.add_argument("--eval-freq", type=int, default=10_000)
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ray-address", default=None)
    p.add_argument("--out-dir", default="results/sweep")
    p.set_defaults(func=_sweep_main)
    return p


def _sweep_main(args: argparse.Namespace) -> int:
    from mei_envs.experiments.sweep import SweepError, grid, run_sweep

    try:
        axes = _parse_sets(args.grid, "--grid")
        for key, values in axes.items():
            if not isinstance(values, list):
                raise ValueError(f"--grid {key}={values!r}: expected a JSON list like [1,2]")
        jobs = grid(
            args.envs,
            args.algos or ["ppo"],
            args.seeds,
            axes or None,
            out_dir=args.out_dir,
            base_env_config=_parse_sets(args.env_sets, "--env-set"),
            total_timesteps=args.total_timesteps,
            n_envs=args.n_envs,
            eval_freq=args.eval_freq,
        )
        paths = run_sweep(
            jobs, backend=args.backend, workers=args.workers, ray_address=args.ray_address
        )
    except (ValueError, KeyError, ImportError) as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    except SweepError as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m mei_envs.experiments.cli``) with the three sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m mei_envs.experiments.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    add_plot_parser(sub)
    add_sweep_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
