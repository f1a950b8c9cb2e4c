"""Property tests of SplitFedAlloc-v0 over its config space (hypothesis).

Every config the validator accepts builds, resets and steps with finite, in-space
observations and rewards, and no round ever puts a device over its usable memory; every
config it rejects raises ``ConfigError`` naming a field.
"""

from __future__ import annotations

import dataclasses
import re
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mei_envs.config import ConfigError
from mei_envs.envs import split_fed_alloc_vector as vector_module
from mei_envs.envs.split_fed_alloc import SplitFedAllocConfig, SplitFedAllocEnv
from mei_envs.envs.split_fed_alloc_vector import SplitFedAllocVectorEnv
from tests.vector_checks import assert_same

FIELDS = {f.name for f in dataclasses.fields(SplitFedAllocConfig)}

configs = st.fixed_dictionaries(
    {},
    optional={
        "preset": st.sampled_from([*SplitFedAllocConfig.PRESETS, "nope"]),
        "scheme": st.sampled_from(["sfl", "sl", "fl", "ring"]),
        "action_mode": st.sampled_from(["continuous", "discrete", "hybrid"]),
        "model": st.sampled_from(["gpt2", "qwen2-0.5b", "llama-3.2-1b", "opt-125m", "x"]),
        "batch": st.integers(-1, 8),
        "seq_len": st.sampled_from([0, 16, 128, 512, 1024, 4096]),
        "lora_targets": st.sampled_from(["attention", "all_linear", "mlp"]),
        "ranks": st.sampled_from([[1], [2, 8], [1, 2, 4, 8, 16], [8, 4], [], [0, 4]]),
        "aggregation_interval": st.integers(0, 12),
        "noniid": st.floats(-0.2, 1.2),
        "n_devices": st.integers(0, 12),
        "device_types": st.sampled_from(
            [
                ["snapdragon_8_gen3"],
                ["jetson_orin_nano", "jetson_agx_orin"],
                ["apple_a17_pro", "raspberry_pi_4"],
                ["snapdragon_8_gen3", "snapdragon_8_gen3"],
                ["toaster"],
            ]
        ),
        "device_memory_fraction": st.floats(-0.1, 1.1),
        "server": st.sampled_from(["l4", "a100_80gb", "jetson_agx_orin", "nope"]),
        "bandwidth_hz": st.floats(1e2, 2e8),
        "downlink_bandwidth_hz": st.floats(1e2, 2e8),
        "distance_m": st.floats(0.5, 2000.0),
        "min_distance_m": st.floats(0.5, 500.0),
        "channel": st.sampled_from(["fsmc", "gauss_markov", "awgn"]),
        "k_factor": st.floats(0.0, 10.0),
        "speed_mps": st.floats(0.0, 40.0),
        "tokens_multiplier": st.floats(1e-3, 100.0),
        "target_loss_fraction": st.floats(-0.1, 1.1),
        "time_budget_s": st.floats(-1.0, 1e4),
        "lambda_energy": st.floats(-1.0, 5.0),
        "share_logit_scale": st.floats(0.0, 10.0),
        "info": st.sampled_from(["full", "lean", "verbose"]),
    },
)


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cfg=configs, seed=st.integers(0, 2**31 - 1))
def test_config_space(cfg: dict, seed: int) -> None:
    try:
        env = SplitFedAllocEnv(config=cfg)
    except ConfigError as exc:
        msg = str(exc)
        named = set(re.findall(r"\.(\w+)=|\.(\w+):|unknown key\(s\) \[([^\]]*)\]", msg))
        flat = {x for group in named for x in group if x}
        assert flat & FIELDS or any(f in msg for f in cfg), msg
        return
    m = env.model
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    types = env.decision_state()["device_types"]
    usable = m.usable_memory_bytes[types]
    env.action_space.seed(seed)
    for _ in range(3):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), obs
        assert np.isfinite(rew) and rew < 0
        assert np.isfinite(info["round_time_s"]) and info["round_time_s"] > 0
        assert np.isfinite(info["energy_J"])
        assert np.all(np.isfinite(info.get("device_energy_J", 0.0)))
        # memory: the (cut, rank) actually trained fits every device
        k = list(m.ranks).index(info["rank"])
        assert np.all(m.mem_need_bytes[info["cut"] - 1, k] <= usable)
        if term or trunc:
            break
    # the native vector env builds, resets and steps on the same config on both its paths
    # (one single env per sub-env, the batched numpy step), the two alike, and its first
    # sub-env is the single env seeded alike
    want = SplitFedAllocEnv(config=cfg).reset(seed=seed)[0]
    big = 1 << 20
    with mock.patch.multiple(vector_module, SCALAR_MAX_ENVS=big, SCALAR_MAX_ENVS_DISCRETE=big):
        vec = SplitFedAllocVectorEnv(2, config=cfg)
    with mock.patch.multiple(vector_module, SCALAR_MAX_ENVS=0, SCALAR_MAX_ENVS_DISCRETE=0):
        batched = SplitFedAllocVectorEnv(2, config=cfg)
    assert vec.scalar and not batched.scalar
    vec.action_space.seed(seed)
    actions = vec.action_space.sample()
    out = []
    for v in (vec, batched):
        obs_v, _ = v.reset(seed=seed)
        assert v.observation_space.contains(obs_v)
        assert_same(obs_v[0], want, "reset", close=not v.scalar)  # tests/vector_checks.py
        masks = v.action_masks()
        obs_v, rew_v, term_v, trunc_v, _ = v.step(actions)
        assert v.observation_space.contains(obs_v) and np.all(np.isfinite(rew_v))
        out.append((masks, obs_v, rew_v, term_v, trunc_v))
    for x, y in zip(*out, strict=True):  # per-sub-env vs batched: to rounding on AVX-512
        assert_same(y, x, "batched vs per-sub-env", close=True)
