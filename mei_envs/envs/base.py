"""What every single env of mei-envs shares: construction from its config class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic

import gymnasium as gym
from gymnasium.core import ActType, ObsType

from mei_envs.config import EnvConfig


class MeiEnv(gym.Env[ObsType, ActType], Generic[ObsType, ActType]):
    """Base of the single envs: ``XEnv(config=None, render_mode=None, **kwargs)``.

    ``config`` is an instance of the env's ``config_class`` (``kwargs`` replace its fields) or
    a mapping (presets applied, ``kwargs`` on top); the validated config is ``self.config``,
    and the subclass builds its model, spaces and tables from it in ``_setup(cfg)``. ``reset``
    seeds ``self.np_random`` (Gymnasium's ``reset``) and calls the subclass' ``_reset(options)``,
    so every episode draws from the generator ``reset(seed=...)`` made. No env renders, so
    ``render_mode`` must be None.
    """

    config_class: ClassVar[type[EnvConfig]]

    def __init__(
        self,
        config: EnvConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.config = self.config_class.for_env(config, render_mode, **kwargs)
        self._setup(self.config)

    def _setup(self, cfg: EnvConfig) -> None:
        """Build everything the env needs from its validated config ``cfg`` (``self.config``;
        called once, by __init__)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Seed ``self.np_random`` from ``seed`` (Gymnasium's ``reset``), then ``_reset``."""
        super().reset(seed=seed)
        return self._reset(options)

    def _reset(self, options: dict[str, Any] | None) -> tuple[ObsType, dict[str, Any]]:
        """Start an episode (``self.np_random`` is seeded); its observation and info."""
        raise NotImplementedError
