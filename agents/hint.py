"""A registered policy's advice as observation features (an observation wrapper; no torch).

:class:`PolicyHint` runs a registered policy (a heuristic from ``mei_envs.baselines``, by
default ``knapsack_greedy`` on ``mei_envs/EdgeLLMCache-v0``) beside the agent, on the same env
state, and turns its choice at the current state into features:

* ``"action"``: a one-hot over the ``Discrete(n)`` actions of the action the policy would
  take now (the same call the policy makes when it plays alone: ``reset`` at each episode
  start, ``act`` once per step, so a stateful heuristic keeps its own clock);
* ``"keep"``: for policies that keep a target set (they expose ``keep_set()``, a bool array
  over the cache's models, e.g. ``knapsack_greedy``'s best set for its estimated popularity),
  membership per model.

:class:`PolicyHintWrapper` appends them to a flat ``Box`` observation (values 0/1; the space
grows by ``n`` and/or ``M``) and passes ``action_masks()`` through, so MaskablePPO trains on
it unchanged. The agent that learns on such observations is a learned correction on top of
the heuristic: it sees what the heuristic would do and may follow it or not. Training
(``mei-envs train --hint NAME``, ``obs_hint`` in a compare config) wraps every training and
evaluation env; :func:`mei_envs.agents.policy.load_agent_policy` rebuilds the same hint from
the run's ``config.yml`` so a saved hinted agent evaluates like any other.

The hint policy is an online heuristic reading only what the env exposes to heuristics
(``decision_state()``); an oracle is refused unless ``allow_oracle=True`` (an agent hinted by an
oracle is not an online policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

HINT_FEATURES = ("action", "keep")
DEFAULT_FEATURES = ("action", "keep")


def check_hint(
    env_id: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    allow_oracle: bool = False,
) -> None:
    """Check a hint's policy name, kind and feature names without building an env.

    Raises:
        ValueError: an unknown policy for ``env_id`` (naming the registered ones), an oracle
            (unless ``allow_oracle``), a non-mapping ``params`` or an unknown feature name.
    """
    from mei_envs.baselines.registry import get_policy_spec, list_policies

    if not isinstance(name, str) or not name:
        raise ValueError(f"obs_hint={name!r}: must be the name of a registered policy")
    try:
        spec = get_policy_spec(env_id, name)
    except KeyError:
        names = sorted(s.name for s in list_policies(env_id)[env_id])
        raise ValueError(
            f"obs_hint={name!r}: no such policy for {env_id}; registered: {names}"
        ) from None
    if spec.kind != "heuristic" and not allow_oracle:
        raise ValueError(
            f"obs_hint={name!r} is an {spec.kind} (it may read the future); an agent hinted "
            "by it is not an online policy. Use a heuristic"
        )
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"obs_hint_params={params!r}: must be a mapping of policy parameters")
    if isinstance(features, str) or not features:
        raise ValueError(f"obs_hint_features={features!r}: must be a non-empty list of names")
    bad = [f for f in features if f not in HINT_FEATURES]
    if bad or len(set(features)) != len(features):
        raise ValueError(
            f"obs_hint_features={list(features)!r}: each must be one of {list(HINT_FEATURES)}, "
            "without repeats"
        )


class PolicyHint:
    """Builds a registered policy for ``env`` and gives its advice at the current state.

    Args:
        env: the env the policy reads (any wrapper of the registered env).
        name: registered policy name (``mei-envs list``).
        params: the policy's parameters (as ``mei-envs evaluate --param``).
        features: which features (``"action"``, ``"keep"``), in that order in the output.
        allow_oracle: accept an oracle policy (then the agent is not online).

    Raises:
        ValueError: see :func:`check_hint`; also ``"keep"`` for a policy without
            ``keep_set()`` and a non-``Discrete`` action space.
    """

    def __init__(
        self,
        env: gym.Env,
        name: str,
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        *,
        allow_oracle: bool = False,
    ) -> None:
        from mei_envs.baselines.registry import make_policy

        env_id = getattr(env.spec, "id", None) or getattr(env.unwrapped.spec, "id", None)
        if env_id is None:
            raise ValueError("obs_hint: the env has no registered id (build it with gym.make)")
        check_hint(env_id, name, params, features, allow_oracle=allow_oracle)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(
                f"obs_hint={name!r}: needs a Discrete action space, got {env.action_space}"
            )
        self.name = name
        self.features = tuple(features)
        self.policy = make_policy(env_id, name, env, **dict(params or {}))
        self.n_actions = int(env.action_space.n)
        self.n_models = 0
        if "keep" in self.features:
            keep = getattr(self.policy, "keep_set", None)
            if not callable(keep):
                raise ValueError(
                    f"obs_hint_features: 'keep' needs a policy with a keep set (keep_set()); "
                    f"{name!r} has none; use ['action']"
                )
            self.n_models = int(getattr(env.unwrapped, "n_models", self.n_actions - 1))
        self.size = self.n_actions * ("action" in self.features) + self.n_models
        self.last_action = -1

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        self.policy.reset(obs, info)

    def features_now(self, obs: Any, info: Mapping[str, Any]) -> np.ndarray:
        """The policy's advice at the current state, as float32 features (calls ``act``)."""
        a = int(self.policy.act(obs, info))
        self.last_action = a
        out = np.zeros(self.size, dtype=np.float32)
        k = 0
        if "action" in self.features:
            out[a] = 1.0
            k = self.n_actions
        if "keep" in self.features:
            keep = self.policy.keep_set()
            if keep is not None:
                out[k:] = keep
        return out


