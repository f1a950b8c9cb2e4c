"""The exact fast paths SplitFedAlloc-v0's speed-ups (issue 12) rely on, against the code
they replace: FiniteStateMarkovChannel.step_uniform against step's comparison, and the
unchecked macro path loss against path_loss_db."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs import wireless
from tests.vector_checks import assert_same


class _Fixed:
    """A generator whose ``random`` returns given numbers."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.values.reshape(shape)


def _chain(rng: np.random.Generator, n: int) -> wireless.FiniteStateMarkovChannel:
    p = rng.random((n, n)) ** 3
    p /= p.sum(axis=1, keepdims=True)
    snr = np.sort(rng.random(n)) + np.arange(n) + 0.1
    th = np.concatenate([[0.0], np.sqrt(snr[:-1] * snr[1:]), [np.inf]])
    return wireless.FiniteStateMarkovChannel(snr, p, th)


def test_fsmc_step_uniform_matches_step() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 12))
        ch = _chain(rng, n)
        st = rng.integers(0, n, size=(40, 7))
        u = rng.random((40, 7))
        np.testing.assert_array_equal(ch.step_uniform(st, u), ch.step(st, _Fixed(u)))
        # numbers that are not multiples of 2**-53 take the comparison
        v = u * (1.0 - 1e-17) + 1e-20
        np.testing.assert_array_equal(ch.step_uniform(st, v), ch.step(st, _Fixed(v)))


def test_fsmc_step_uniform_at_the_thresholds() -> None:
    """Draws on, just below and just above every cumulative threshold (a wrong rounding of
    the integer thresholds would move a state by one here)."""
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 8):
        ch = _chain(rng, n)
        vals = []
        for c in ch._cum.ravel():
            k = np.floor(c * 2.0**53)
            vals += [(k + d) / 2.0**53 for d in (-1.0, 0.0, 1.0)]
        u = np.clip(np.array(vals), 0.0, 1.0 - 2.0**-53)
        for s in range(n):
            st = np.full(u.shape, s)
            np.testing.assert_array_equal(ch.step_uniform(st, u), ch.step(st, _Fixed(u)))


def test_macro_path_loss_is_path_loss_db() -> None:
    d = np.random.default_rng(2).uniform(1.0, 5000.0, size=200)
    np.testing.assert_array_equal(wireless.macro_path_loss_db(d), wireless.path_loss_db(d))


