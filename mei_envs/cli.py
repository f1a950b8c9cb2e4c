"""``mei-envs`` command line: list, evaluate, bench, profile, train, compare, plot, sweep.

``list``, ``evaluate``, ``bench`` (its ``--ppo`` part needs torch and SB3) and ``profile``
need only the core install; ``train``, ``compare``,
``plot`` and ``sweep`` import the training stack lazily.

Every sub-command's handler is wrapped by :func:`guarded`, the one place that turns errors
into messages and exit codes: 2 for a usage error (bad flag value, config key, file, env id;
the message names it, no traceback), 1 for a failed job, 130 for Ctrl-C. Dataclass-driven
flags (:func:`add_dataclass_flags`) build a sub-command's options from a dataclass's field
metadata, as ``mei-envs train`` does from ``TrainArgs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any


def _cmd_list(args: argparse.Namespace) -> int:
    import mei_envs
    from mei_envs.baselines.registry import list_policies

    out = []
    for env_id in mei_envs.ENV_IDS:
        specs = list_policies(env_id)[env_id]
        out.append(
            {
                "env_id": env_id,
                "presets": mei_envs.registration.env_presets(env_id),
                "policies": [
                    {"name": s.name, "kind": s.kind, "description": s.description} for s in specs
                ],
            }
        )
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for item in out:
        print(item["env_id"])
        if item["presets"]:
            print(f"  presets: {', '.join(item['presets'])}")
        for p in item["policies"]:
            print(f"  {p['name']:<20s} {p['kind']:<10s} {p['description']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import mei_envs
    from mei_envs.baselines.evaluation import run_episodes
    from mei_envs.config import ConfigError, parse_set_options

    if args.env not in mei_envs.ENV_IDS:
        raise ConfigError(f"--env {args.env!r}: unknown env; registered: {list(mei_envs.ENV_IDS)}")
    env_config = parse_set_options(args.set or [])
    policy_params = parse_set_options(args.param or [], flag="--param")
    res = run_episodes(
        args.env,
        args.policy,
        episodes=args.episodes,
        seed=args.seed,
        env_config=env_config,
        policy_params=policy_params,
        strict=args.strict,
    )
    summary = res.summary()
    if args.json:
        print(
            json.dumps(
                {
                    "env_id": args.env,
                    "policy": args.policy,
                    "episodes": args.episodes,
                    "seed": args.seed,
                    "config": env_config,
                    "summary": summary,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{args.env}  policy={args.policy}  episodes={args.episodes}  seeds={args.seed}.."
        f"{args.seed + args.episodes - 1}"
    )
    print(f"{'metric':<22s} {'mean':>14s} {'std':>14s}")
    for key, ms in summary.items():
        print(f"{key:<22s} {ms['mean']:>14.6g} {ms['std']:>14.6g}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from mei_envs.bench import PARTS, main_from_args

    parts = [p.strip() for p in (args.parts or ",".join(PARTS)).split(",") if p.strip()]
    presets = None
    if args.preset:
        presets = [p.strip() for p in args.preset.split(",") if p.strip()]
    flags = [
        *(["--quick"] if args.quick else []),
        *[f"--env {e}" for e in args.env or []],
        f"--out {args.out}",
        *(["--ppo"] if args.ppo else []),
        *([f"--parts {args.parts}"] if args.parts else []),
        *([f"--preset {args.preset}"] if args.preset else []),
    ]
    return main_from_args(
        quick=args.quick,
        env_ids=args.env,
        out=args.out,
        ppo=args.ppo,
        parts=parts,
        presets=presets,
        quiet=args.quiet,
        command=" ".join(["mei-envs bench", *flags]),
    )


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``bench`` sub-command's options (also used by ``benchmarks/bench.py``)."""
    p = sub.add_parser(
        "bench",
        help="speed of every env, vector env and policy as ratios to CartPole-v1",
        description="Benchmark every registered env (default config and each preset) against "
        "CartPole-v1 in the same process: single-env steps/s, reset cost, native vector env "
        "at 1/16/256 envs, policies' time per decision and per solve, cost growth with "
        "scenario size (fitted exponents), and optionally PPO. Writes bench.json and "
        "bench.md to --out and prints the Markdown.",
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets (tests, CI): noisy")
    p.add_argument(
        "--env", action="append", metavar="ID", help="only this env (repeatable; default: all)"
    )
    p.add_argument("--out", default="bench_results", help="output directory (default: %(default)s)")
    p.add_argument(
        "--ppo", action="store_true", help="also PPO env-steps/s vs CartPole (torch + SB3; slow)"
    )
    p.add_argument(
        "--parts",
        metavar="LIST",
        help="comma-separated subset of single,vector,policies,scaling (default: all)",
    )
    p.add_argument("--preset", metavar="LIST", help="comma-separated presets (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=guarded("bench", _cmd_bench))
    return p


# Optional dependency -> the pyproject extra that installs it.
_EXTRA_OF = {
    "torch": "train",
    "stable_baselines3": "train",
    "sb3_contrib": "train",
    "matplotlib": "train",
    "yaml": "train",
    "scipy": "train",
    "transformers": "profile",
    "peft": "profile",
    "ray": "ray",
    "rl_zoo3": "zoo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mei-envs",
        description="Gymnasium environments for mobile edge intelligence for LLMs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered env ids and their baselines/oracles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=guarded("list", _cmd_list))

    p = sub.add_parser("evaluate", help="run a policy on seeded fresh episodes")
    p.add_argument("--env", required=True, help="env id, e.g. mei_envs/EarlyExitUpload-v1")
    p.add_argument("--policy", required=True, help="registered policy name or path to a .zip")
    p.add_argument("--episodes", type=int, default=100, help="episodes (seeds S, S+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed S")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="env config override")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="policy parameter")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument(
        "--strict",
        action="store_true",
        help="an agent whose training config (config.yml beside model.zip) differs from the "
        "evaluation config is an error, not a warning",
    )
    p.set_defaults(func=guarded("evaluate", _cmd_evaluate))

    add_bench_parser(sub)

    _add_optional(sub, "mei_envs.cli_profile", "add_profile_parser")
    _add_optional(sub, "mei_envs.agents.cli", "add_train_parser")
    _add_optional(sub, "mei_envs.experiments.cli", "add_compare_parser")
    _add_optional(sub, "mei_envs.experiments.cli", "add_plot_parser")
    _add_optional(sub, "mei_envs.experiments.cli", "add_sweep_parser")
    return parser


def _add_optional(sub: Any, module: str, func: str) -> None:
    """Add a sub-command whose module may need optional extras (imported lazily inside)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # that sub-command has not been installed/written
            return
        raise
    adder = getattr(mod, func, None)
    if adder is not None:
        adder(sub)


# ---- one error handler for every sub-command ------------------------------------------------
def _usage_error_types() -> tuple[type[BaseException], ...]:
    types_: list[type[BaseException]] = [
        ValueError,
        KeyError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
    ]
    try:
        import gymnasium.error

        types_.append(gymnasium.error.Error)
    except ImportError:  # pragma: no cover - gymnasium is a core dependency
        pass
    return tuple(types_)


def guarded(command: str, handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Wrap a sub-command handler: errors become one ``error:`` line and an exit code.

    Exit codes: 2 for usage errors (``ValueError`` incl. ``ConfigError``, ``KeyError``,
    ``TypeError``, missing files, gymnasium's unknown-id errors; a missing optional dependency,
    with the extra that installs it), the exception's ``exit_code`` attribute when it has one
    (a failed job: 1), 130 after Ctrl-C (with the exception's ``hint``, e.g. how to resume).
    A closed stdout (``mei-envs list --json | head``) ends quietly.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args) or 0)
        except BrokenPipeError:
            # The reader went away: send the rest to /dev/null so Python's exit flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        except KeyboardInterrupt as exc:
            hint = getattr(exc, "hint", "")
            print(f"\n{command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
            return 130
        except ModuleNotFoundError as exc:
            extra = _EXTRA_OF.get((exc.name or "").split(".")[0], "all")
            print(
                f"error: `mei-envs {command}` needs {exc.name!r}, which is not installed; "
                f"install the extra: pip install 'mei-envs[{extra}]'",
                file=sys.stderr,
            )
            return 2
        except Exception as exc:
            code = getattr(exc, "exit_code", None)
            if code is None and not isinstance(exc, _usage_error_types()):
                raise
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"error: {msg}", file=sys.stderr)
            return 2 if code is None else int(code)

    run.__wrapped__ = handler  # type: ignore[attr-defined]
    return run


# ---- flags from a dataclass's field metadata -------------------------------------------------
def _flag_type(hint: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field annotation such as ``int | None``."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return (typing.get_origin(hint) or hint), False


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of dataclass ``cls``, described by the field's metadata.

    Metadata keys: ``help``; ``flag`` (default ``--field-name``); ``short`` (e.g. ``-v``);
    ``choices``; ``cli_default`` (a flag default other than the field's). Booleans get
    ``--x/--no-x``; ``dict`` fields take repeatable ``KEY=VALUE`` (JSON values);
    ints and strings take one value. A field without a default is a required flag.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        names = [meta.get("flag", "--" + f.name.replace("_", "-"))]
        if "short" in meta:
            names.insert(0, meta["short"])
        kind, optional = _flag_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "help": meta.get("help")}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["required"] = True
        elif "cli_default" in meta:
            kw["default"] = meta["cli_default"]
        elif f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            kw.update(action="append", default=[], metavar="KEY=VALUE")
            kw["help"] = f"{kw['help']} (repeatable; VALUE is JSON when it parses)"
        else:
            kw["type"] = kind if kind in (int, float, str) else str
            if "choices" in meta:
                kw["choices"] = list(meta["choices"])
            if optional and kw.get("default") is None:
                kw["metavar"] = f.name.upper()
        parser.add_argument(*names, **kw)


def dataclass_from_flags(cls: type, ns: argparse.Namespace) -> Any:
    """Build ``cls`` from flags added by :func:`add_dataclass_flags` (dict flags parsed)."""
    from mei_envs.config import parse_set_options

    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name)
        if _flag_type(hints[f.name])[0] is dict:
            value = parse_set_options(value or [], flag=f.metadata.get("flag", f"--{f.name}"))
        values[f.name] = value
    return cls(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command (argparse exits with 2 on a bad flag)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
