"""EdgeLLMCache-v0 trajectories recorded before the speed-ups of issue 12 must not move
(observations, rewards, terminations, every info key and the action mask, bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.edge_llm_cache_trajectories import CASES, PINNED_FILE, rollout

PINNED = np.load(PINNED_FILE)


@pytest.mark.parametrize(
    ("name", "config", "seed", "legal"),
    [(name, config, seed, legal) for name, config, seeds, legal in CASES for seed in seeds],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_trajectory_unchanged(name, config, seed, legal):
    got = rollout(config, seed, legal)
    for key in ("act", "obs", "rew", "term", "info", "mask"):
        want = PINNED[f"{name}/{seed}/{key}"]
        assert got[key].shape == want.shape, (name, seed, key)
        np.testing.assert_array_equal(got[key], want, err_msg=f"{name}/{seed}/{key}")
