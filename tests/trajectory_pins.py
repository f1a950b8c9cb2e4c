"""Record and replay pinned trajectories: the part every env's ``*_trajectories.py`` shares.

An env's module lists its cases as ``(name, config, seeds, *extra)`` and writes a
``rollout(config, seed, *extra)`` that returns named arrays. :func:`record` stores every case's
arrays in one ``.npz`` under ``name/seed/array`` keys; :func:`assert_unchanged` replays one case
and compares every array it returns with the stored one (the same array names, none missing or
extra, each with the same shape and dtype, integers and booleans exactly, floats to rounding:
``tests.vector_checks.assert_same``). The pins were recorded on a CPU where numpy's float64
exp/log/power are the C library's; on AVX-512 CPUs numpy uses its own kernels, which differ by
about 1 ulp on a few % of inputs, so exact float pins would fail there without any change in
the code. A real change moves an action, a termination or a float far beyond 1e-9.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.vector_checks import assert_same

Rollout = Callable[..., dict[str, np.ndarray]]


def expand(cases: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One ``(name, config, seed, *extra)`` per seed of each ``(name, config, seeds, *extra)``."""
    return [(name, cfg, seed, *extra) for name, cfg, seeds, *extra in cases for seed in seeds]


def case_params(cases: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``pytest.param(name, config, seed, extra)`` per pinned rollout, with id ``name/seed``."""
    return [
        pytest.param(name, cfg, seed, tuple(extra), id=f"{name}/{seed}")
        for name, cfg, seed, *extra in expand(cases)
    ]


def record(cases: Sequence[tuple[Any, ...]], rollout: Rollout, path: Path) -> dict[str, Any]:
    """Roll out every case and seed and write the arrays to ``path`` (``name/seed/array``)."""
    out: dict[str, np.ndarray] = {}
    for name, cfg, seed, *extra in expand(cases):
        for key, arr in rollout(cfg, seed, *extra).items():
            out[f"{name}/{seed}/{key}"] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


@functools.cache
def _pinned(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def assert_unchanged(path: Path, name: str, seed: int, got: dict[str, np.ndarray]) -> None:
    """The replayed arrays ``got`` of case ``name`` with ``seed`` equal those recorded in
    ``path``: the same array names, and each with the same shape and values."""
    pinned = _pinned(path)
    prefix = f"{name}/{seed}/"
    stored = sorted(k.removeprefix(prefix) for k in pinned if k.startswith(prefix))
    assert sorted(got) == stored, (name, seed, sorted(got), stored)
    for key, arr in got.items():
        want = pinned[prefix + key]
        assert arr.shape == want.shape, (name, seed, key, arr.shape, want.shape)
        assert_same(arr, want, prefix + key, close=True)
