"""Record or check pinned SplitFedAlloc-v0 trajectories (observations, rewards, every info key).

Issue 12's speed-ups of the env must not move any trajectory. Run this module as a script
once, before a change, to record rollouts of several presets, schemes, action modes and seeds
to ``tests/data/split_fed_pinned.npz``; ``tests/test_split_fed_pinned.py`` replays them.

Actions are legal random actions from a generator seeded from the case's seed (masked cut
choices in discrete mode). Each rollout runs a fixed number of steps through ``gym.make``,
resetting (without a new seed) when an episode ends, so episode boundaries are crossed.
Record with ``python -m tests.split_fed_trajectories``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the ids)
from tests.trajectory_pins import record

PINNED_FILE = Path(__file__).resolve().parent / "data" / "split_fed_pinned.npz"
ENV_ID = "mei_envs/SplitFedAlloc-v0"
STEPS = 90

# (name, config, seeds): both action modes, every scheme, both channel modes, energy weight,
# several presets; short time budgets cross episode ends within STEPS.
CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("default", {}, (0, 1)),
    ("discrete", {"action_mode": "discrete"}, (0, 3)),
    ("few_short", {"preset": "few_devices", "time_budget_s": 300.0}, (2,)),
    (
        "many_weak_discrete",
        {"preset": "many_devices_weak_server", "action_mode": "discrete"},
        (4,),
    ),
    ("narrow_energy", {"preset": "narrow_band", "lambda_energy": 1.5}, (5,)),
    ("jetson_discrete", {"preset": "jetson_fleet", "action_mode": "discrete"}, (6,)),
    ("sl", {"scheme": "sl", "time_budget_s": 400.0}, (7,)),
    ("sl_discrete", {"scheme": "sl", "action_mode": "discrete", "n_devices": 3}, (8,)),
    ("fl", {"scheme": "fl", "preset": "jetson_fleet"}, (9,)),
    (
        "gauss_markov",
        {"channel": "gauss_markov", "k_factor": 2.0, "speed_mps": 5.0, "time_budget_s": 500.0},
        (10,),
    ),
    (
        "gm_discrete_attention",
        {"channel": "gauss_markov", "action_mode": "discrete", "preset": "attention_only"},
        (11,),
    ),
    ("wide_two_devices", {"preset": "wide_band", "n_devices": 2, "max_rounds": 40}, (12,)),
]


def flat_info(info: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Sorted keys and their values concatenated as float64 (arrays flattened)."""
    keys = sorted(info)
    vals = [np.asarray(info[k], dtype=np.float64).ravel() for k in keys]
    return keys, np.concatenate(vals) if vals else np.zeros(0)


def random_action(env: gym.Env, rng: np.random.Generator) -> Any:
    """A legal random action: uniform Box entries, or masked cut / any rank / any rule."""
    inner = env.unwrapped
    if inner.config.action_mode == "continuous":
        return rng.uniform(-1.0, 1.0, size=env.action_space.shape).astype(np.float32)
    mask = inner.action_masks()
    n_cuts, K = inner.n_cuts, inner.model.K
    cut = int(rng.choice(np.flatnonzero(mask[:n_cuts])))
    return np.array([cut, int(rng.integers(K)), int(rng.integers(3))], dtype=np.int64)


def rollout(config: dict[str, Any], seed: int, steps: int = STEPS) -> dict[str, np.ndarray]:
    """Roll out ``steps`` seed-derived legal random actions; stack what the env returns."""
    env = gym.make(ENV_ID, config=config)
    rng = np.random.default_rng(50_000 + seed)
    obs, info = env.reset(seed=seed)
    obs_l, rew_l, done_l, keys_l, info_l = [obs], [], [], [], []
    keys, vals = flat_info(info)
    keys_l.append("|".join(keys))
    info_l.append(vals)
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(random_action(env, rng))
        obs_l.append(obs)
        rew_l.append(r)
        done_l.append((term, trunc))
        keys, vals = flat_info(info)
        keys_l.append("|".join(keys))
        info_l.append(vals)
        if term or trunc:
            obs, info = env.reset()
            obs_l.append(obs)
            keys, vals = flat_info(info)
            keys_l.append("reset:" + "|".join(keys))
            info_l.append(vals)
    lengths = np.array([v.size for v in info_l])
    return {
        "obs": np.asarray(obs_l, dtype=np.float32),
        "rew": np.asarray(rew_l, dtype=np.float64),
        "done": np.asarray(done_l, dtype=bool),
        "info": np.concatenate(info_l),
        "info_len": lengths,
        "info_keys": np.asarray(keys_l),
    }


if __name__ == "__main__":
    data = record(CASES, rollout, PINNED_FILE)
    for key, done in data.items():
        if key.endswith("/done"):
            print(f"{key[:-5]}: {len(done)} steps, {int(done.any(1).sum())} ends")
    print(f"wrote {PINNED_FILE}")
