"""The reinforcement-learning algorithms the trainer knows, and which action spaces they fit.

Torch, Stable-Baselines3 and sb3-contrib are imported here; ``mei_envs`` never imports this.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "a2c": A2C,
    "dqn": DQN,
    "sac": SAC,
    "td3": TD3,
    "maskable_ppo": MaskablePPO,
}

# Action spaces each algorithm supports (SB3 docs, "RL Algorithms" table). None: any of
# Box, Discrete, MultiDiscrete, MultiBinary.
_ACTION_SPACES: dict[str, tuple[type[spaces.Space], ...] | None] = {
    "ppo": None,
    "a2c": None,
    "dqn": (spaces.Discrete,),
    "sac": (spaces.Box,),
    "td3": (spaces.Box,),
    "maskable_ppo": (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
}

# Algorithms that keep a replay buffer (checkpointed alongside the model).
OFF_POLICY: frozenset[str] = frozenset({"dqn", "sac", "td3"})


def get_algo_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class for ``algo``.

    Raises:
        ValueError: ``algo`` is unknown; the message lists the known names.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo={algo!r}: unknown algorithm; known algorithms are {sorted(ALGOS)}")
    return ALGOS[algo]


def algo_name_of(cls: type) -> str:
    """The key in :data:`ALGOS` of an SB3 class (or subclass)."""
    for name, algo_cls in ALGOS.items():
        if cls is algo_cls:
            return name
    for name, algo_cls in ALGOS.items():
        if issubclass(cls, algo_cls):
            return name
    raise ValueError(f"class {cls.__name__}: not one of the known algorithms {sorted(ALGOS)}")


def check_algo_for_env(algo: str, env: gym.Env | spaces.Space) -> None:
    """Check that ``algo`` can act in ``env``'s action space (an env, vec env or space).

    Raises:
        ValueError: unknown ``algo`` (lists the known ones), or an action space the algorithm
            cannot handle (names the algorithm, the space and the supported kinds); also when
            ``maskable_ppo`` is asked for an env without ``action_masks()``, or an algorithm
            without masks for an env that raises on masked actions (``invalid_action``).
    """
    get_algo_class(algo)
    space = env if isinstance(env, spaces.Space) else env.action_space
    allowed = _ACTION_SPACES[algo]
    if allowed is not None and not isinstance(space, allowed):
        names = [c.__name__ for c in allowed]
        raise ValueError(
            f"algo={algo!r} needs an action space of type {names}; "
            f"the env's action space is {space}"
        )
    is_vec_env = hasattr(env, "env_method")  # VecEnv: masks are checked by sb3-contrib
    base = getattr(env, "unwrapped", env)
    if (
        algo != "maskable_ppo"
        and callable(getattr(base, "action_masks", None))
        and getattr(getattr(base, "config", None), "invalid_action", None) == "raise"
    ):
        raise ValueError(
            f"algo={algo!r} acts without action masks, but {type(base).__name__} raises on a "
            "masked action (its invalid_action='raise'): use --algo maskable_ppo, or serve "
            "masked actions as bypasses with --set invalid_action=bypass"
        )
    if algo == "maskable_ppo" and not isinstance(env, spaces.Space) and not is_vec_env:
        base = getattr(env, "unwrapped", env)
        if not callable(getattr(base, "action_masks", None)):
            raise ValueError(
                f"algo='maskable_ppo' needs an env with an action_masks() method; "
                f"{type(base).__name__} has none"
            )
