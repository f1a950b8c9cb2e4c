"""Property-based checks of EarlyExitUpload-v0's accounting over random configs and actions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mei_envs.envs.early_exit_upload import EarlyExitUploadEnv

configs = st.fixed_dictionaries(
    {
        "tokens": st.integers(1, 24),
        "backlog_limit": st.integers(1, 6),
        "channel": st.sampled_from(["fsmc", "gauss_markov"]),
        "fsmc_states": st.integers(1, 5),
        "dp_channel_states": st.integers(1, 5),
        "snr_history": st.integers(1, 3),
        "distance_m": st.floats(50.0, 1500.0),
        "exit_prob": st.floats(0.05, 0.95),
        "exit_correlation": st.floats(0.0, 0.95),
        "tail_s": st.floats(0.0, 0.5),
        "lambda_energy": st.floats(0.0, 5.0),
        "initial_radio": st.sampled_from(["idle", "connected"]),
        "flush_at_end": st.booleans(),
        "upload_fractions": st.sampled_from([[0.0, 1.0], [0.0, 0.5, 1.0], [1.0, 0.25, 0.0]]),
    }
)


@settings(max_examples=40, deadline=None)
@given(cfg=configs, seed=st.integers(0, 2**31 - 1), data=st.data())
def test_episode_accounting_invariants(cfg: dict, seed: int, data) -> None:
    env = EarlyExitUploadEnv(config=cfg)
    m = env.model
    obs, info = env.reset(seed=seed)
    total_reward, lat, energy, sent, tokens, steps = 0.0, 0.0, 0.0, 0.0, 0, 0
    done = False
    while not done:
        assert env.observation_space.contains(obs)
        assert 0 <= info["backlog"] <= m.limit
        a = data.draw(st.integers(0, env.action_space.n - 1))
        obs, reward, term, trunc, info = env.step(a)
        assert np.isfinite(reward) and reward <= 0.0
        assert info["latency_s"] >= 0 and info["energy_J"] >= 0 and info["stall_s"] >= 0
        assert reward == np.float64(-(info["latency_cost"] + info["energy_cost"]))
        total_reward += reward
        lat += info["latency_s"]
        energy += info["energy_J"]
        sent += info["bytes_sent"]
        tokens += int(info["tokens"])
        steps += 1
        done = term or trunc
        assert not trunc
    assert tokens == m.K
    assert steps <= m.K
    # The user waits at least for the device's compute of every token.
    assert lat >= m.t_dev_s.sum() * (1 - 1e-12)
    state_bytes = m.state_bits / 8
    if cfg["flush_at_end"]:
        assert np.isclose(sent, m.K * state_bytes)
    else:
        assert np.isclose(sent + info["backlog"] * state_bytes, m.K * state_bytes)
    expect = -(lat / m.latency_ref_s + cfg["lambda_energy"] * energy / m.energy_ref_j)
    assert np.isclose(total_reward, expect, rtol=1e-9, atol=1e-9)
