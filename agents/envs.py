"""Environment construction for training: monitored, optionally masked, vectorised copies.

There is one ``make_env`` in the project (:func:`mei_envs.baselines.evaluation.make_env`);
:func:`make_vec_env` either wraps its envs in :class:`MetricsMonitor` (per-episode info
metrics in the monitor files) and, for maskable algorithms, sb3-contrib's ``ActionMasker``,
and steps them one by one (``DummyVecEnv``/``SubprocVecEnv``), or, where the env has a native
vector version (its registration's ``vector_entry_point``), steps all copies at once through
:class:`~mei_envs.agents.vector.VectorEnvAdapter`, which monitors them the same way. Both
give the same rollouts for the same seed (``tests/test_sb3_vector.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from mei_envs.agents.args import VEC_ENV_CHOICES
from mei_envs.agents.hint import HintSpec
from mei_envs.agents.vector import VectorEnvAdapter
from mei_envs.baselines.evaluation import make_env


class MetricsMonitor(Monitor):
    """SB3 ``Monitor`` whose info-keyword columns hold per-episode aggregates.

    ``info_metrics`` maps info keys to ``"sum"``, ``"mean"`` or ``"last"`` (the env's
    ``metadata["info_metrics"]``); a key missing from a step's info is skipped for that step.
    Where the episode's last info carries the env's own total ``episode_<key>`` (lean info),
    that total is the episode's value.
    """

    def __init__(
        self,
        env: gym.Env,
        filename: str | None,
        info_metrics: Mapping[str, str],
        override_existing: bool = True,
    ) -> None:
        super().__init__(
            env,
            filename=filename,
            info_keywords=tuple(info_metrics),
            override_existing=override_existing,
        )
        self.info_metrics = dict(info_metrics)
        self._sums = dict.fromkeys(self.info_metrics, 0.0)
        self._counts = dict.fromkeys(self.info_metrics, 0)
        self._last = dict.fromkeys(self.info_metrics, float("nan"))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._sums = dict.fromkeys(self.info_metrics, 0.0)
        self._counts = dict.fromkeys(self.info_metrics, 0)
        self._last = dict.fromkeys(self.info_metrics, float("nan"))
        return super().reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.needs_reset:
            raise RuntimeError("Tried to step environment that needs reset")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.rewards.append(float(reward))
        for k in self.info_metrics:
            if k in info:
                v = float(info[k])
                self._sums[k] += v
                self._counts[k] += 1
                self._last[k] = v
        if terminated or truncated:
            self.needs_reset = True
            ep_rew, ep_len = sum(self.rewards), len(self.rewards)
            elapsed = time.time() - self.t_start
            ep_info: dict[str, Any] = {"r": round(ep_rew, 6), "l": ep_len, "t": round(elapsed, 6)}
            for k, how in self.info_metrics.items():
                total = info.get("episode_" + k)
                if total is not None:
                    ep_info[k] = float(total)
                elif how == "sum":
                    ep_info[k] = self._sums[k]
                elif how == "mean":
                    ep_info[k] = self._sums[k] / self._counts[k] if self._counts[k] else np.nan
                else:
                    ep_info[k] = self._last[k]
            self.episode_returns.append(ep_rew)
            self.episode_lengths.append(ep_len)
            self.episode_times.append(elapsed)
            ep_info.update(self.current_reset_info)
            if self.results_writer:
                self.results_writer.write_row(ep_info)
            info["episode"] = ep_info
        self.total_steps += 1
        return obs, reward, terminated, truncated, info


def _action_masks(env: gym.Env) -> np.ndarray:
    return np.array(env.unwrapped.action_masks(), dtype=bool)  # a writable copy for torch


def env_info_metrics(env: gym.Env) -> dict[str, str]:
    """The env's ``metadata["info_metrics"]`` ({info key: "sum"|"mean"|"last"})."""
    return dict(env.unwrapped.metadata.get("info_metrics", {}) or {})


def _env_factory(
    env_id: str,
    env_config: Mapping[str, Any],
    monitor_file: str | None,
    info_metrics: Mapping[str, str],
    masked: bool,
    append: bool,
    hint: HintSpec | None = None,
) -> Callable[[], gym.Env]:
    def _init() -> gym.Env:
        env = make_env(env_id, env_config)
        if hint is not None:
            env = hint.wrap(env)
        env = MetricsMonitor(env, monitor_file, info_metrics, override_existing=not append)
        if masked:
            env = ActionMasker(env, _action_masks)
        return env

    return _init


