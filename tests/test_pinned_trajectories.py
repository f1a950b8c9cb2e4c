"""EarlyExitUpload-v0 trajectories recorded before the architecture refactor, replayed on v1
with v0's channel as explicit config values, must not move."""

from __future__ import annotations

import pytest

from tests.pinned_trajectories import CASES, PINNED_FILE, rollout
from tests.trajectory_pins import assert_unchanged, case_params


@pytest.mark.parametrize(("name", "config", "seed", "extra"), case_params(CASES))
def test_trajectory_unchanged(name, config, seed, extra):
    assert_unchanged(PINNED_FILE, name, seed, rollout(config, seed, *extra))
