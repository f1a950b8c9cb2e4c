"""Properties every registered environment must have (parametrized over all ids)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mei_envs

ENV_IDS = list(mei_envs.ENV_IDS)
# Config for unmasked random actions (check_env, action_space.sample()): envs that raise on a
# masked action by default serve it as a bypass instead.
UNMASKED = {"mei_envs/EdgeLLMCache-v0": {"invalid_action": "bypass"}}


def _rollout(env: gym.Env, seed: int, steps: int = 500) -> list:
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs.copy()]
    for _ in range(steps):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        out.append((obs.copy(), rew, term, trunc))
        if term or trunc:
            break
    return out


def _legal_actions(env: gym.Env, seed: int, n: int) -> list:
    """``n`` seeded actions, each legal where the env exposes ``action_masks`` (Discrete)."""
    env.action_space.seed(seed)
    masks = getattr(env.unwrapped, "action_masks", None)
    if masks is None or not isinstance(env.action_space, gym.spaces.Discrete):
        return [env.action_space.sample() for _ in range(n)]
    return [env.action_space.sample(mask=masks().astype(np.int8)) for _ in range(n)]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    check_env(gym.make(env_id, **UNMASKED.get(env_id, {})).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(gym.make(env_id, **UNMASKED.get(env_id, {})).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    kw = UNMASKED.get(env_id, {})
    a = _rollout(gym.make(env_id, **kw), seed=7)
    b = _rollout(gym.make(env_id, **kw), seed=7)
    c = _rollout(gym.make(env_id, **kw), seed=8)
    assert len(a) == len(b)
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    differs = len(a) != len(c) or any(
        not np.array_equal(x[0], y[0]) for x, y in zip(a[1:], c[1:], strict=False)
    )
    assert differs, "different seeds gave identical trajectories"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_mid_episode(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=3)
    for _ in range(3):
        env.step(_legal_actions(env, 0, 1)[0])
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(10):
        (a,) = _legal_actions(env, 1, 1)
        o1, r1, t1, u1, _ = env.step(a)
        o2, r2, t2, u2, _ = clone.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1, u1) == (r2, t2, u2)
        if t1 or u1:
            break


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_info_declares_metrics(env_id: str) -> None:
    env = gym.make(env_id)
    spec = env.unwrapped.metadata["info_metrics"]
    assert spec and set(spec.values()) <= {"sum", "mean", "last"}
    env.reset(seed=0)
    _, _, _, _, info = env.step(_legal_actions(env, 0, 1)[0])
    missing = set(spec) - set(info)
    assert not missing, f"info lacks declared metrics {missing}"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_config_key_is_named(env_id: str) -> None:
    with pytest.raises(ValueError, match="not_a_key"):
        gym.make(env_id, config={"not_a_key": 1})


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, mei_envs, mei_envs.llm, mei_envs.hardware, mei_envs.wireless; "
        "import gymnasium as gym; "
        "[gym.make(i).reset(seed=0) for i in mei_envs.ENV_IDS]; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
