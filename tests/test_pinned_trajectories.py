"""EarlyExitUpload-v0 trajectories recorded before the architecture refactor, replayed on v1
with v0's channel as explicit config values, must not move."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pinned_trajectories import CASES, PINNED_FILE, rollout

PINNED = np.load(PINNED_FILE)


@pytest.mark.parametrize(
    ("name", "config", "seed"),
    [(name, config, seed) for name, config, seeds in CASES for seed in seeds],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_trajectory_unchanged(name, config, seed):
    got = rollout(config, seed)
    for key in ("obs", "rew", "info"):
        want = PINNED[f"{name}/{seed}/{key}"]
        assert got[key].shape == want.shape, (name, seed, key)
        np.testing.assert_array_equal(got[key], want, err_msg=f"{name}/{seed}/{key}")
