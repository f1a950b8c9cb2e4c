"""The native vector env contract (mei_envs.vector) on a toy env: seeding, SAME_STEP autoreset
and the info layout must match SyncVectorEnv over the single env, so every env's vector
version inherits a checked base."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from mei_envs.vector import MeiVectorEnv, check_num_envs, seed_list


class Walk(gym.Env):
    """A random walk that ends at |x| >= 3: draws one step at reset and one per step."""

    def __init__(self, config=None, render_mode=None) -> None:
        self.observation_space = spaces.Box(-10.0, 10.0, (1,), np.float64)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.integers(-1, 2))
        return np.array([self.x]), {"start": self.x}

    def step(self, action):
        self.x += (2 * int(action) - 1) + float(self.np_random.integers(-1, 2))
        done = abs(self.x) >= 3
        return np.array([self.x]), -abs(self.x), done, False, {"x": self.x, "even": done}


class WalkVector(MeiVectorEnv):
    single_env_class = Walk

    def _setup(self, single: Walk) -> None:
        self.x = np.zeros(self.num_envs)

    def _reset_envs(self, mask, options=None):
        for i in np.flatnonzero(mask):
            self.x[i] = float(self.rngs[i].integers(-1, 2))
        return self.x[:, None].copy(), {"start": self.x.copy(), "_start": mask.copy()}

    def _step(self, actions):
        noise = np.array([float(r.integers(-1, 2)) for r in self.rngs])
        self.x = self.x + (2 * np.asarray(actions) - 1) + noise
        term = np.abs(self.x) >= 3
        reward = -np.abs(self.x)
        n = self.num_envs
        ones = np.ones(n, bool)
        infos = {"x": self.x.copy(), "_x": ones, "even": term.copy(), "_even": ones.copy()}
        trunc = np.zeros(n, bool)
        obs, infos = self._autoreset(self.x[:, None].copy(), term, trunc, infos)
        return obs, reward, term, trunc, infos


def test_matches_sync_vector_env_across_episode_ends():
    n = 4
    vec = WalkVector(n)
    ref = SyncVectorEnv([Walk] * n, autoreset_mode=AutoresetMode.SAME_STEP)
    o1, i1 = vec.reset(seed=7)
    o2, i2 = ref.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(i1["start"], i2["start"])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(200):
        a = rng.integers(0, 2, n)
        o1, r1, t1, _, i1 = vec.step(a)
        o2, r2, t2, _, i2 = ref.step(a)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(t1, t2)
        ends += int(t1.sum())
        assert set(i1) == set(i2), (sorted(i1), sorted(i2))
        for k in ("x", "start"):
            if k in i2:
                np.testing.assert_array_equal(i1["_" + k], i2["_" + k])
                m = i2["_" + k]
                np.testing.assert_array_equal(i1[k][m], i2[k][m])
        if t2.any():
            np.testing.assert_array_equal(i1["_final_obs"], i2["_final_obs"])
            for j in np.flatnonzero(t2):
                np.testing.assert_array_equal(i1["final_obs"][j], i2["final_obs"][j])
                assert i1["final_info"]["x"][j] == i2["final_info"]["x"][j]
            np.testing.assert_array_equal(i1["final_info"]["_x"], i2["final_info"]["_x"])
    assert ends > 20  # the comparison crossed many episode ends


def test_reset_without_seed_keeps_generators_and_seed_list_checks():
    vec, single = WalkVector(3), Walk()
    vec.reset(seed=1)
    single.reset(seed=1)
    starts_vec, starts_single = [], []
    for _ in range(30):  # reset() without a seed continues each sub-env's generator
        vec.reset()
        single.reset()
        starts_vec.append(vec.x[0])
        starts_single.append(single.x)
    assert starts_vec == starts_single
    assert len(set(starts_vec)) == 3
    fresh = WalkVector(3)
    fresh.reset(seed=[5, 6, 7])
    single = Walk()
    single.reset(seed=6)
    assert fresh.x[1] == single.x
    assert seed_list(3, 2) == [3, 4]
    with pytest.raises(ValueError, match="needs 3 entries"):
        seed_list([1, 2], 3)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="num_envs"):
            check_num_envs(bad)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="before reset"):
        WalkVector(2).step(np.zeros(2, int))
