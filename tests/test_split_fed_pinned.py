"""SplitFedAlloc-v0 trajectories recorded before issue 12's speed-ups must not move
(observations, rewards, terminations and every info key, bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.split_fed_trajectories import CASES, PINNED_FILE, rollout

PINNED = np.load(PINNED_FILE)


@pytest.mark.parametrize(
    ("name", "config", "seed"),
    [(name, config, seed) for name, config, seeds in CASES for seed in seeds],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_trajectory_unchanged(name, config, seed):
    got = rollout(config, seed)
    for key in ("obs", "rew", "done", "info_len", "info_keys", "info"):
        want = PINNED[f"{name}/{seed}/{key}"]
        assert got[key].shape == want.shape, (name, seed, key)
        np.testing.assert_array_equal(got[key], want, err_msg=f"{name}/{seed}/{key}")
