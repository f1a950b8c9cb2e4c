"""Frozen, flat, validated configuration dataclasses shared by every environment.

Each environment has one ``@dataclass(frozen=True)`` config subclassing :class:`EnvConfig`.
Values are plain numbers, strings, booleans or lists of those, so a config round-trips
through YAML, JSON, ``gym.make(id, **kwargs)``, ``gym.make(id, config={...})`` and the CLI's
``--set key=value``. Unknown keys are an error that names them.

:class:`Config` is the base of every validated config in the project: env configs
(:class:`EnvConfig`) and experiment configs (``mei_envs.experiments.compare.CompareConfig``)
share its construction (unknown keys, presets, type coercion by the field annotations,
numpy scalars accepted) and its range/choice checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: subclasses add fields and override :meth:`validate`.

    Named scenario presets: a subclass that declares a field ``preset: str = "default"``
    and a class attribute ``PRESETS = {"default": {}, "name": {field: value, ...}}`` gets
    them applied by :meth:`from_dict`: the preset's values first, then every explicit value
    on top, so ``{"preset": "vehicular", "lambda_energy": 2}`` is the vehicular scenario with
    one change. ``to_dict`` keeps the preset's name and every field, so it round-trips.
    """

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # What a ``list[X]``/``tuple[X, ...]`` field holds after coercion (tuple: hashable).
    SEQUENCE_TYPE: ClassVar[type] = tuple
    # The exception raised for a bad key or value (a ConfigError subclass).
    ERROR: ClassVar[type[ValueError]] = None  # type: ignore[assignment]  (set below)
    # Coerce values to the field annotations (False: take them as given; validate() checks).
    COERCE: ClassVar[bool] = True

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None = None, **overrides: Any) -> C:
        """Build a validated config from a mapping plus keyword overrides.

        Raises:
            ConfigError: for unknown keys (named, with the allowed ones) or invalid values.
        """
        error = cls.ERROR
        if values is not None and not isinstance(values, Mapping):
            raise error(
                f"{cls.__name__}: config={values!r} must be a mapping of keys to values "
                f"(allowed keys are {sorted(cls.field_names())})"
            )
        merged = dict(values or {})
        merged.update(overrides)
        known = set(cls.field_names())
        unknown = sorted(set(merged) - known, key=str)
        if unknown:
            raise error(
                f"{cls.__name__}: unknown key(s) {unknown}; allowed keys are {sorted(known)}"
            )
        if "preset" in known:
            name = merged.get("preset", cls.__dataclass_fields__["preset"].default)
            if not isinstance(name, str) or name not in cls.PRESETS:
                raise error(f"{cls.__name__}.preset={name!r}: must be one of {sorted(cls.PRESETS)}")
            merged = {**cls.PRESETS[name], **merged}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in merged
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise error(
                f"{cls.__name__} {merged.get('name', '')!r}: missing required key(s) {missing}"
                if "name" in merged
                else f"{cls.__name__}: missing required key(s) {missing}"
            )
        if not cls.COERCE:
            cfg = cls(**merged)
            cfg.validate()
            return cfg
        hints = typing.get_type_hints(cls)
        try:
            coerced = {
                k: _coerce(cls.__name__, k, v, hints[k], cls.SEQUENCE_TYPE)
                for k, v in merged.items()
            }
        except ConfigError as exc:
            raise error(str(exc)) from None
        cfg = cls(**coerced)
        cfg.validate()
        return cfg

    @classmethod
    def for_env(
        cls: type[C], config: C | Mapping[str, Any] | None, render_mode: Any = None, **kwargs: Any
    ) -> C:
        """The config an env's ``__init__(config=None, render_mode=None, **kwargs)`` runs on:
        an instance of this class (``kwargs`` replace its fields) or a mapping (with ``kwargs``
        on top, presets applied). None of our envs renders, so ``render_mode`` must be None.
        """
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: this env has no render modes")
        if isinstance(config, cls):
            return config.replace(**kwargs) if kwargs else config
        return cls.from_dict(config, **kwargs)

    @classmethod
    def preset_names(cls) -> list[str]:
        """Names of the scenario presets (empty for a config without presets)."""
        return list(cls.PRESETS)

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict(self.to_dict(), **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def validate(self) -> None:  # pragma: no cover - overridden
        """Check every field; raise :class:`ConfigError` naming the first bad one."""

    # ---- helpers for subclasses' validate() -------------------------------------------
    def _check_range(
        self,
        name: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
        integer: bool = False,
    ) -> None:
        v = getattr(self, name)
        bad_type = isinstance(v, bool) or not isinstance(v, numbers.Real)
        if integer and not bad_type and float(v) != int(v):
            bad_type = True
        if bad_type or (isinstance(v, float) and not math.isfinite(v)):
            kind = "an integer" if integer else "a finite number"
            raise self.ERROR(f"{type(self).__name__}.{name}={v!r}: must be {kind}")
        too_low = lo is not None and (v <= lo if lo_open else v < lo)
        too_high = hi is not None and (v >= hi if hi_open else v > hi)
        if too_low or too_high:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            raise self.ERROR(
                f"{type(self).__name__}.{name}={v!r}: must be in {left}{lo_s}, {hi_s}{right}"
            )

    def _check_choice(self, name: str, allowed: Iterable[str]) -> None:
        v = getattr(self, name)
        allowed = list(allowed)
        if v not in allowed:
            raise self.ERROR(f"{type(self).__name__}.{name}={v!r}: must be one of {allowed}")


Config.ERROR = ConfigError


@dataclasses.dataclass(frozen=True)
class EnvConfig(Config):
    """Base of every environment's config (see :class:`Config`)."""


def parse_set_options(items: Iterable[str], *, flag: str = "--set") -> dict[str, Any]:
    """Parse CLI ``key=value`` strings; values are JSON when they parse, else strings.

    Raises:
        ConfigError: an item without ``=`` or with an empty key, naming ``flag`` and the item.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"{flag} {item!r}: empty key")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _coerce(owner: str, name: str, value: Any, hint: Any, seq: type = tuple) -> Any:
    """Coerce YAML/CLI/numpy values to the field's declared type.

    ``int``, ``float``, ``bool`` and ``str`` accept their numpy counterparts
    (``np.int64(8)``, ``np.float32(2.0)``); an integral float is an int (YAML ``1e5``);
    ``list[X]``/``tuple[X, ...]`` become ``seq`` of coerced items; ``dict`` must be a mapping;
    a union tries its members in order.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        errors = []
        for member in members:
            try:
                return _coerce(owner, name, value, member, seq)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        if type(None) in typing.get_args(hint):
            errors.append("null")
        raise ConfigError(
            f"{owner}.{name}={value!r}: must be "
            + " or ".join(e.removeprefix("must be ") for e in errors)
        )
    if origin in (tuple, list) or hint in (tuple, list):
        if isinstance(value, (str, bytes, Mapping)):
            raise ConfigError(f"{owner}.{name}={value!r}: must be a list")
        try:
            items = list(value)
        except TypeError as exc:
            raise ConfigError(f"{owner}.{name}={value!r}: must be a list") from exc
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        return seq(_coerce(owner, name, v, item_hint, seq) for v in items)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{owner}.{name}={value!r}: must be a mapping")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{owner}.{name}={value!r}: must be true or false")
    if hint is int:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            raise ConfigError(f"{owner}.{name}={value!r}: must be an integer")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{owner}.{name}={value!r}: must be an integer")
    if hint is float:
        bad = isinstance(value, bool) or type(value).__name__ == "bool_"
        if bad or not isinstance(value, numbers.Real):
            raise ConfigError(f"{owner}.{name}={value!r}: must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name}={value!r}: must be a string")
        return str(value)
    return value