def has_native_vector_env(env_id: str) -> bool:
    """Whether ``env_id``'s registration has a ``vector_entry_point`` whose class declares
    ``AutoresetMode.SAME_STEP`` (what :class:`VectorEnvAdapter` takes; Gymnasium's own
    CartPole vector env resets on the next step and is not used)."""
    entry = gym.spec(env_id).vector_entry_point
    if entry is None:
        return False
    creator = load_env_creator(entry) if isinstance(entry, str) else entry
    mode = getattr(creator, "metadata", {}).get("autoreset_mode")
    return mode is not None and AutoresetMode(mode) is AutoresetMode.SAME_STEP


def resolve_vec_env(env_id: str, vec_env: str, *, hint: bool = False) -> str:
    """``vec_env`` with ``"auto"`` made concrete: ``"native"`` if the env has a native vector
    version, else ``"dummy"``. With an observation hint (``hint``) ``"auto"`` is ``"dummy"``:
    the hint wraps single envs, and the native vector env has no per-env wrappers.

    Raises:
        ValueError: an unknown choice, ``"native"`` for an env without a vector version, or
            ``"native"`` with a hint.
    """
    if vec_env not in VEC_ENV_CHOICES:
        raise ValueError(f"vec_env={vec_env!r}: must be one of {list(VEC_ENV_CHOICES)}")
    if hint and vec_env == "native":
        raise ValueError(
            "vec_env='native' with obs_hint: the hint wraps single envs; use 'auto' (then "
            "dummy), 'dummy' or 'subproc'"
        )
    if vec_env == "auto":
        return "native" if has_native_vector_env(env_id) and not hint else "dummy"
    if vec_env == "native" and not has_native_vector_env(env_id):
        raise ValueError(
            f"vec_env='native': {env_id} has no native vector env with SAME_STEP autoreset (a "
            "vector_entry_point in its registration); use 'auto', 'dummy' or 'subproc'"
        )
    return vec_env


def make_vec_env(
    env_id: str,
    n_envs: int,
    *,
    env_config: Mapping[str, Any] | None = None,
    monitor_dir: Path | None = None,
    info_metrics: Mapping[str, str] | None = None,
    masked: bool = False,
    vec_env: str = "dummy",
    append_monitor: bool = False,
    hint: HintSpec | None = None,
    step_info: bool = True,
) -> VecEnv:
    """``n_envs`` monitored copies of the env (monitor files ``monitor_dir/<i>.monitor.csv``).

    ``vec_env``: ``"dummy"``/``"subproc"`` (SB3's ``DummyVecEnv``/``SubprocVecEnv`` over
    single envs), ``"native"`` (the env's vector version through
    :class:`~mei_envs.agents.vector.VectorEnvAdapter`; masks come from its
    ``action_masks()``) or ``"auto"`` (native where registered, else dummy). ``hint``: wrap
    each env in :class:`~mei_envs.agents.hint.PolicyHintWrapper` (``"auto"`` is then dummy).
    ``step_info=False`` (native only): the adapter leaves the env's per-step info keys out of
    the info dicts of steps that end no episode (``VectorEnvAdapter``'s ``step_info``); the
    training env of ``mei-envs train`` uses it, since nothing there reads them.
    """
    vec_env = resolve_vec_env(env_id, vec_env, hint=hint is not None)
    cfg, metrics = dict(env_config or {}), dict(info_metrics or {})
    if vec_env == "native":
        kwargs = {"config": cfg} if cfg else {}
        venv = gym.make_vec(
            env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs
        )
        return VectorEnvAdapter(
            venv,
            monitor=True,
            info_metrics=metrics,
            monitor_dir=monitor_dir,
            append_monitor=append_monitor,
            env_id=env_id,
            step_info=step_info,
        )
    fns = [
        _env_factory(
            env_id,
            cfg,
            None if monitor_dir is None else str(monitor_dir / str(i)),
            metrics,
            masked,
            append_monitor,
            hint,
        )
        for i in range(n_envs)
    ]
    return SubprocVecEnv(fns) if vec_env == "subproc" and n_envs > 1 else DummyVecEnv(fns)