def _round_inputs(rng: np.random.Generator, n: int) -> dict:
    """Random per-device round inputs with the edge cases the float path branches on:
    zero shares, nothing to send, spectral efficiency below and above the link range."""
    types = rng.integers(0, 3, size=n).tolist()
    shares = rng.dirichlet(np.ones(n))
    shares[rng.random(n) < 0.15] = 0.0
    return {
        "types": types,
        "shares": shares.tolist(),
        "base_s": rng.uniform(0.1, 5.0, size=3).tolist(),
        "t_dev_s": rng.uniform(0.05, 2.0, size=3).tolist(),
        # SNR-bandwidth products from far below the CQI-1 floor to above the CQI-15 cap
        "gamma_up_hz": (10.0 ** rng.uniform(3.0, 11.0, size=n)).tolist(),
        "snr_down": (10.0 ** rng.uniform(-3.0, 5.0, size=n)).tolist(),
        "active_w": rng.uniform(1.0, 10.0, size=3).tolist(),
        "idle_w": rng.uniform(0.1, 1.0, size=3).tolist(),
    }


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # zero shares: inf airtimes
def test_round_costs_float_is_the_array_formulas_bit_for_bit() -> None:
    """The single env's scalar round (split_fed.round_costs_float) against chain_times and
    device_energy_j on arrays (what the vector env and the oracles call)."""
    from mei_envs import radio
    from mei_envs.split_fed import (
        FLOAT_OPS,
        Band,
        chain_times,
        device_energy_j,
        round_costs_float,
        spectral_efficiency,
    )

    rng = np.random.default_rng(3)
    band = Band(20e6, 10e6, 0.1523, 5.5547)
    rp = radio.get_profile("nr_drx")
    for trial in range(300):
        n = int(rng.integers(1, 12))
        x = _round_inputs(rng, n)
        bits = 0.0 if trial % 10 == 0 else float(rng.uniform(1e5, 1e9))
        sequential = trial % 4 == 0
        equal = trial % 3 == 0
        shares = 1.0 / n if equal else x["shares"]
        got = round_costs_float(
            shares,
            x["types"],
            x["base_s"],
            x["t_dev_s"],
            bits,
            x["gamma_up_hz"],
            [spectral_efficiency(v, band, FLOAT_OPS) for v in x["snr_down"]],
            x["active_w"],
            x["idle_w"],
            band,
            rp,
            sequential,
        )
        d = np.array(x["types"])
        sh = np.ones(n) if sequential else np.broadcast_to(np.asarray(shares, float), (n,))
        t, t_up, _, r_up = chain_times(
            sh,
            np.array(x["base_s"])[d],
            bits,
            bits,
            np.array(x["gamma_up_hz"]),
            np.array(x["snr_down"]),
            band,
        )
        rt = t.sum() if sequential else t.max()
        e = device_energy_j(
            rp,
            rt,
            np.array(x["t_dev_s"])[d],
            t_up,
            r_up,
            np.array(x["active_w"])[d],
            np.array(x["idle_w"])[d],
        )
        assert got[0] == rt, trial
        np.testing.assert_array_equal(got[1], t, err_msg=str(trial))
        np.testing.assert_array_equal(got[2], t_up, err_msg=str(trial))
        np.testing.assert_array_equal(got[3], e, err_msg=str(trial))


def _minmax_problem(rng: np.random.Generator, n: int) -> tuple:
    """A random min-max problem: devices with nothing to send, efficiency clamped at both
    ends, a few identical devices, and (sometimes) only the uplink or only the downlink."""
    base = rng.uniform(0.0, 5.0, n)
    up = rng.uniform(1e5, 1e9, n) * (rng.random(n) < 0.85)
    down = up * rng.uniform(0.0, 2.0) * (rng.random() < 0.8)
    gamma = 10 ** rng.uniform(3.0, 12.0, n)
    snr_d = 10 ** rng.uniform(-3.0, 5.0, n)
    if n > 2 and rng.random() < 0.2:  # twins
        for v in (base, up, down, gamma, snr_d):
            v[1] = v[0]
    return base, up, down, gamma, snr_d


@pytest.mark.parametrize("rtol", [1e-12, 1e-6])
def test_minmax_float_is_the_array_solve_bit_for_bit(rtol: float) -> None:
    """split_fed.minmax_shares_float (the single env's and the baselines' one-problem solve)
    gives the array solve's round time and shares exactly, on 400 random problems of 1 to
    40 devices (the array solve run as a batch of two, so it takes its batched code path)."""
    from mei_envs.split_fed import Band, _minmax, minmax_shares, minmax_shares_float

    rng = np.random.default_rng(4)
    band = Band(20e6, 10e6, 0.1523, 5.5547)
    for trial in range(400):
        n = int(rng.integers(1, 41)) if trial % 4 == 0 else int(rng.integers(1, 9))
        prob = _minmax_problem(rng, n)
        other = _minmax_problem(rng, n)
        with np.errstate(all="ignore"):
            rt_a, sh_a = _minmax(
                tuple(np.stack([p, q]) for p, q in zip(prob, other, strict=True)),
                band,
                rtol,
                200,
            )
        rt, sh = minmax_shares_float(*(v.tolist() for v in prob), band=band, rtol=rtol)
        # to rounding on AVX-512 CPUs (numpy's own log2/exp; tests/vector_checks.py)
        assert_same(rt, rt_a[0], str(trial), close=True)
        assert_same(sh, sh_a[0], str(trial), close=True)
        # minmax_shares on one problem takes the float path and returns arrays
        rt1, sh1 = minmax_shares(*prob, band=band, rtol=rtol)
        assert rt1.shape == () and sh1.shape == (n,)
        assert float(rt1) == rt and sh1.tolist() == sh


