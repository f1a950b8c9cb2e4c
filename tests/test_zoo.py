"""rl-baselines3-zoo smoke test: our hyperparameter files work with ``rl_zoo3.train``.

rl_zoo3 looks the exact env id up in the YAML (``mei_envs/EarlyExitUpload-v1``) and turns the
slash into a dash for folder and file names (``mei_envs-EarlyExitUpload-v1``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mei_envs

REPO = Path(__file__).resolve().parents[1]
HP_DIR = REPO / "agents" / "hyperparams"
# Env kwargs for algorithms without masks (the env raises on a masked action by default).
UNMASKED = {"mei_envs/EdgeLLMCache-v0": {"invalid_action": "bypass"}}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rl_zoo3") is None,
    reason="rl_zoo3 is not installed (pip install 'mei-envs[zoo]')",
)


@pytest.mark.parametrize("env_id", mei_envs.ENV_IDS)
def test_rl_zoo3_trains_ppo_from_our_yaml(tmp_path, env_id):
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", env_id]
    cmd += ["--gym-packages", "mei_envs", "--conf-file", str(HP_DIR / "ppo.yml")]
    cmd += ["-n", "256", "--log-folder", str(tmp_path / "zoo"), "--seed", "0"]
    # Shrink the rollout so the smoke test takes seconds (the YAML's values are for real runs).
    cmd += ["--hyperparams", "n_envs:2", "n_steps:64", "batch_size:64", "n_epochs:1"]
    cmd += ["--num-threads", "1", "--eval-freq", "-1"]
    if env_id in UNMASKED:  # PPO acts without masks: serve masked actions as bypasses
        cmd += ["--env-kwargs", *(f"{k}:{v!r}" for k, v in UNMASKED[env_id].items())]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    slug = env_id.replace("/", "-")
    run = tmp_path / "zoo" / "ppo" / f"{slug}_1"
    assert (run / f"{slug}.zip").is_file()
    saved = (run / slug / "config.yml").read_text()  # an OrderedDict dump: check the text
    assert "MlpPolicy" in saved and "norm_obs=True" in saved


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "sac", "td3", "maskable_ppo"])
def test_every_registered_env_has_hyperparams(algo):
    """Each env has an entry in every YAML whose algorithm fits its action space."""
    import gymnasium as gym
    from gymnasium import spaces

    table = yaml.safe_load((HP_DIR / f"{algo}.yml").read_text())
    for env_id in mei_envs.ENV_IDS:
        env = gym.make(env_id)
        discrete = isinstance(env.action_space, spaces.Discrete)
        masks = callable(getattr(env.unwrapped, "action_masks", None))
        env.close()
        fits = {
            "ppo": True,
            "a2c": True,
            "dqn": discrete,
            "sac": not discrete,
            "td3": not discrete,
            "maskable_ppo": discrete and masks,
        }[algo]
        if fits:
            assert env_id in table, f"{algo}.yml has no entry for {env_id}"
            assert {"n_timesteps", "policy"} <= set(table[env_id])
