"""The ``train`` subcommand of ``mei-envs`` (imported lazily by ``mei_envs/cli.py``).

Its flags are generated from :class:`mei_envs.agents.train.TrainArgs`' field metadata (help
text, flag name), so a new training argument is one new field. Example::

    mei-envs train --env mei_envs/EarlyExitUpload-v1 --algo ppo --seed 0 --timesteps 300000
    mei-envs train --env mei_envs/EarlyExitUpload-v1 --run-dir runs/x --resume
"""

from __future__ import annotations

import argparse
from typing import Any

from mei_envs.cli import add_dataclass_flags, dataclass_from_flags, guarded


def _train_args_class() -> type:
    from mei_envs.agents.args import TrainArgs

    return TrainArgs


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to an argparse subparsers object; its handler returns an exit code."""
    p = subparsers.add_parser(
        "train",
        help="train an SB3 agent (needs the [train] extra)",
        description="Train a Stable-Baselines3 agent; prints the run folder.",
    )
    add_dataclass_flags(p, _train_args_class())
    p.set_defaults(func=guarded("train", _run_train))
    return p


def _run_train(ns: argparse.Namespace) -> int:
    from mei_envs.agents.args import TrainArgs
    from mei_envs.agents.train import read_run_config, train

    if ns.algo is None:
        ns.algo = "ppo"
        if ns.resume and ns.run_dir is not None:
            try:
                ns.algo = read_run_config(ns.run_dir)["args"]["algo"]
            except (FileNotFoundError, KeyError, TypeError):
                pass  # train() reports the missing config
    args = dataclass_from_flags(TrainArgs, ns)
    print(train(args))
    return 0
