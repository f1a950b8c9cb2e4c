"""SplitFedAlloc-v0 trajectories recorded before issue 12's speed-ups must not move
(observations, rewards, terminations and every info key, bit for bit)."""

from __future__ import annotations

import pytest

from tests.split_fed_trajectories import CASES, PINNED_FILE, rollout
from tests.trajectory_pins import assert_unchanged, case_params


@pytest.mark.parametrize(("name", "config", "seed", "extra"), case_params(CASES))
def test_trajectory_unchanged(name, config, seed, extra):
    assert_unchanged(PINNED_FILE, name, seed, rollout(config, seed, *extra))
