"""Record or check pinned EarlyExitUpload trajectories (observations, rewards, infos).

The refactors of the architecture issue must not move any trajectory. This module records
rollouts of several configs and seeds to ``tests/data/early_exit_pinned.npz`` (run it as a
script, ``python -m tests.pinned_trajectories``, once, before a refactor) and
``tests/test_pinned_trajectories.py`` replays them.

The file was recorded on EarlyExitUpload-v0. v1 changed the defaults (TR 38.901 path loss
at the carrier, airtime-preserving FSMC rates, 250 m), so the cases replay on v1 with v0's
behaviour spelled out as explicit config values (``LEGACY_V0``): every v0 case is exactly
reproducible that way. ``voluntary_uploads`` is not pinned (v1 no longer counts
backlog-limit uploads in it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.envs.early_exit_upload import ACCOUNT_KEYS
from tests.trajectory_pins import record

PINNED_FILE = Path(__file__).resolve().parent / "data" / "early_exit_pinned.npz"
ENV_ID = "mei_envs/EarlyExitUpload-v1"
# EarlyExitUpload-v0's channel, as v1 config values (the radio default, nr_drx, is v0's).
LEGACY_V0: dict[str, Any] = {
    "path_loss_model": "36814_macro",
    "fsmc_rate": "bin_mean_snr",
    "distance_m": 600.0,
    "radio_profile": "nr_drx",
}

# (name, config, seeds): defaults, both channel modes, Rician, 3 upload fractions, a short
# connected-radio episode with no flush, and a bigger model at a closer distance.
CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("default", {}, (0, 1, 2)),
    ("gauss_markov", {"channel": "gauss_markov", "lambda_energy": 2.0}, (0, 7)),
    ("rician", {"channel": "gauss_markov", "k_factor": 3.0, "dp_channel_states": 4}, (3,)),
    ("fractions", {"upload_fractions": [0.0, 0.5, 1.0], "backlog_limit": 6}, (5,)),
    (
        "connected_noflush",
        {"initial_radio": "connected", "flush_at_end": False, "tokens": 16, "tail_s": 0.05},
        (11, 12),
    ),
    ("opt_close", {"model": "opt-125m", "cut_layer": 4, "distance_m": 250.0}, (4,)),
]
# The accounting keys (voluntary_uploads left out: v0 counted backlog-limit uploads in it)
# and the state in `info`, in the recorded order.
INFO_KEYS = tuple(k for k in ACCOUNT_KEYS if k != "voluntary_uploads") + (
    "latency_cost",
    "energy_cost",
    "backlog",
    "radio_timer",
    "channel_state",
    "snr_db",
)


def rollout(config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Roll out a fixed, seed-derived action sequence and stack what the env returns."""
    env = gym.make(ENV_ID, config={**LEGACY_V0, **config})
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(10_000 + seed)
    obs_l, rew_l, info_l = [obs], [], [[float(info[k]) for k in INFO_KEYS if k in info]]
    done = False
    while not done:
        a = int(rng.integers(env.action_space.n))
        obs, r, term, trunc, info = env.step(a)
        done = term or trunc
        obs_l.append(obs)
        rew_l.append(r)
        info_l.append([float(info.get(k, np.nan)) for k in INFO_KEYS])
    width = len(INFO_KEYS)
    info_l[0] = info_l[0] + [np.nan] * (width - len(info_l[0]))
    return {
        "obs": np.asarray(obs_l, dtype=np.float32),
        "rew": np.asarray(rew_l, dtype=np.float64),
        "info": np.asarray(info_l, dtype=np.float64),
    }


if __name__ == "__main__":
    data = record(CASES, rollout, PINNED_FILE)
    print(json.dumps({k: list(v.shape) for k, v in data.items()}, indent=None)[:500])
