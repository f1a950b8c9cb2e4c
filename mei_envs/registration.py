"""One idempotent place where every mei-envs environment is registered with Gymnasium."""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, max_episode_steps or None). Truncation is left to TimeLimit where a
# limit applies; the envs here end by termination when their token/request budget is spent.
_SPECS: dict[str, tuple[str, int | None]] = {
    "mei_envs/EarlyExitUpload-v0": ("mei_envs.envs.early_exit_upload:EarlyExitUploadEnv", None),
}

ENV_IDS: tuple[str, ...] = tuple(_SPECS)


def register_envs() -> None:
    """Register all environments; calling it again is a no-op."""
    for env_id, (entry_point, max_steps) in _SPECS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
