"""One step of a native vector env beside its SyncVectorEnv reference, for the envs'
equivalence tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def step_both(vec: Any, ref: Any, actions: np.ndarray, where: str) -> tuple:
    """Step both with ``actions``; assert equal observations, rewards, terminations and
    truncations; return ``(obs, reward, terminated, truncated, info, ref_info)``."""
    out = vec.step(actions)
    out_ref = ref.step(actions)
    for name, x, y in zip(
        ("obs", "reward", "terminated", "truncated"), out[:4], out_ref[:4], strict=True
    ):
        np.testing.assert_array_equal(x, y, err_msg=f"{where}: {name}")
    return (*out, out_ref[4])