def hinted_space(space: gym.Space, size: int) -> spaces.Box:
    """``space`` (a flat float Box) with ``size`` more entries in [0, 1]."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"obs_hint: needs a flat Box observation space, got {space}")
    low = np.concatenate([space.low, np.zeros(size, dtype=space.dtype)])
    high = np.concatenate([space.high, np.ones(size, dtype=space.dtype)])
    return spaces.Box(low, high, dtype=space.dtype)


class PolicyHintWrapper(gym.ObservationWrapper):
    """Append :class:`PolicyHint`'s features to the observation; masks pass through.

    ``gym.make(id)`` wrapped as ``PolicyHintWrapper(env, "knapsack_greedy")`` observes
    ``[env observation, one-hot of knapsack_greedy's action (M + 1), its keep set (M)]``.
    """

    def __init__(
        self,
        env: gym.Env,
        name: str = "knapsack_greedy",
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        *,
        allow_oracle: bool = False,
    ) -> None:
        super().__init__(env)
        self.hint = PolicyHint(env, name, params, features, allow_oracle=allow_oracle)
        self.observation_space = hinted_space(env.observation_space, self.hint.size)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.hint.reset(obs, info)
        self._info = info
        return self.observation(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._info = info
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation: np.ndarray) -> np.ndarray:
        extra = self.hint.features_now(observation, self._info)
        return np.concatenate([np.asarray(observation, dtype=extra.dtype), extra])

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


@dataclasses.dataclass(frozen=True)
class HintSpec:
    """Which hint to build: a policy name, its parameters and the feature names (plain
    values, as ``TrainArgs.obs_hint*`` and ``config.yml`` hold them)."""

    name: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    features: tuple[str, ...] = DEFAULT_FEATURES

    @classmethod
    def from_args(cls, args: Any) -> HintSpec | None:
        """From an object with ``obs_hint``, ``obs_hint_params``, ``obs_hint_features``
        (``TrainArgs`` or a config.yml ``args`` mapping); None when ``obs_hint`` is unset."""
        get = args.get if isinstance(args, Mapping) else lambda k, d=None: getattr(args, k, d)
        name = get("obs_hint", None)
        if not name:
            return None
        feats = get("obs_hint_features", None) or ",".join(DEFAULT_FEATURES)
        if isinstance(feats, str):
            feats = tuple(p.strip() for p in feats.split(",") if p.strip())
        return cls(str(name), dict(get("obs_hint_params", None) or {}), tuple(feats))

    def check(self, env_id: str) -> None:
        """:func:`check_hint` on this spec."""
        check_hint(env_id, self.name, self.params, self.features)

    def wrap(self, env: gym.Env) -> PolicyHintWrapper:
        return PolicyHintWrapper(env, self.name, self.params, self.features)

    def build(self, env: gym.Env) -> PolicyHint:
        return PolicyHint(env, self.name, self.params, self.features)
