"""Record or check pinned EdgeLLMCache-v0 trajectories (observations, rewards, every info key).

Recorded (run as a script, ``python -m tests.edge_llm_cache_trajectories``, once) before the
speed-ups of issue 12 and replayed by
``tests/test_edge_llm_cache_pinned.py``: every rewrite of the env must keep them bit-identical.
Each case plays two episodes (the second from ``reset()`` without a seed, so the generator's
state carries over) with actions drawn from a seeded generator: legal ones (uniform over
``info["action_mask"]``), or, in the ``unmasked`` case, any action under
``invalid_action="bypass"`` (so the illegal-eviction path is pinned too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.envs.edge_llm_cache import FULL_INFO_KEYS, EdgeLLMCacheEnv
from tests.trajectory_pins import record

PINNED_FILE = Path(__file__).resolve().parent / "data" / "edge_llm_cache_pinned.npz"

# (name, config, seeds, legal_only)
CASES: list[tuple[str, dict[str, Any], tuple[int, ...], bool]] = [
    ("default", {}, (0,), True),
    ("default_short", {"requests_per_episode": 300}, (1,), True),
    ("adapter_heavy", {"preset": "adapter_heavy", "requests_per_episode": 300}, (2,), True),
    ("quantised", {"preset": "quantised", "requests_per_episode": 300}, (3,), True),
    ("fast_drift", {"preset": "fast_drift", "requests_per_episode": 300}, (4,), True),
    ("small_cache", {"preset": "small_cache", "requests_per_episode": 300}, (5,), True),
    (
        "bytes_noshare",
        {"reward": "bytes", "sharing": False, "requests_per_episode": 300},
        (6,),
        True,
    ),
    (
        "latency_halflives",
        {"reward": "latency", "half_lives": [5.0, 50.0], "requests_per_episode": 300},
        (7,),
        True,
    ),
    (
        "unmasked",
        {"invalid_action": "bypass", "requests_per_episode": 300, "zipf_exponent": 0.6},
        (8,),
        False,
    ),
]
EPISODES = 2
# Every info key of the "full" level (action_mask is stored apart), in the recorded order.
INFO_KEYS = FULL_INFO_KEYS


def rollout(config: dict[str, Any], seed: int, legal_only: bool) -> dict[str, np.ndarray]:
    """Roll out ``EPISODES`` episodes with seeded actions; stack what the env returns."""
    env = EdgeLLMCacheEnv(config=config)
    rng = np.random.default_rng(20_000 + seed)
    obs_l, rew_l, info_l, mask_l, act_l, term_l = [], [], [], [], [], []

    def record_info(info: dict[str, Any]) -> None:
        assert set(info) == {*INFO_KEYS, "action_mask"}, sorted(info)
        info_l.append([float(info[k]) for k in INFO_KEYS])
        mask_l.append(np.asarray(info["action_mask"], dtype=bool).copy())

    for ep in range(EPISODES):
        obs, info = env.reset(seed=seed if ep == 0 else None)
        obs_l.append(obs)
        record_info(info)
        done = False
        while not done:
            if legal_only:
                a = int(rng.choice(np.flatnonzero(info["action_mask"])))
            else:
                a = int(rng.integers(env.action_space.n))
            obs, r, term, trunc, info = env.step(a)
            done = term or trunc
            act_l.append(a)
            obs_l.append(obs)
            rew_l.append(r)
            term_l.append(term)
            record_info(info)
    return {
        "obs": np.asarray(obs_l, dtype=np.float32),
        "rew": np.asarray(rew_l, dtype=np.float64),
        "info": np.asarray(info_l, dtype=np.float64),
        "mask": np.asarray(mask_l, dtype=bool),
        "act": np.asarray(act_l, dtype=np.int64),
        "term": np.asarray(term_l, dtype=bool),
    }


if __name__ == "__main__":
    data = record(CASES, rollout, PINNED_FILE)
    print(json.dumps({k: list(v.shape) for k, v in data.items() if k.endswith("/act")}))
