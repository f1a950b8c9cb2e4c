"""``mei-envs`` command line: list, evaluate, profile, train, compare, plot.

``list``, ``evaluate`` and ``profile`` need only the core install (plus scipy for some
baselines); ``train``, ``compare`` and ``plot`` import the training stack lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
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
    from mei_envs.config import parse_set_options

    if args.env not in mei_envs.ENV_IDS:
        print(
            f"error: unknown env {args.env!r}; registered: {list(mei_envs.ENV_IDS)}",
            file=sys.stderr,
        )
        return 2
    env_config = parse_set_options(args.set or [])
    policy_params = parse_set_options(args.param or [])
    res = run_episodes(
        args.env,
        args.policy,
        episodes=args.episodes,
        seed=args.seed,
        env_config=env_config,
        policy_params=policy_params,
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
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("evaluate", help="run a policy on seeded fresh episodes")
    p.add_argument("--env", required=True, help="env id, e.g. mei_envs/EarlyExitUpload-v0")
    p.add_argument("--policy", required=True, help="registered policy name or path to a .zip")
    p.add_argument("--episodes", type=int, default=100, help="episodes (seeds S, S+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed S")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="env config override")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="policy parameter")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_cmd_evaluate)

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").split(".")[0], "all")
        print(
            f"error: `mei-envs {args.command}` needs {exc.name!r}, which is not installed; "
            f"install the extra: pip install 'mei-envs[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except (KeyError, ValueError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
