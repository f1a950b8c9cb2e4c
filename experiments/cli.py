"""Sub-commands ``compare``, ``plot`` and ``sweep`` for the ``mei-envs`` command line.

``mei_envs/cli.py`` imports this module lazily and calls :func:`add_compare_parser`,
:func:`add_plot_parser` and :func:`add_sweep_parser` on its sub-parsers; each sets
``func=handler`` where ``handler(args) -> int`` is the exit code. Errors are turned into
messages and exit codes in one place, :func:`mei_envs.cli.guarded`.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from mei_envs.cli import guarded


def default_compare_config_path() -> Path:
    """The packaged ``experiments/configs/default_compare.yml``."""
    return Path(str(files("mei_envs.experiments") / "configs" / "default_compare.yml"))


def _parse_sets(items: list[str] | None, flag: str) -> dict[str, Any]:
    from mei_envs.config import parse_set_options

    return parse_set_options(items or [], flag=flag)


# ---- compare ------------------------------------------------------------------------------
_COMPARE_DESCRIPTION = (
    "Train each (algo, seed), evaluate agents, heuristics and oracles on the same held-out "
    "episode seeds, and write a run folder with episodes.csv, summary.csv/.md, "
    "learning_curves.png/.pdf and final_comparison.png/.pdf."
)


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    help_ = "train agents and compare them with every baseline/oracle on held-out seeds"
    p = subparsers.add_parser("compare", help=help_, description=_COMPARE_DESCRIPTION)
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
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="finish an interrupted run folder with its own config.yml: finished trainings "
        "are reused, interrupted ones continue from their last checkpoint",
    )
    p.set_defaults(func=guarded("compare", _compare_main))
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
    from mei_envs.experiments.compare import resume_compare, run_compare

    if args.resume is not None:
        if args.config or args.sets or args.env_sets:
            raise ValueError("--resume RUN_DIR uses the run's config.yml: drop --config/--set")
        run_dir = resume_compare(args.resume, quiet=args.quiet)
    else:
        run_dir = run_compare(build_compare_config(args), quiet=args.quiet)
    if args.quiet:
        print(run_dir)
    return 0


# ---- plot ---------------------------------------------------------------------------------
def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    help_ = "re-plot a finished compare run folder, or an rl-zoo log folder"
    p = subparsers.add_parser("plot", help=help_, description=help_)
    p.add_argument("run_dir", nargs="?", type=Path, help="a compare run folder")
    p.add_argument(
        "--zoo", type=Path, default=None, metavar="LOG_FOLDER", help="rl-zoo log folder (logs/)"
    )
    p.add_argument("--out", type=Path, default=None, help="output stem for --zoo figures")
    p.set_defaults(func=guarded("plot", _plot_main))
    return p


def _plot_main(args: argparse.Namespace) -> int:
    from mei_envs.experiments.plot import plot_run, plot_zoo

    if (args.run_dir is None) == (args.zoo is None):
        raise ValueError("plot: give either RUN_DIR or --zoo LOG_FOLDER")
    paths = plot_zoo(args.zoo, args.out) if args.zoo else plot_run(args.run_dir)
    for path in paths:
        print(path)
    return 0


# ---- sweep --------------------------------------------------------------------------------
_SWEEP_DESCRIPTION = (
    "Train every combination; --grid KEY=[v1,v2] adds an env-config axis (cartesian product "
    "over all --grid keys)."
)


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    help_ = "train a grid of (env, env config, algo, seed) runs in parallel"
    p = subparsers.add_parser("sweep", help=help_, description=_SWEEP_DESCRIPTION)
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished runs in --out-dir and continue interrupted ones",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=guarded("sweep", _sweep_main))
    return p


def _sweep_main(args: argparse.Namespace) -> int:
    from mei_envs.experiments.sweep import grid, print_progress, run_sweep

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
    try:
        paths = run_sweep(
            jobs,
            backend=args.backend,
            workers=args.workers,
            ray_address=args.ray_address,
            resume=args.resume,
            progress=None if args.quiet else print_progress(stream=sys.stderr),
        )
    except KeyboardInterrupt as exc:
        exc.hint = (  # type: ignore[attr-defined]
            "finished runs are kept; continue with the same command plus --resume"
        )
        raise
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
