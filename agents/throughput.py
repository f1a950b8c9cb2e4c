"""PPO's training throughput on an env, against PPO on CartPole-v1 with the same settings.

:func:`ppo_steps_per_s` times ``model.learn`` (rollout collection and updates: what a
training run spends) in one process, alternating the env and the references in interleaved
repeats; a ratio is the median of the per-repeat ratios (each pair ran back to back, so the
machine's load cancels out), steps/s are medians. The env is vectorised as ``vec_env`` says
(``"auto"``: its native vector env through :class:`~mei_envs.agents.vector.VectorEnvAdapter`
where it registers one, as ``mei-envs train`` does); the references are stepped the way SB3
users step CartPole (``DummyVecEnv`` over monitored envs).

Two references, the same PPO settings (``MlpPolicy``'s default net, ``n_envs``, ``n_steps``,
``batch_size``, ``n_epochs``, seed):

* ``CartPole-v1`` itself (issue 12's target: PPO through the adapter at least 1.0x this);
* CartPole-v1 *with the env's network* (:class:`CartPoleLike`): its 4 observations padded
  with zeros to the env's observation shape and the env's action space (mapped onto
  CartPole's two actions), so the policy and value nets, the action distribution and the
  rollout buffer are the env's. Its rate over CartPole's is what the bigger network alone
  costs (``network_factor``); the env's rate over it (``ratio_to_matched``) is what the env's
  step and its vectorisation cost beyond CartPole's dynamics.

``algo="maskable_ppo"`` times sb3-contrib's ``MaskablePPO`` with the env's action masks; its
references then carry all-legal masks of the same shape (masks are computed, sent and applied
for both). Plain ``"ppo"`` on an env whose illegal actions raise (EdgeLLMCache) needs the
env's unmasked mode (``env_config={"invalid_action": "bypass"}``; :func:`unmasked_config`).

``python -m mei_envs.agents.throughput --env mei_envs/EarlyExitUpload-v1`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from sb3_contrib import MaskablePPO
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from mei_envs.agents.args import VEC_ENV_CHOICES
from mei_envs.agents.envs import (
    MetricsMonitor,
    env_info_metrics,
    make_env,
    make_vec_env,
    resolve_vec_env,
)

# The main job's PPO settings (agents/hyperparams/ppo.yml, all three envs): rollouts of 256
# steps per env, minibatches of 256, 10 epochs; MlpPolicy's default net.
DEFAULT_PPO_KWARGS: dict[str, Any] = {"n_steps": 256, "batch_size": 256, "n_epochs": 10}
REFERENCE_ENV = "CartPole-v1"
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "maskable_ppo": MaskablePPO}


class CartPoleLike(gym.Wrapper):
    """A reference env with another env's network: the wrapped env's observation padded with
    zeros to ``obs_shape`` (``float32``, unbounded Box) and ``action_space`` mapped onto the
    wrapped env's ``Discrete(k)`` actions (``Discrete``/``MultiDiscrete``: the first
    component mod ``k``; ``Box``: action 1 where the first component is positive, else 0).
    ``action_masks()``: all legal, shaped as ``action_space`` needs (``Discrete(n)``: ``n``;
    ``MultiDiscrete``: the sum of its sizes).
    """

    def __init__(self, env: gym.Env, obs_shape: tuple[int, ...], action_space: spaces.Space):
        super().__init__(env)
        inner = env.observation_space
        if not isinstance(env.action_space, spaces.Discrete) or not isinstance(inner, spaces.Box):
            raise ValueError(
                f"CartPoleLike wraps a Box-observation, Discrete-action env; got "
                f"{inner} / {env.action_space}"
            )
        if int(np.prod(obs_shape)) < int(np.prod(inner.shape)):
            raise ValueError(f"obs_shape={obs_shape}: smaller than the wrapped env's {inner.shape}")
        if not isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)):
            raise ValueError(f"action_space={action_space}: Discrete, MultiDiscrete or Box only")
        self.observation_space = spaces.Box(-np.inf, np.inf, tuple(obs_shape), np.float32)
        self.action_space = action_space
        self._k = int(env.action_space.n)
        self._n_inner = int(np.prod(inner.shape))
        self._buf = np.zeros(int(np.prod(obs_shape)), dtype=np.float32)
        if isinstance(action_space, spaces.Discrete):
            self._mask = np.ones(int(action_space.n), dtype=bool)
        elif isinstance(action_space, spaces.MultiDiscrete):
            self._mask = np.ones(int(np.sum(action_space.nvec)), dtype=bool)
        else:
            self._mask = np.ones(0, dtype=bool)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        out = self._buf.copy()
        out[: self._n_inner] = np.asarray(obs, dtype=np.float32).ravel()
        return out.reshape(self.observation_space.shape)

    def _action(self, action: Any) -> int:
        first = np.asarray(action).ravel()[0]
        if isinstance(self.action_space, spaces.Box):
            return int(first > 0)
        return int(first) % self._k

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._pad(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self._action(action))
        return self._pad(obs), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()


def unmasked_config(env_id: str) -> dict[str, Any]:
    """The config under which plain PPO can step ``env_id``: ``{"invalid_action": "bypass"}``
    for an env whose config has that field (illegal actions served the documented unmasked
    way instead of raising), else ``{}``."""
    env_cls = load_env_creator(gym.spec(env_id).entry_point)
    fields = getattr(getattr(env_cls, "config_class", None), "__dataclass_fields__", {})
    return {"invalid_action": "bypass"} if "invalid_action" in fields else {}


def _matched_skip_reason(env_id: str, cfg: Mapping[str, Any], reference: str) -> str | None:
    """Why ``reference`` cannot take ``env_id``'s network (None: it can)."""
    env, ref = make_env(env_id, cfg or None), make_env(reference)
    try:
        obs, ref_obs = env.observation_space, ref.observation_space
        if not isinstance(obs, spaces.Box) or not isinstance(ref_obs, spaces.Box):
            return f"observation spaces {obs} / {ref_obs}: padding needs two Boxes"
        if int(np.prod(obs.shape)) < int(np.prod(ref_obs.shape)):
            return f"{env_id}'s observation {obs.shape} is smaller than {reference}'s"
        if not isinstance(env.action_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)):
            return f"action space {env.action_space}: Discrete, MultiDiscrete or Box only"
        return None
    finally:
        env.close()
        ref.close()


