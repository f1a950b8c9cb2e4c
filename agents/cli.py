"""The ``train`` subcommand of ``mei-envs`` (imported lazily by ``mei_envs/cli.py``).

Example::

    mei-envs train --env mei_envs/EarlyExitUpload-v0 --algo ppo --seed 0 --timesteps 300000
    mei-envs train --env mei_envs/EarlyExitUpload-v0 --run-dir runs/x --resume
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to an argparse subparsers object; its handler returns an exit code."""
    p = subparsers.add_parser(
        "train",
        help="train an SB3 agent (needs the [train] extra)",
        description="Train a Stable-Baselines3 agent; prints the run folder.",
    )
    p.add_argument("--env", required=True, dest="env_id", help="env id")
    p.add_argument(
        "--algo",
        default=None,
        help="ppo | a2c | dqn | sac | td3 | maskable_ppo (default ppo; with --resume: the run's)",
    )
    p.add_argument("--timesteps", type=int, default=None, help="total env steps (default: YAML)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: YAML)")
    p.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"])
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None)
    norm.add_argument("--no-normalize", dest="normalize", action="store_false")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/ALGO/ENV__SEED__TIME)")
    p.add_argument("--resume", action="store_true", help="continue --run-dir from a checkpoint")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="env config value"
    )
    p.add_argument(
        "--hp", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter override"
    )
    p.add_argument("--hyperparams", default=None, help="YAML file (default: shipped file)")
    p.add_argument("--eval-freq", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--checkpoint-freq", type=int, default=50_000)
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress-bar", action="store_true")
    p.add_argument("-v", "--verbose", type=int, default=0)
    p.set_defaults(func=_run_train)
    return p


def _run_train(ns: argparse.Namespace) -> int:
    from mei_envs.config import ConfigError, parse_set_options

    try:
        env_config = parse_set_options(ns.set)
        overrides = parse_set_options(ns.hp)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from mei_envs.agents.train import TrainArgs, read_run_config, train

    algo = ns.algo
    if algo is None:
        algo = "ppo"
        if ns.resume and ns.run_dir is not None:
            try:
                algo = read_run_config(ns.run_dir)["args"]["algo"]
            except (FileNotFoundError, KeyError, TypeError):
                pass  # train() reports the missing config

    args = TrainArgs(
        env_id=ns.env_id,
        algo=algo,
        total_timesteps=ns.timesteps,
        seed=ns.seed,
        n_envs=ns.n_envs,
        vec_env=ns.vec_env,
        normalize=ns.normalize,
        env_config=env_config,
        hyperparams=ns.hyperparams,
        hyperparams_override=overrides,
        run_dir=ns.run_dir,
        eval_freq=ns.eval_freq,
        eval_episodes=ns.eval_episodes,
        checkpoint_freq=ns.checkpoint_freq,
        resume=ns.resume,
        progress_bar=ns.progress_bar,
        tensorboard=ns.tensorboard,
        device=ns.device,
        verbose=ns.verbose,
    )
    try:
        run_dir = train(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(run_dir)
    return 0
