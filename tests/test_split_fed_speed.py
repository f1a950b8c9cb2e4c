"""Bit-identity of SplitFedAlloc-v0's session-9 fast paths (issue 12) against the code they
replace: the written-out loss update, the softmax decode, and the observation and info
arrays packed through ``struct``."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.split_fed import FLOAT_OPS, advance_loss, advance_loss_float, pairwise_sum
from tests.vector_checks import assert_same

ENV_ID = "mei_envs/SplitFedAlloc-v0"
_pos = st.floats(1e-6, 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    loss=st.one_of(st.floats(-10.0, 20.0), st.just(2.0), st.just(math.inf)),
    floor=st.floats(0.0, 5.0),
    span=_pos,
    scale=_pos,
    dec=st.floats(0.05, 4.0),
    du=st.floats(0.0, 1e7),
)
def test_advance_loss_float_is_the_array_formula(loss, floor, span, scale, dec, du) -> None:
    """advance_loss_float gives FLOAT_OPS's bits and numpy's to rounding, or the same
    exception."""
    args = (floor, span, scale, dec, 1.0 / dec, du)
    try:
        want_f = advance_loss(loss, *args, FLOAT_OPS)
    except OverflowError:
        with pytest.raises(OverflowError):
            advance_loss_float(loss, *args)
        return
    got = advance_loss_float(loss, *args)
    assert type(got) is float
    assert got == want_f or (math.isnan(got) and math.isnan(want_f))
    with np.errstate(all="ignore"):
        want_a = float(advance_loss(np.array(loss), *(np.array(v) for v in args)))
    if math.isfinite(want_a) and math.isfinite(want_f):
        # numpy's power on an array is its own AVX-512 kernel on some CPUs: to rounding
        # there (tests/vector_checks.py), bit for bit elsewhere
        assert_same(got, want_a, "array formula", close=True)


def test_next_loss_float_path_matches_array_path() -> None:
    env = gym.make(ENV_ID)
    m = env.unwrapped.model
    rng = np.random.default_rng(3)
    for _ in range(500):
        loss = float(rng.uniform(m.target_loss - 0.1, m.initial_loss + 0.1))
        j, k = int(rng.integers(m.L)), int(rng.integers(m.K))
        want = float(m.next_loss(np.array([loss]), j, k)[0])
        assert_same(m.next_loss(loss, j, k), want, str((loss, j, k)), close=True)


@settings(max_examples=200, deadline=None)
@given(
    a=st.lists(st.floats(-1.0, 1.0, width=32), min_size=7, max_size=7),
    scale=st.floats(0.1, 50.0),
)
def test_decode_softmax_is_the_old_formula(a, scale) -> None:
    """The decode's shares: ``v / pairwise_sum(w)`` of ``w = exp(scale * x - max)``."""
    env = gym.make(ENV_ID, share_logit_scale=scale).unwrapped
    action = np.array(a, dtype=np.float32)
    pos, k, shares = env._decode(action)
    al = action.tolist()
    z = scale * max(al[2:])
    w = [math.exp(scale * x - z) for x in al[2:]]
    total = pairwise_sum(w)
    assert shares == [v / total for v in w]
    assert pos == round((al[0] + 1.0) * 0.5 * (env.n_cuts - 1))
    assert k == round((al[1] + 1.0) * 0.5 * (env.model.K - 1))


@pytest.mark.parametrize("n_devices", [1, 5, 12])
def test_packed_obs_and_info_arrays_are_numpys(n_devices: int) -> None:
    """The packed observation is np.array(floats, float32) bit for bit (writable, its own
    buffer each step); the info's per-device arrays are np.array(floats) views."""
    env = gym.make(ENV_ID, n_devices=n_devices).unwrapped
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    prev = obs
    for _ in range(30):
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        want = np.array(env._obs_vals, dtype=np.float32)
        assert obs.dtype == np.float32 and obs.shape == want.shape
        assert obs.tobytes() == want.tobytes()
        assert obs.flags.writeable and not np.shares_memory(obs, prev)
        prev = obs
        for key in ("device_times_s", "device_energy_J", "shares"):
            v = info[key]
            assert v.dtype == np.float64 and v.shape == (n_devices,)
        assert info["round_time_s"] == max(info["device_times_s"].tolist())
        assert info["energy_J"] == pairwise_sum(info["device_energy_J"].tolist())
        if term or trunc:
            env.reset()
