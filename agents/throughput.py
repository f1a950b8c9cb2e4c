"""PPO's training throughput on an env, against PPO on CartPole-v1 with the same settings.

:func:`ppo_steps_per_s` times ``model.learn`` (rollout collection and updates: what a
training run spends) in one process, alternating the env and the reference in interleaved
repeats, and reports medians and their ratio; ratios, not seconds, are the result (the
machine and its load cancel out). The reference is stepped the way SB3 users step it
(``DummyVecEnv``); the env is vectorised as ``vec_env`` says (``"auto"``: its native vector
env through :class:`~mei_envs.agents.vector.VectorEnvAdapter` where it registers one).

``python -m mei_envs.agents.throughput --env mei_envs/EarlyExitUpload-v1`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch as th
from stable_baselines3 import PPO

from mei_envs.agents.args import VEC_ENV_CHOICES
from mei_envs.agents.envs import env_info_metrics, make_env, make_vec_env, resolve_vec_env

# The main job's PPO settings (agents/hyperparams/ppo.yml, all three envs): rollouts of 256
# steps per env, minibatches of 256, 10 epochs; MlpPolicy's default net.
DEFAULT_PPO_KWARGS: dict[str, Any] = {"n_steps": 256, "batch_size": 256, "n_epochs": 10}
REFERENCE_ENV = "CartPole-v1"


def _learn_steps_per_s(
    env_id: str,
    n_envs: int,
    total_steps: int,
    vec_env: str,
    env_config: Mapping[str, Any] | None,
    ppo_kwargs: Mapping[str, Any],
    seed: int,
) -> float:
    probe = make_env(env_id, env_config)
    metrics = env_info_metrics(probe)
    probe.close()
    venv = make_vec_env(
        env_id, n_envs, env_config=env_config, info_metrics=metrics, vec_env=vec_env
    )
    try:
        model = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **ppo_kwargs)
        t0 = time.perf_counter()
        model.learn(total_steps)
        elapsed = time.perf_counter() - t0
        return model.num_timesteps / elapsed
    finally:
        venv.close()


def ppo_steps_per_s(
    env_id: str,
    n_envs: int = 8,
    total_steps: int = 8192,
    *,
    vec_env: str = "auto",
    env_config: Mapping[str, Any] | None = None,
    repeats: int = 3,
    ppo_kwargs: Mapping[str, Any] | None = None,
    reference: str = REFERENCE_ENV,
    seed: int = 0,
    torch_threads: int = 1,
) -> dict[str, Any]:
    """PPO env-steps/s on ``env_id`` and on ``reference`` (same PPO settings, same process).

    Each repeat times ``model.learn(total_steps)`` once on each (the order alternates between
    repeats), after one untimed warm-up rollout on each. ``total_steps`` is rounded up to
    whole rollouts of ``n_steps * n_envs`` by SB3; the rates count the steps really taken.

    Returns:
        ``{"env_id", "reference", "n_envs", "total_steps", "vec_env" (resolved),
        "ppo_kwargs", "repeats", "env_steps_per_s", "reference_steps_per_s" (medians),
        "ratio" (their quotient), "env_runs", "reference_runs" (every repeat)}``.

    Raises:
        ValueError: ``n_envs``, ``total_steps`` or ``repeats`` below 1, or a bad ``vec_env``.
    """
    for name, v in (("n_envs", n_envs), ("total_steps", total_steps), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be an integer >= 1")
    resolved = resolve_vec_env(env_id, vec_env)
    kwargs = {**DEFAULT_PPO_KWARGS, **dict(ppo_kwargs or {})}
    old_threads = th.get_num_threads()
    th.set_num_threads(torch_threads)
    try:
        targets = {
            "env": (env_id, resolved, env_config),
            "reference": (reference, "dummy", None),
        }
        warmup = int(kwargs["n_steps"]) * n_envs
        for eid, ve, cfg in targets.values():
            _learn_steps_per_s(eid, n_envs, warmup, ve, cfg, kwargs, seed)
        runs: dict[str, list[float]] = {"env": [], "reference": []}
        for r in range(repeats):
            order = ("env", "reference") if r % 2 == 0 else ("reference", "env")
            for name in order:
                eid, ve, cfg = targets[name]
                runs[name].append(
                    _learn_steps_per_s(eid, n_envs, total_steps, ve, cfg, kwargs, seed)
                )
    finally:
        th.set_num_threads(old_threads)
    env_rate = statistics.median(runs["env"])
    ref_rate = statistics.median(runs["reference"])
    return {
        "env_id": env_id,
        "reference": reference,
        "n_envs": n_envs,
        "total_steps": total_steps,
        "vec_env": resolved,
        "env_config": dict(env_config or {}),
        "ppo_kwargs": kwargs,
        "repeats": repeats,
        "env_steps_per_s": env_rate,
        "reference_steps_per_s": ref_rate,
        "ratio": env_rate / ref_rate,
        "env_runs": runs["env"],
        "reference_runs": runs["reference"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mei_envs.agents.throughput``: print :func:`ppo_steps_per_s` as JSON."""
    p = argparse.ArgumentParser(prog="python -m mei_envs.agents.throughput", description=__doc__)
    p.add_argument("--env", required=True, help="env id")
    p.add_argument("--n-envs", type=int, default=8, help="parallel envs (default 8)")
    p.add_argument("--steps", type=int, default=8192, help="env steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument(
        "--vec-env", default="auto", choices=VEC_ENV_CHOICES, help="vectorisation of the env"
    )
    p.add_argument("--config", default="{}", help='env config as JSON, e.g. \'{"preset": "x"}\'')
    p.add_argument("--seed", type=int, default=0)
    ns = p.parse_args(argv)
    result = ppo_steps_per_s(
        ns.env,
        ns.n_envs,
        ns.steps,
        vec_env=ns.vec_env,
        env_config=json.loads(ns.config),
        repeats=ns.repeats,
        seed=ns.seed,
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
