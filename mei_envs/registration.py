"""One idempotent place where every mei-envs environment is registered with Gymnasium.

``ENV_SPECS`` is a list of :func:`gymnasium.register` keyword sets, so an entry can carry
anything Gymnasium accepts (``vector_entry_point``, ``max_episode_steps``, ``kwargs``...).
A new environment adds one entry here and its own files; nothing else is edited.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

# Truncation is left to TimeLimit where a limit applies (``max_episode_steps``); the envs
# here end by termination when their token/request budget is spent.
ENV_SPECS: tuple[dict[str, Any], ...] = (
    {
        "id": "mei_envs/EarlyExitUpload-v1",
        "entry_point": "mei_envs.envs.early_exit_upload:EarlyExitUploadEnv",
        "vector_entry_point": "mei_envs.envs.early_exit_upload_vector:EarlyExitUploadVectorEnv",
    },
    {
        "id": "mei_envs/EdgeLLMCache-v0",
        "entry_point": "mei_envs.envs.edge_llm_cache:EdgeLLMCacheEnv",
        "vector_entry_point": "mei_envs.envs.edge_llm_cache_vector:EdgeLLMCacheVectorEnv",
    },
    {
        "id": "mei_envs/SplitFedAlloc-v0",
        "entry_point": "mei_envs.envs.split_fed_alloc:SplitFedAllocEnv",
        "vector_entry_point": "mei_envs.envs.split_fed_alloc_vector:SplitFedAllocVectorEnv",
    },
)

ENV_IDS: tuple[str, ...] = tuple(spec["id"] for spec in ENV_SPECS)


def env_config_class(env_id: str) -> type | None:
    """The config dataclass of a registered env (its class attribute ``config_class``)."""
    spec = gym.spec(env_id)
    env_cls = gym.envs.registration.load_env_creator(spec.entry_point)
    return getattr(env_cls, "config_class", None)


def env_presets(env_id: str) -> list[str]:
    """Names of an env's scenario presets (``gym.make(env_id, preset=name)``)."""
    cfg_cls = env_config_class(env_id)
    return list(cfg_cls.preset_names()) if cfg_cls is not None else []


def register_envs() -> None:
    """Register all environments; calling it again is a no-op."""
    for spec in ENV_SPECS:
        if spec["id"] in gym.registry:
            continue
        gym.register(**spec)
