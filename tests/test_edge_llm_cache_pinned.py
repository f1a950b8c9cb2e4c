"""EdgeLLMCache-v0 trajectories recorded before the speed-ups of issue 12 must not move
(observations, rewards, terminations, every info key and the action mask, bit for bit)."""

from __future__ import annotations

import pytest

from tests.edge_llm_cache_trajectories import CASES, PINNED_FILE, rollout
from tests.trajectory_pins import assert_unchanged, case_params


@pytest.mark.parametrize(("name", "config", "seed", "extra"), case_params(CASES))
def test_trajectory_unchanged(name, config, seed, extra):
    assert_unchanged(PINNED_FILE, name, seed, rollout(config, seed, *extra))
