"""EarlyExitUpload's vector env with few sub-envs (issue 12, session 9): up to
``SCALAR_MAX_ENVS`` sub-envs it steps one lean single env per sub-env; that path must give
what SyncVectorEnv over single envs gives (and what the batched path gives), bit for bit,
across episode ends, reseeds of some sub-envs and resets with options."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import mei_envs.envs.early_exit_upload_vector as vector_module
from mei_envs.envs.early_exit_upload_vector import EarlyExitUploadVectorEnv
from tests.test_early_exit_vector import CONFIGS, _compare_infos
from tests.vector_checks import step_both

ENV_ID = "mei_envs/EarlyExitUpload-v1"


def _sync(n: int, config: dict) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda: gym.make(ENV_ID, **{**config, "info": "lean"})] * n,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


@pytest.mark.parametrize("n", [1, 3])
def test_few_sub_envs_take_the_single_env_path(n: int) -> None:
    assert vector_module.SCALAR_MAX_ENVS >= 3
    vec = EarlyExitUploadVectorEnv(n)
    assert vec.scalar and len(vec.subs) == n
    assert all(s.config.info == "lean" for s in vec.subs)
    assert not EarlyExitUploadVectorEnv(vector_module.SCALAR_MAX_ENVS + 1).scalar


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())) or "default"
)
def test_single_env_path_equals_sync_vector_env(monkeypatch, config: dict) -> None:
    monkeypatch.setattr(vector_module, "SCALAR_MAX_ENVS", 5)
    n = 5
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **config)
    assert vec.scalar
    ref = _sync(n, config)
    rng = np.random.default_rng(2)
    ends = 0
    for seed in (3, [8, None, 1, None, 4], None):
        obs, info = vec.reset(seed=seed)
        obs_r, info_r = ref.reset(seed=seed)
        np.testing.assert_array_equal(obs, obs_r)
        assert info == info_r == {}
        for t in range(vec.model.K + 10):
            a = rng.integers(0, vec.single_action_space.n, n)
            *_, term, _, info, info_r = step_both(vec, ref, a, f"step {t}")
            _compare_infos(info, info_r, f"step {t}")
            ends += int(term.sum())
    assert ends >= n
    assert vec.action_masks().shape == (n, vec.single_action_space.n)


def test_single_env_path_resets_with_options_and_checks_actions() -> None:
    n, config = 2, {"tokens": 12, "exit_prob": 0.6}
    vec, ref = EarlyExitUploadVectorEnv(n, **config), _sync(n, config)
    assert vec.scalar
    with pytest.raises(RuntimeError, match="before reset"):
        vec.step(np.zeros(n, dtype=np.int64))
    exits = [1, 0] * 6
    obs, _ = vec.reset(seed=[5, 9], options={"exit_sequence": exits})
    obs_r, _ = ref.reset(seed=[5, 9], options={"exit_sequence": exits})
    np.testing.assert_array_equal(obs, obs_r)
    with pytest.raises(ValueError, match="reset options"):
        vec.reset(options={"exits": exits})
    for bad in (np.array([0, 2]), np.array([0]), np.array([0.0, 1.0]), np.array([-1, 0])):
        with pytest.raises(ValueError, match="actions"):
            vec.step(bad)
    rng = np.random.default_rng(0)
    for t in range(40):
        a = rng.integers(0, 2, n)
        *_, info, info_r = step_both(vec, ref, a, f"step {t}")
        _compare_infos(info, info_r, f"step {t}")
