"""The shared config base: presets applied under explicit values, round trips, errors."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from mei_envs.config import ConfigError, EnvConfig


@dataclasses.dataclass(frozen=True)
class _Cfg(EnvConfig):
    PRESETS: ClassVar = {"default": {}, "far": {"distance_m": 900.0, "users": 3}}

    preset: str = "default"
    distance_m: float = 100.0
    users: int = 1

    def validate(self) -> None:
        self._check_choice("preset", self.PRESETS)
        self._check_range("distance_m", 0.0, lo_open=True)


def test_preset_values_then_explicit_overrides():
    assert _Cfg.from_dict().distance_m == 100.0
    far = _Cfg.from_dict(preset="far")
    assert (far.distance_m, far.users, far.preset) == (900.0, 3, "far")
    mixed = _Cfg.from_dict({"preset": "far", "users": 5})
    assert (mixed.distance_m, mixed.users) == (900.0, 5)
    assert _Cfg.from_dict(mixed.to_dict()) == mixed
    assert _Cfg.preset_names() == ["default", "far"]


def test_unknown_preset_names_the_field():
    msg = r"_Cfg\.preset='nope': must be one of \['default', 'far'\]"
    with pytest.raises(ConfigError, match=msg):
        _Cfg.from_dict(preset="nope")
