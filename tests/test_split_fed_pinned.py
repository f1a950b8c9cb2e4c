"""SplitFedAlloc-v0 trajectories recorded before issue 12's speed-ups must not move
(observations, rewards, terminations and every info key, bit for bit)."""

from __future__ import annotations

import pytest

from tests.split_fed_trajectories import CASES, assert_unchanged


@pytest.mark.parametrize(
    ("name", "config", "seed"),
    [(name, config, seed) for name, config, seeds in CASES for seed in seeds],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_trajectory_unchanged(name, config, seed):
    assert_unchanged(name, config, seed)
