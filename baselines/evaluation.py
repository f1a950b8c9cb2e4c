"""Run a policy (registered baseline/oracle, or a saved agent) on seeded fresh episodes.

Episode ``i`` is reset with seed ``seed + i``, so every policy evaluated with the same
``seed`` and ``episodes`` sees the same workloads and channel draws. Per-episode metrics are
aggregated from ``info`` as each environment declares in its ``metadata["info_metrics"]``:
``{"key": "sum" | "mean" | "last"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the envs)
from mei_envs.baselines.registry import Policy, make_policy


@dataclass
class EpisodeResults:
    """Per-episode returns and metrics of one policy on one env."""

    env_id: str
    policy: str
    seeds: list[int]
    returns: np.ndarray
    lengths: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation of the return, length and each metric."""
        out = {"return": _mean_std(self.returns), "length": _mean_std(self.lengths)}
        for key, values in self.metrics.items():
            out[key] = _mean_std(values)
        return out


def _mean_std(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def make_env(env_id: str, env_config: Mapping[str, Any] | None = None) -> gym.Env:
    """``gym.make`` with an optional config mapping (passed as ``config=``).

    The one env constructor of the project: evaluation, training (``mei_envs.agents.envs``)
    and the experiments' up-front checks all call it.

    Raises:
        ConfigError: an unknown env id (naming it and the registered mei_envs ids), a config
            that is not a mapping, or an env that takes no ``config``.
    """
    from mei_envs.config import ConfigError

    if env_config is not None and not isinstance(env_config, Mapping):
        raise ConfigError(f"env config {env_config!r}: must be a mapping of config keys to values")
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ConfigError(
            f"env id {env_id!r}: not registered ({exc}); mei_envs ids are {list(mei_envs.ENV_IDS)}"
        ) from None
    if env_config:
        try:
            return gym.make(env_id, config=dict(env_config))
        except TypeError as exc:
            if "config" not in str(exc):
                raise
            raise ConfigError(f"env {env_id!r} takes no config= (got {dict(env_config)})") from None
    return gym.make(env_id)


def resolve_policy(
    env_id: str, policy: str | Path, env: gym.Env, *, strict: bool = False, **params: Any
) -> Policy:
    """A registered policy name, or the path of a saved SB3 agent (``.zip``).

    An agent whose training config differs from ``env``'s gets a warning naming the keys
    (``strict``: a ``ValueError``).
    """
    text = str(policy)
    if text.endswith(".zip") or Path(text).is_file():
        if not Path(text).is_file():
            raise FileNotFoundError(f"--policy {text!r}: no such agent file")
        if params:
            raise ValueError(f"--param {sorted(params)}: a saved agent takes no parameters")
        from mei_envs.agents.policy import load_agent_policy  # torch only when asked for

        return load_agent_policy(text, env, strict=strict)
    return make_policy(env_id, text, env, **params)


def run_episodes(
    env_id: str,
    policy: str | Path,
    *,
    episodes: int,
    seed: int,
    env_config: Mapping[str, Any] | None = None,
    policy_params: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> EpisodeResults:
    """Evaluate ``policy`` on ``episodes`` fresh episodes seeded ``seed, seed+1, ...``.

    ``strict``: a saved agent trained on another env config is an error (else a warning).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    env = make_env(env_id, env_config)
    try:
        pol = resolve_policy(env_id, policy, env, strict=strict, **dict(policy_params or {}))
        spec = env.unwrapped.metadata.get("info_metrics", {})
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        metrics = {k: np.zeros(episodes) for k in spec}
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            pol.reset(obs, info)
            sums = dict.fromkeys(spec, 0.0)
            total, n, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(pol.act(obs, info))
                total += float(reward)
                n += 1
                for k in spec:
                    sums[k] += float(info.get(k, 0.0))
                done = terminated or truncated
            returns[i], lengths[i] = total, n
            for k, how in spec.items():
                if how == "sum":
                    metrics[k][i] = sums[k]
                elif how == "mean":
                    metrics[k][i] = sums[k] / max(n, 1)
                else:  # "last"
                    metrics[k][i] = float(info.get(k, np.nan))
    finally:
        env.close()
    return EpisodeResults(
        env_id, str(policy), [seed + i for i in range(episodes)], returns, lengths, metrics
    )
