"""Argument checks shared by the numpy-only domain modules (wireless, hardware, llm.costs)
and the environments' discrete-action check.

They raise ``ValueError`` naming the argument, its value and what is allowed. Env configs
use :class:`mei_envs.config.EnvConfig`'s ``_check_range`` instead (``ConfigError``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["check_array", "check_int", "as_output", "check_discrete_action"]


def check_array(
    name: str,
    value: ArrayLike,
    *,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
    hi_open: bool = False,
    finite: bool = True,
) -> NDArray[np.float64]:
    """``value`` as a float array after checking it is numeric, not NaN (finite unless
    ``finite=False``) and every element lies in the range ``lo..hi`` (open or closed ends).
    """
    try:
        arr = np.asarray(value)
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == object):
            raise TypeError
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={value!r}: must be a number or an array of numbers") from exc
    if np.isnan(arr).any():
        raise ValueError(f"{name}={value!r}: must not contain NaN")
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name}={value!r}: must be finite")
    bad = np.zeros(arr.shape, dtype=bool)
    if lo is not None:
        bad |= arr <= lo if lo_open else arr < lo
    if hi is not None:
        bad |= arr >= hi if hi_open else arr > hi
    if bad.any():
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        first_bad = arr[bad].ravel()[0]
        raise ValueError(
            f"{name}={value!r}: every value must be in {left}{lo_s}, {hi_s}{right} "
            f"(got {first_bad:g})"
        )
    return arr


def check_int(name: str, value: Any, lo: int) -> int:
    """An integer (Python or numpy, not bool) ``>= lo``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}={value!r}: must be an integer >= {lo}")
    return int(value)


def as_output(arr: NDArray[np.float64]) -> float | NDArray[np.float64]:
    """0-d results become Python floats, everything else stays an array."""
    return float(arr) if np.ndim(arr) == 0 else arr


def check_discrete_action(action: Any, n: int) -> int:
    """``action`` as an int in ``[0, n)`` (a Python or numpy integer, or a one-element
    integer array); ``ValueError`` naming the value and the range otherwise."""
    if type(action) is int or isinstance(action, np.integer):  # the common, fast path
        if 0 <= action < n:
            return int(action)
        raise ValueError(f"action={action!r}: must be an integer in [0, {n - 1}]")
    try:
        arr = np.asarray(action)
    except Exception as exc:  # pragma: no cover - numpy accepts nearly anything
        raise ValueError(f"action={action!r}: must be an integer in [0, {n - 1}]") from exc
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action={action!r}: must be an integer in [0, {n - 1}]")
    a = int(arr.reshape(()))
    if not 0 <= a < n:
        raise ValueError(f"action={action!r}: must be an integer in [0, {n - 1}]")
    return a
