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
    and the subclass builds its model, spaces and tables in ``_setup``. No env renders, so
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
        self._setup()

    def _setup(self) -> None:
        """Build everything the env needs from ``self.config`` (called once, by __init__)."""