def test_minmax_float_falls_back_on_non_finite_input() -> None:
    from mei_envs.split_fed import Band, _minmax, minmax_shares_float

    band = Band(20e6, 10e6, 0.1523, 5.5547)
    prob = ([1.0, 2.0], [1e6, np.inf], [1e6, 1e6], [1e8, 1e8], [10.0, 10.0])
    with np.errstate(all="ignore"):
        rt_a, sh_a = _minmax(tuple(np.asarray(v)[None] for v in prob), band, 1e-12, 200)
    rt, sh = minmax_shares_float(*prob, band=band)
    np.testing.assert_array_equal([rt], rt_a)
    np.testing.assert_array_equal([sh], sh_a)


def test_path_gain_list_is_path_gain() -> None:
    from mei_envs.envs.split_fed_alloc import SplitFedAllocConfig
    from mei_envs.split_fed import SplitFedModel

    m = SplitFedModel(SplitFedAllocConfig())
    rng = np.random.default_rng(5)
    d = rng.uniform(1.0, 1e5, size=5000)
    sh = rng.normal(0.0, 30.0, size=5000)
    assert_same(m.path_gain_list(d, sh.tolist()), m.path_gain(d, sh), close=True)


@pytest.mark.parametrize("channel", ["fsmc", "gauss_markov"])
def test_block_draws_are_per_round_draws(monkeypatch: pytest.MonkeyPatch, channel: str) -> None:
    """The single env takes its fading draws in blocks of BLOCK_ROUNDS rounds: the same
    trajectory as one block per round (a draw per round), across a block boundary, a reset in
    the middle of an episode and episode ends, and the same generator state after an episode
    ends (so the next episode's draws, and anyone else's, are unchanged)."""
    import mei_envs.envs.split_fed_alloc as sfa

    cfg = {"channel": channel, "time_budget_s": 1e9, "max_rounds": 150}
    block = sfa.BLOCK_ROUNDS

    def run() -> tuple[list, dict]:
        env = sfa.SplitFedAllocEnv(cfg)
        rng = np.random.default_rng(7)
        out = [env.reset(seed=3)[0]]
        states = []
        for t in range(block + 180):
            if t == block + 5:
                out.append(env.reset()[0])  # in the middle of an episode
                continue
            obs, rew, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
            out += [obs, rew, info["round_time_s"]]
            if term or trunc:
                states.append(env.np_random.bit_generator.state)
                out.append(env.reset()[0])
        assert states, "the run must cross an episode end"
        return out, states

    got, got_states = run()
    monkeypatch.setattr(sfa, "BLOCK_ROUNDS", 1)
    want, want_states = run()
    assert got_states == want_states
    assert len(got) == len(want)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)


def test_link_row_is_link_rows_bit_for_bit() -> None:
    """The single env's written-out link row (floats) against link_rows on arrays (what the
    vector env tabulates), over gains from deep fades to the link-adaptation cap."""
    from mei_envs.envs.split_fed_alloc import SplitFedAllocEnv, link_rows

    rng = np.random.default_rng(8)
    for preset in ("default", "narrow_band", "wide_band"):
        env = SplitFedAllocEnv(preset=preset)
        gain = 10.0 ** rng.uniform(-20.0, -4.0, 500)
        fade = rng.exponential(1.0, 500)
        want = np.stack(link_rows(env.model, gain * fade, env.config.bandwidth_hz))
        got = np.array([env._link_row(g, f) for g, f in zip(gain, fade, strict=True)]).T
        assert_same(got, want, preset, close=True)
        assert (want[3] == -1.0).any() and (want[3] > -1.0).any()
