"""rl-baselines3-zoo hyperparameters: one YAML file per algorithm, keyed by the exact env id.

:func:`load_hyperparams` reads an entry (``default`` as a fallback), :func:`parse_expr` reads
rl-zoo's Python-literal strings without executing anything, and :func:`resolve_hyperparams`
turns an entry into the algorithm's constructor arguments.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule

from mei_envs.agents.algos import get_algo_class

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

# rl-baselines3-zoo keys that are not constructor arguments of the algorithm.
_ZOO_KEYS = frozenset({"n_timesteps", "policy", "n_envs", "normalize", "noise_type", "noise_std"})
# Constructor arguments the trainer sets itself (not hyperparameters).
_RESERVED = frozenset(
    {"self", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
)
_SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


def default_hyperparams_path(algo: str) -> Path:
    """The shipped YAML file of ``algo``."""
    get_algo_class(algo)
    return HYPERPARAMS_DIR / f"{algo}.yml"


def load_hyperparams(algo: str, env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """The YAML entry of ``env_id`` (rl-zoo format; ``default`` entry as a fallback).

    Raises:
        FileNotFoundError: no such file.
        KeyError: the file has neither ``env_id`` nor ``default`` (names both and the ids).
    """
    file = Path(path) if path is not None else default_hyperparams_path(algo)
    if not file.is_file():
        raise FileNotFoundError(f"hyperparams={str(file)!r}: no such file")
    with open(file) as f:
        table = yaml.safe_load(f) or {}
    if env_id in table:
        entry = table[env_id]
    elif "default" in table:
        entry = table["default"]
    else:
        raise KeyError(
            f"no hyperparameters for env_id={env_id!r} in {file}; it has {sorted(table)}"
        )
    return dict(entry or {})


def check_hyperparam_keys(algo: str, hyperparams: Mapping[str, Any]) -> None:
    """Every key must be an rl-zoo key or a constructor argument of the algorithm.

    Raises:
        ValueError: naming the bad key(s), the algorithm and the allowed keys.
    """
    allowed = allowed_hyperparams(algo)
    bad = sorted(set(hyperparams) - allowed)
    if bad:
        raise ValueError(
            f"unknown hyperparameter(s) {bad} for algo={algo!r}; allowed keys are {sorted(allowed)}"
        )


def allowed_hyperparams(algo: str) -> set[str]:
    """rl-zoo keys plus the constructor arguments of ``algo`` the trainer does not set itself."""
    params = inspect.signature(get_algo_class(algo).__init__).parameters
    return (set(params) - _RESERVED) | _ZOO_KEYS


_EXPR_NAMES: dict[str, Any] = {"True": True, "False": False, "None": None}


def parse_expr(text: str, *, key: str) -> Any:
    """Evaluate an rl-zoo Python-literal string such as ``"dict(net_arch=[64, 64])"``.

    Allowed: literals, lists, tuples, dicts, ``dict(k=v)`` and torch names ``nn.X``,
    ``th.nn.X``, ``th.optim.X`` (activation functions, optimizers). Nothing is executed.

    Raises:
        ValueError: naming ``key`` and the part of ``text`` that is not allowed.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"hyperparameter {key}={text!r}: not a Python expression") from exc

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Name) and node.id in _EXPR_NAMES:
            return _EXPR_NAMES[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "dict" and not node.args:
                return {kw.arg: ev(kw.value) for kw in node.keywords}
        if isinstance(node, ast.Attribute):
            dotted = ast.unparse(node)
            parts = dotted.split(".")
            if parts[0] in ("th", "torch"):
                parts = parts[1:]
            if len(parts) == 2 and parts[0] in ("nn", "optim"):
                module = th.nn if parts[0] == "nn" else th.optim
                if hasattr(module, parts[1]):
                    return getattr(module, parts[1])
        raise ValueError(
            f"hyperparameter {key}={text!r}: {ast.unparse(node)!r} is not allowed "
            "(use literals, dict(...), nn.<Name>, th.optim.<Name>)"
        )

    return ev(tree.body)


def _schedule(value: Any, key: str) -> Any:
    """rl-zoo schedules: ``lin_<x>`` decays linearly from x to 0; numbers stay constant."""
    if isinstance(value, str):
        kind, _, start = value.partition("_")
        if kind != "lin":
            raise ValueError(f"hyperparameter {key}={value!r}: schedule must be lin_<value>")
        try:
            return LinearSchedule(float(start), 0.0, 1.0)
        except ValueError as exc:
            raise ValueError(f"hyperparameter {key}={value!r}: bad number") from exc
    return value


@dataclass
class ResolvedHyperparams:
    """Hyperparameters split into what the trainer uses and what the algorithm gets."""

    n_timesteps: int
    n_envs: int
    normalize_kwargs: dict[str, Any] | None  # None: no VecNormalize
    policy: str
    model_kwargs: dict[str, Any]


def resolve_hyperparams(
    algo: str, hp: Mapping[str, Any], action_space: spaces.Space
) -> ResolvedHyperparams:
    """Turn a (validated) rl-zoo entry into constructor keyword arguments."""
    check_hyperparam_keys(algo, hp)
    hp = dict(hp)
    n_timesteps = int(float(hp.pop("n_timesteps", 0)))
    n_envs = int(hp.pop("n_envs", 1))
    policy = hp.pop("policy", "MlpPolicy")
    normalize = hp.pop("normalize", False)
    if isinstance(normalize, str):
        normalize = parse_expr(normalize, key="normalize")
    if isinstance(normalize, Mapping):
        normalize_kwargs: dict[str, Any] | None = dict(normalize)
    elif isinstance(normalize, bool):
        normalize_kwargs = {} if normalize else None
    else:
        raise ValueError(f"hyperparameter normalize={normalize!r}: must be a bool or dict(...)")
    if normalize_kwargs is not None and "gamma" in hp:
        normalize_kwargs.setdefault("gamma", hp["gamma"])  # rl-zoo: reward discount = gamma
    for key in ("policy_kwargs", "replay_buffer_kwargs", "optimize_memory_usage"):
        if isinstance(hp.get(key), str):
            hp[key] = parse_expr(hp[key], key=key)
    for key in _SCHEDULED:
        if key in hp:
            hp[key] = _schedule(hp[key], key)
    if isinstance(hp.get("train_freq"), list):
        hp["train_freq"] = tuple(hp["train_freq"])
    noise_type = hp.pop("noise_type", None)
    noise_std = float(hp.pop("noise_std", 0.1))
    if noise_type is not None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"hyperparameter noise_type={noise_type!r}: needs a Box action space")
        n = int(np.prod(action_space.shape))
        if noise_type == "normal":
            hp["action_noise"] = NormalActionNoise(np.zeros(n), noise_std * np.ones(n))
        elif noise_type == "ornstein-uhlenbeck":
            hp["action_noise"] = OrnsteinUhlenbeckActionNoise(np.zeros(n), noise_std * np.ones(n))
        else:
            raise ValueError(
                f"hyperparameter noise_type={noise_type!r}: must be 'normal' or "
                "'ornstein-uhlenbeck'"
            )
    return ResolvedHyperparams(n_timesteps, n_envs, normalize_kwargs, policy, hp)
