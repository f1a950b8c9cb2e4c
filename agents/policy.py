"""Load a saved SB3 agent as a ``baselines`` policy (``reset(obs, info)``, ``act(obs, info)``).

``baselines.evaluation.resolve_policy`` calls :func:`load_agent_policy` for
``--policy path/to/model.zip``, so trained agents are evaluated exactly like the heuristics.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from mei_envs.agents.algos import ALGOS, get_algo_class
from mei_envs.agents.hint import HintSpec, PolicyHint, hinted_space

# Module of the policy class stored in the zip -> algo (PPO and A2C share one policy class).
_POLICY_MODULES = {
    "stable_baselines3.dqn.policies": "dqn",
    "stable_baselines3.sac.policies": "sac",
    "stable_baselines3.td3.policies": "td3",
    "sb3_contrib.common.maskable.policies": "maskable_ppo",
}
_CKPT_RE = re.compile(r"^model_(\d+)_steps\.zip$")


class AgentPolicy:
    """A trained SB3 model acting deterministically on single (unbatched) observations.

    Observations are normalized with the saved VecNormalize statistics, which are never
    updated here. Maskable models get the env's ``action_masks()`` every step. An agent
    trained with an observation hint (``hint``, :mod:`mei_envs.agents.hint`) gets the hint's
    features appended to each observation, as in training.
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        env: gym.Env,
        algo: str,
        obs_normalizer: VecNormalize | None = None,
        hint: PolicyHint | None = None,
    ) -> None:
        self.model = model
        self.env = env
        self.algo = algo
        self.obs_normalizer = obs_normalizer
        self.hint = hint
        self.masked = algo == "maskable_ppo"
        self._discrete = isinstance(model.action_space, spaces.Discrete)

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        """Restart the hint's policy (the agent itself is feed-forward)."""
        if self.hint is not None:
            self.hint.reset(obs, info)

    def _masks(self, info: dict[str, Any]) -> np.ndarray:
        base = self.env.unwrapped
        if callable(getattr(base, "action_masks", None)):
            return np.array(base.action_masks(), dtype=bool)  # writable copy (torch)
        if "action_mask" in info:
            return np.array(info["action_mask"], dtype=bool)
        raise ValueError(
            f"maskable agent: env {type(base).__name__} has no action_masks() and info has no "
            "'action_mask'"
        )

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        x = np.asarray(obs)
        if self.hint is not None:
            extra = self.hint.features_now(obs, info)
            x = np.concatenate([x.astype(extra.dtype, copy=False), extra])
        if self.obs_normalizer is not None:
            x = self.obs_normalizer.normalize_obs(x)
        kwargs: dict[str, Any] = {}
        if self.masked:
            kwargs["action_masks"] = self._masks(info)
        action, _ = self.model.predict(x, deterministic=True, **kwargs)
        if self._discrete:
            return int(np.asarray(action).item())
        return np.asarray(action)


def infer_algo(path: str | Path) -> str:
    """The algo key of a saved model: from the run's config.yml, else from the zip's data.

    Raises:
        ValueError: the zip is not an SB3 model or its algorithm is not one of ``ALGOS``.
    """
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        cfg = folder / "config.yml"
        if cfg.is_file():
            with open(cfg) as f:
                algo = ((yaml.safe_load(f) or {}).get("args") or {}).get("algo")
            if algo in ALGOS:
                return algo
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise ValueError(f"{path}: not a Stable-Baselines3 model file ({exc})") from exc
    module = (data.get("policy_class") or {}).get("__module__", "")
    if module in _POLICY_MODULES:
        return _POLICY_MODULES[module]
    if module == "stable_baselines3.common.policies":
        return "ppo" if "clip_range" in data else "a2c"
    raise ValueError(f"{path}: cannot tell the algorithm (policy module {module!r})")


def _vecnormalize_path(path: Path) -> Path:
    m = _CKPT_RE.match(path.name)
    if m:
        return path.parent / f"vecnormalize_{m.group(1)}_steps.pkl"
    return path.parent / "vecnormalize.pkl"


def _run_config_of(path: Path) -> dict[str, Any] | None:
    """The trainer's config.yml of a model (beside it, or one up for a checkpoint)."""
    for folder in (path.parent, path.parent.parent):
        cfg = folder / "config.yml"
        if cfg.is_file():
            try:
                data = yaml.safe_load(cfg.read_text())
            except yaml.YAMLError as exc:
                raise ValueError(f"{cfg}: not readable YAML ({exc})") from None
            return data if isinstance(data, dict) else None
    return None


