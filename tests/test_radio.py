"""UE radio power profiles (mei_envs.radio): presets, sources and broadcastable energy."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs import radio
from mei_envs.envs.early_exit_upload import EarlyExitUploadConfig


def test_nr_drx_is_exactly_early_exit_v0_radio():
    p = radio.get_profile("nr_drx")
    assert p.to_dict() == {
        "alpha_u_w_per_mbps": 0.43839,
        "beta_w": 1.288,
        "tail_s": 0.1,
        "tail_power_w": 1.060,
        "sleep_power_w": 0.212,
        "wake_s": 0.01,
        "wake_power_w": 1.2107,
    }
    cfg = EarlyExitUploadConfig()
    for key, value in p.to_dict().items():
        assert getattr(cfg, key) == value, key
    assert "38.321" in p.source and "38.840" in p.source


def test_lte_huang2012_as_published():
    p = radio.get_profile("lte_huang2012")
    assert p.tail_s == 11.576
    assert p.wake_s == pytest.approx(0.26)
    assert p.wake_power_w == pytest.approx(1.21, abs=0.01)
    assert p.tail_power_w == pytest.approx(1.06)
    assert p.alpha_u_w_per_mbps == 0.43839 and p.beta_w == 1.288
    assert "[U]" in p.source  # unverified figures are marked
    # The LTE tail is two orders of magnitude longer than the NR DRX inactivity timer.
    assert p.tail_s > 100 * radio.get_profile("nr_drx").tail_s


def test_unknown_profile_and_bad_values():
    with pytest.raises(ValueError, match=r"'wifi'.*nr_drx"):
        radio.get_profile("wifi")
    with pytest.raises(ValueError, match="tail_s"):
        radio.RadioProfile("x", 0.4, 1.0, -1.0, 1.0, 0.2, 0.01, 1.2)
    assert radio.list_profiles() == ["nr_drx", "lte_huang2012"]


def test_energy_functions_by_hand_and_broadcast():
    p = radio.get_profile("nr_drx")
    # 2 Mbit/s for 0.5 s: (0.43839 * 2 + 1.288) * 0.5 = 1.08239 J
    assert radio.transmit_energy_j(p, 2e6, 0.5) == pytest.approx(1.08239, rel=1e-12)
    assert radio.transmit_power_w(p, 0.0) == 1.288
    assert radio.background_power_w(p, True) == 0.212
    assert radio.background_power_w(p, 0) == 1.060
    assert radio.wake_energy_j(p, 1) == pytest.approx(0.01 * 1.2107)
    asleep = np.array([[0], [1]])
    rate = np.array([1e6, 4e6, 8e6])
    e = radio.transmit_energy_j(p, rate, 0.1) + radio.background_power_w(p, asleep)
    assert e.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            want = radio.transmit_energy_j(p, float(rate[j]), 0.1) + radio.background_power_w(
                p, int(asleep[i, 0])
            )
            assert e[i, j] == want
    # A config with the same flat fields is accepted wherever a profile is.
    cfg = EarlyExitUploadConfig()
    assert radio.transmit_energy_j(cfg, 3e6, 0.2) == radio.transmit_energy_j(p, 3e6, 0.2)
