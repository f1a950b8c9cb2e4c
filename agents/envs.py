"""Environment construction for training: monitored, optionally masked, vectorised copies.

There is one ``make_env`` in the project (:func:`mei_envs.baselines.evaluation.make_env`);
:func:`make_vec_env` wraps its envs in :class:`MetricsMonitor` (per-episode info metrics in
the monitor files) and, for maskable algorithms, sb3-contrib's ``ActionMasker``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from mei_envs.baselines.evaluation import make_env


class MetricsMonitor(Monitor):
    """SB3 ``Monitor`` whose info-keyword columns hold per-episode aggregates.

    ``info_metrics`` maps info keys to ``"sum"``, ``"mean"`` or ``"last"`` (the env's
    ``metadata["info_metrics"]``); a key missing from a step's info is skipped for that step.
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
                if how == "sum":
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
    return np.asarray(env.unwrapped.action_masks(), dtype=bool)


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
) -> Callable[[], gym.Env]:
    def _init() -> gym.Env:
        env = make_env(env_id, env_config)
        env = MetricsMonitor(env, monitor_file, info_metrics, override_existing=not append)
        if masked:
            env = ActionMasker(env, _action_masks)
        return env

    return _init


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
) -> VecEnv:
    """``n_envs`` monitored copies of the env (monitor files ``monitor_dir/<i>.monitor.csv``)."""
    if vec_env not in ("dummy", "subproc"):
        raise ValueError(f"vec_env={vec_env!r}: must be 'dummy' or 'subproc'")
    fns = [
        _env_factory(
            env_id,
            dict(env_config or {}),
            None if monitor_dir is None else str(monitor_dir / str(i)),
            dict(info_metrics or {}),
            masked,
            append_monitor,
        )
        for i in range(n_envs)
    ]
    return SubprocVecEnv(fns) if vec_env == "subproc" and n_envs > 1 else DummyVecEnv(fns)
