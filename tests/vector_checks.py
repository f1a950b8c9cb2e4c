"""One step of a native vector env beside its SyncVectorEnv reference, for the envs'
equivalence tests."""

from __future__ import annotations

from typing import Any

import numpy as np

# numpy's own float64 exp/log/power (used for arrays on CPUs with AVX-512) and the C library's
# (Python floats' math.exp, **) differ by about 1 ulp on a few % of inputs (measured on an
# AVX512_ICL machine: np.exp != math.exp on 4.6% of 100k inputs). An env whose single-env path
# uses Python floats and whose batched path numpy arrays then agrees to rounding, not bit for
# bit, on such CPUs. ``close=True`` compares floats to these tolerances (float32 observations:
# one float32 rounding; float64: 1e-9 relative) and everything else exactly.
CLOSE_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-9}


def assert_same(x: Any, y: Any, err_msg: str = "", close: bool = False) -> None:
    """Exactly equal; with ``close``, floats equal to :data:`CLOSE_RTOL` (bools, ints and
    shapes exactly)."""
    x, y = np.asarray(x), np.asarray(y)
    if close and y.dtype.kind == "f":
        assert x.shape == y.shape and x.dtype == y.dtype, err_msg
        np.testing.assert_allclose(x, y, rtol=CLOSE_RTOL[y.dtype], atol=0.0, err_msg=err_msg)
    else:
        np.testing.assert_array_equal(x, y, err_msg=err_msg)


def step_both(vec: Any, ref: Any, actions: np.ndarray, where: str, close: bool = False) -> tuple:
    """Step both with ``actions``; assert equal observations, rewards, terminations and
    truncations (``close``: see :func:`assert_same`); return ``(obs, reward, terminated,
    truncated, info, ref_info)``."""
    out = vec.step(actions)
    out_ref = ref.step(actions)
    for name, x, y in zip(
        ("obs", "reward", "terminated", "truncated"), out[:4], out_ref[:4], strict=True
    ):
        assert_same(x, y, f"{where}: {name}", close)
    return (*out, out_ref[4])