def config_mismatch(path: str | Path, env: gym.Env) -> list[str]:
    """Differences between an agent's training env (its config.yml) and ``env``.

    Returns one ``"key: trained=<v>, evaluated=<v>"`` item per differing env-config key (and
    the env id), comparing full configs so defaults count; empty when they agree or when
    there is no config.yml to compare with.
    """
    saved = _run_config_of(Path(path))
    args = (saved or {}).get("args") or {}
    if not args:
        return []
    out = []
    env_id = getattr(env.spec, "id", None)
    if env_id is not None and args.get("env_id") not in (None, env_id):
        out.append(f"env_id: trained={args['env_id']!r}, evaluated={env_id!r}")
        return out
    config = getattr(env.unwrapped, "config", None)
    trained_cfg = dict(args.get("env_config") or {})
    if config is None or not hasattr(config, "to_dict"):
        if trained_cfg:
            out.append(f"env_config: trained={trained_cfg}, evaluated=(the env's defaults)")
        return out
    try:
        trained = type(config).from_dict(trained_cfg).to_dict()
    except ValueError as exc:
        return [f"env_config: the training config no longer validates ({exc})"]
    for key, value in config.to_dict().items():
        if trained.get(key) != value:
            out.append(f"{key}: trained={trained.get(key)!r}, evaluated={value!r}")
    return out


def load_agent_policy(
    path: str | Path, env: gym.Env, *, device: str = "cpu", strict: bool = False
) -> AgentPolicy:
    """Load ``path`` (a model zip from :func:`agents.train.train`) to act in ``env``.

    The algorithm comes from the run's ``config.yml`` or the zip itself, and so does the
    observation hint (``args.obs_hint``: rebuilt on ``env``); saved observation
    statistics are read from ``vecnormalize.pkl`` next to the model (or
    ``vecnormalize_<n>_steps.pkl`` next to a checkpoint) when present.

    An agent trained on an env config other than ``env``'s (see :func:`config_mismatch`)
    gets a ``UserWarning`` naming the differing keys; with ``strict`` it is an error.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an SB3 model, its spaces do not match ``env``'s, an unreadable
            ``vecnormalize.pkl`` (named), or (``strict``) a config mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such agent file")
    algo = infer_algo(path)
    cls = get_algo_class(algo)
    try:
        model = cls.load(str(path), device=device)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load as {cls.__name__}: {exc}") from exc
    run_args = ((_run_config_of(path) or {}).get("args")) or {}
    spec = HintSpec.from_args(run_args)
    hint = None
    if spec is not None:
        try:
            hint = spec.build(env)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot rebuild the run's observation hint: {exc}") from None
    for what in ("observation_space", "action_space"):
        saved, actual = getattr(model, what), getattr(env, what)
        if what == "observation_space" and hint is not None:
            actual = hinted_space(actual, hint.size)
        if type(saved) is not type(actual) or saved.shape != actual.shape:
            raise ValueError(f"{path}: model {what} {saved} does not match the env's {actual}")
    diff = config_mismatch(path, env)
    if diff:
        msg = (
            f"{path} was trained on another env config than the one it is evaluated on: "
            + "; ".join(diff)
        )
        if strict:
            raise ValueError(msg + " (strict)")
        warnings.warn(msg, UserWarning, stacklevel=2)
    normalizer = None
    vn_path = _vecnormalize_path(path)
    if vn_path.is_file():
        try:
            with open(vn_path, "rb") as f:
                normalizer = pickle.load(f)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ValueError(
                f"{vn_path}: not a readable VecNormalize pickle ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(normalizer, VecNormalize):
            raise ValueError(f"{vn_path}: not a VecNormalize pickle")
        normalizer.training = False
        if not normalizer.norm_obs:
            normalizer = None
    if algo == "maskable_ppo" and not callable(getattr(env.unwrapped, "action_masks", None)):
        raise ValueError(
            f"{path}: a maskable_ppo agent needs an env with action_masks(); "
            f"{type(env.unwrapped).__name__} has none"
        )
    return AgentPolicy(model, env, algo, normalizer, hint)
