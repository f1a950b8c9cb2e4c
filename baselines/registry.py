"""Registry of named policies (heuristics and oracles) per environment id.

A policy is built for one environment instance by a factory ``factory(env) -> Policy``; it
gets ``reset(obs, info)`` at the start of each episode and ``act(obs, info)`` every step.
Oracles may read the unwrapped environment's true state (``env.unwrapped``); heuristics use
only the observation and ``info``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import gymnasium as gym


class Policy(Protocol):
    def reset(self, obs: Any, info: dict[str, Any]) -> None: ...

    def act(self, obs: Any, info: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class PolicySpec:
    env_id: str
    name: str
    kind: str  # "heuristic" | "oracle"
    description: str
    factory: Callable[..., Policy]


_REGISTRY: dict[str, dict[str, PolicySpec]] = {}
_KINDS = ("heuristic", "oracle")


E = TypeVar("E", bound=gym.Env)


def unwrap_env(env: gym.Env, env_cls: type[E]) -> E:
    """The unwrapped env of ``env``, checked to be an ``env_cls`` (oracles read its state)."""
    inner = env.unwrapped
    if not isinstance(inner, env_cls):
        raise TypeError(f"expected a {env_cls.__name__}, got {type(inner).__name__}")
    return inner


def register_policy(
    env_id: str, name: str, factory: Callable[..., Policy], *, kind: str, description: str
) -> None:
    """Register ``factory(env, **params) -> Policy`` under ``(env_id, name)`` (idempotent)."""
    if kind not in _KINDS:
        raise ValueError(f"register_policy: kind={kind!r} must be one of {list(_KINDS)}")
    _REGISTRY.setdefault(env_id, {})[name] = PolicySpec(env_id, name, kind, description, factory)


def list_policies(env_id: str | None = None) -> dict[str, list[PolicySpec]]:
    """Policies per env id (all envs when ``env_id`` is None)."""
    _load_all()
    if env_id is not None:
        _check_env(env_id)
        return {env_id: list(_REGISTRY.get(env_id, {}).values())}
    return {k: list(v.values()) for k, v in sorted(_REGISTRY.items())}


def get_policy_spec(env_id: str, name: str) -> PolicySpec:
    _load_all()
    _check_env(env_id)
    specs = _REGISTRY.get(env_id, {})
    if name not in specs:
        raise KeyError(
            f"unknown policy {name!r} for {env_id}; available: {sorted(specs) or 'none'}"
        )
    return specs[name]


def make_policy(env_id: str, name: str, env: gym.Env, **params: Any) -> Policy:
    """Build the named policy for ``env`` (an instance of ``env_id``).

    Raises:
        ValueError: a parameter the policy does not take, or a value it refuses; the message
            names the policy, the parameter and the parameters it takes.
    """
    spec = get_policy_spec(env_id, name)
    try:
        sig = inspect.signature(spec.factory)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        sig = None
    if sig is not None:
        takes = [p for p in list(sig.parameters)[1:] if p not in ("args", "kwargs")]
        try:
            sig.bind(env, **params)
        except TypeError as exc:
            bad = sorted(set(params) - set(takes))
            what = f"unknown parameter(s) {bad}" if bad else str(exc)
            raise ValueError(f"policy {name!r}: {what}; it takes {takes or 'none'}") from None
        for key, value in params.items():
            if key not in sig.parameters:  # taken by **kwargs: the factory checks it
                continue
            annotation = str(sig.parameters[key].annotation)
            words = set(re.findall(r"[A-Za-z_]+", annotation))
            numeric = bool(words & {"int", "float"}) and not words & {"str", "Any", "object"}
            if numeric and (
                isinstance(value, (bool, str)) or value is None and "None" not in annotation
            ):
                raise ValueError(
                    f"policy {name!r}: parameter {key}={value!r} must be a number ({annotation})"
                )
    try:
        return spec.factory(env, **params)
    except (TypeError, ValueError) as exc:
        if not params:
            raise
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ValueError(f"policy {name!r} with {shown}: {exc}") from exc


def _check_env(env_id: str) -> None:
    import mei_envs

    if env_id not in mei_envs.ENV_IDS:
        raise KeyError(f"unknown env id {env_id!r}; registered: {list(mei_envs.ENV_IDS)}")


_LOADED = False
# Modules of this package that hold no env's policies.
_NOT_POLICY_MODULES = frozenset({"registry", "evaluation"})


def _load_all() -> None:
    """Import every policy module of ``mei_envs.baselines`` once (their import runs their
    ``register_policy`` calls), so an env's baselines need no edit here."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import mei_envs.baselines as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name not in _NOT_POLICY_MODULES and not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _LOADED = True