def _reference_vec_env(
    reference: str,
    n_envs: int,
    like: gym.Env | None,
    masked: bool,
) -> VecEnv:
    """``n_envs`` monitored copies of ``reference`` (with ``like``'s network: CartPoleLike)."""

    def init() -> gym.Env:
        env = make_env(reference)
        if like is not None or masked:
            obs_shape = like.observation_space.shape if like is not None else None
            act = like.action_space if like is not None else env.action_space
            env = CartPoleLike(env, obs_shape or env.observation_space.shape, act)
        env = MetricsMonitor(env, None, {})
        if masked:
            env = ActionMasker(env, lambda e: e.get_wrapper_attr("action_masks")())
        return env

    return DummyVecEnv([init for _ in range(n_envs)])


def build_model(
    env_id: str,
    algo: str,
    n_envs: int,
    ppo_kwargs: Mapping[str, Any],
    *,
    seed: int = 0,
    vec_env: str = "auto",
    env_config: Mapping[str, Any] | None = None,
    like: str | None = None,
) -> BaseAlgorithm:
    """A ``PPO``/``MaskablePPO`` ``MlpPolicy`` model on ``n_envs`` copies of ``env_id``, built
    as ``mei-envs train`` builds its training envs (monitored, info metrics, ``vec_env``).

    ``like``: ``env_id`` is a reference (CartPole-v1) stepped by ``DummyVecEnv``; with
    ``like`` set to another env id it gets that env's observation shape and action space
    (:class:`CartPoleLike`). A maskable reference always carries all-legal masks.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo={algo!r}: must be one of {list(ALGOS)}")
    masked = algo == "maskable_ppo"
    if like is not None or (masked and env_id == REFERENCE_ENV):
        probe = None
        if like is not None:
            probe = make_env(like, env_config)
        venv = _reference_vec_env(env_id, n_envs, probe, masked)
        if probe is not None:
            probe.close()
    else:
        probe = make_env(env_id, env_config)
        metrics = env_info_metrics(probe)
        probe.close()
        venv = make_vec_env(
            env_id,
            n_envs,
            env_config=env_config,
            info_metrics=metrics,
            vec_env=vec_env,
            masked=masked,
            step_info=False,  # as mei-envs train builds its training env
        )
    return ALGOS[algo]("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **ppo_kwargs)


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def _learn_steps_per_s(
    make: Callable[[], BaseAlgorithm], total_steps: int, clock: str = "cpu"
) -> float:
    model = make()
    try:
        now = CLOCKS[clock]
        t0 = now()
        model.learn(total_steps)
        elapsed = now() - t0
        return model.num_timesteps / elapsed
    finally:
        model.get_env().close()


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
    algo: str = "ppo",
    matched: bool = True,
    clock: str = "cpu",
) -> dict[str, Any]:
    """PPO env-steps/s on ``env_id`` and on ``reference`` (same PPO settings, same process).

    Each repeat times ``model.learn(total_steps)`` once on the env, once on ``reference`` and
    (``matched``) once on ``reference`` with the env's network (:class:`CartPoleLike`), the
    order rotating between repeats, after one untimed warm-up rollout on each. Every model is
    built fresh, outside the timed call. ``clock="cpu"`` (default) times the process's CPU
    time (``time.process_time``; torch runs ``torch_threads`` threads, 1 by default), so
    time spent waiting for a core on a shared machine does not count; ``"wall"`` times
    ``time.perf_counter``. ``total_steps`` is rounded up to whole rollouts of
    ``n_steps * n_envs`` by SB3; the rates count the steps really taken.

    Returns:
        ``{"env_id", "reference", "algo", "policy", "n_envs", "total_steps", "vec_env"
        (resolved), "env_config", "ppo_kwargs", "repeats", "torch_threads",
        "env_steps_per_s", "reference_steps_per_s" (medians), "ratio" (median of the
        per-repeat env/reference ratios), "env_runs", "reference_runs" (every repeat)}``;
        with ``matched`` also ``"matched_steps_per_s"``, ``"matched_runs"``,
        ``"ratio_to_matched"`` (env / matched reference) and ``"network_factor"`` (matched
        reference / reference), medians of per-repeat ratios; or ``"matched_skipped"`` (why
        not: an observation smaller than the reference's, or not a Box).

    Raises:
        ValueError: ``n_envs``, ``total_steps`` or ``repeats`` below 1, a bad ``vec_env`` or
            ``algo``.
    """
    for name, v in (("n_envs", n_envs), ("total_steps", total_steps), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be an integer >= 1")
    if algo not in ALGOS:
        raise ValueError(f"algo={algo!r}: must be one of {list(ALGOS)}")
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: must be one of {list(CLOCKS)}")
    resolved = resolve_vec_env(env_id, vec_env)
    kwargs = {**DEFAULT_PPO_KWARGS, **dict(ppo_kwargs or {})}
    cfg = dict(env_config or {})
    makers: dict[str, Callable[[], BaseAlgorithm]] = {
        "env": lambda: build_model(
            env_id, algo, n_envs, kwargs, seed=seed, vec_env=resolved, env_config=cfg or None
        ),
        "reference": lambda: build_model(reference, algo, n_envs, kwargs, seed=seed),
    }
    skipped = _matched_skip_reason(env_id, cfg, reference) if matched else None
    if matched and skipped is None:
        makers["matched"] = lambda: build_model(
            reference, algo, n_envs, kwargs, seed=seed, env_config=cfg or None, like=env_id
        )
    names = list(makers)
    old_threads = th.get_num_threads()
    th.set_num_threads(torch_threads)
    try:
        warmup = int(kwargs["n_steps"]) * n_envs
        for name in names:
            _learn_steps_per_s(makers[name], warmup, clock)
        runs: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            if r % 2:
                order = order[::-1]
            for name in order:
                runs[name].append(_learn_steps_per_s(makers[name], total_steps, clock))
    finally:
        th.set_num_threads(old_threads)

    def pair_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    out: dict[str, Any] = {
        "env_id": env_id,
        "reference": reference,
        "algo": algo,
        "policy": "MlpPolicy (default net_arch: pi [64, 64], vf [64, 64])",
        "n_envs": n_envs,
        "total_steps": total_steps,
        "vec_env": resolved,
        "env_config": cfg,
        "ppo_kwargs": kwargs,
        "repeats": repeats,
        "torch_threads": torch_threads,
        "clock": clock,
        "env_steps_per_s": statistics.median(runs["env"]),
        "reference_steps_per_s": statistics.median(runs["reference"]),
        "ratio": pair_ratio("env", "reference"),
        "env_runs": runs["env"],
        "reference_runs": runs["reference"],
    }
    if skipped is not None:
        out["matched_skipped"] = skipped
    elif matched:
        out.update(
            matched_steps_per_s=statistics.median(runs["matched"]),
            matched_runs=runs["matched"],
            ratio_to_matched=pair_ratio("env", "matched"),
            network_factor=pair_ratio("matched", "reference"),
        )
    return out


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
    p.add_argument("--algo", default="ppo", choices=tuple(ALGOS), help="default ppo")
    p.add_argument("--n-steps", type=int, default=DEFAULT_PPO_KWARGS["n_steps"])
    p.add_argument("--batch-size", type=int, default=DEFAULT_PPO_KWARGS["batch_size"])
    p.add_argument("--n-epochs", type=int, default=DEFAULT_PPO_KWARGS["n_epochs"])
    p.add_argument("--no-matched", action="store_true", help="skip the network-matched CartPole")
    p.add_argument("--clock", default="cpu", choices=tuple(CLOCKS), help="default cpu")
    p.add_argument(
        "--config",
        default=None,
        help='env config as JSON, e.g. \'{"preset": "x"}\' (default: {} for maskable_ppo, '
        "the env's unmasked mode for ppo)",
    )
    p.add_argument("--seed", type=int, default=0)
    ns = p.parse_args(argv)
    if ns.config is None:
        config = unmasked_config(ns.env) if ns.algo == "ppo" else {}
    else:
        config = json.loads(ns.config)
    result = ppo_steps_per_s(
        ns.env,
        ns.n_envs,
        ns.steps,
        vec_env=ns.vec_env,
        env_config=config,
        repeats=ns.repeats,
        seed=ns.seed,
        algo=ns.algo,
        matched=not ns.no_matched,
        clock=ns.clock,
        ppo_kwargs={"n_steps": ns.n_steps, "batch_size": ns.batch_size, "n_epochs": ns.n_epochs},
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
