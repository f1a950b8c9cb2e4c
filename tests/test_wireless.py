"""Tests for mei_envs.wireless (numpy-only wireless models).

Statistical tolerances are several standard errors (SE) of the estimate at the given seed and
sample size; each test states its SE so a reviewer can check the margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mei_envs import wireless as w
from mei_envs.wireless import FSMC, FiniteStateMarkovChannel, GaussMarkovFading

# ------------------------------------------------------------------------------------------
# conversions, path loss, noise, SNR
# ------------------------------------------------------------------------------------------


def test_unit_conversions():
    assert w.db_to_linear(10.0) == pytest.approx(10.0)
    assert w.linear_to_db(100.0) == pytest.approx(20.0)
    assert w.dbm_to_watt(30.0) == pytest.approx(1.0)
    assert w.watt_to_dbm(0.2) == pytest.approx(23.0103, abs=1e-4)
    x = np.array([-30.0, 0.0, 17.5])
    np.testing.assert_allclose(w.linear_to_db(w.db_to_linear(x)), x, atol=1e-12)
    np.testing.assert_allclose(w.watt_to_dbm(w.dbm_to_watt(x)), x, atol=1e-12)
    assert w.linear_to_db(0.0) == -math.inf
    assert isinstance(w.db_to_linear(3.0), float)
    with pytest.raises(ValueError, match="x="):
        w.linear_to_db(-1.0)
    with pytest.raises(ValueError, match="p_w="):
        w.watt_to_dbm([0.1, -0.1])


def test_path_loss_macro_values():
    # 3GPP TR 36.814 macro: 128.1 dB at 1 km, 37.6 dB per decade.
    assert w.path_loss_db(1000.0) == pytest.approx(128.1, abs=1e-12)
    assert w.path_loss_db(100.0) == pytest.approx(90.5, abs=1e-12)
    np.testing.assert_allclose(w.path_loss_db([100.0, 1000.0]), [90.5, 128.1])


def test_path_loss_other_models():
    # Friis: 20 log10(4 pi d f / c) = 98.47 dB at 1 km, 2 GHz.
    assert w.path_loss_db(1000.0, "free_space", carrier_hz=2e9) == pytest.approx(98.4684, abs=1e-3)
    # TR 38.901 UMi-SC LOS before the breakpoint: 32.4 + 21 log10(d3D) + 20 log10(fc[GHz]).
    d3 = math.hypot(50.0, 10.0 - 1.5)
    expect = 32.4 + 21 * math.log10(d3) + 20 * math.log10(3.5)
    assert w.path_loss_db(50.0, "3gpp_umi_los", carrier_hz=3.5e9) == pytest.approx(expect)
    # Dual slope is continuous at the breakpoint d'BP = 4 h'BS h'UT fc / c.
    d_bp = 4 * 9.0 * 0.5 * 3.5e9 / w.SPEED_OF_LIGHT_MPS
    lo, hi = w.path_loss_db(
        [d_bp * (1 - 1e-9), d_bp * (1 + 1e-9)], "3gpp_umi_los", carrier_hz=3.5e9
    )
    assert abs(hi - lo) < 1e-6
    # ... and steeper after it (40 vs 21 dB/decade).
    far = w.path_loss_db([2 * d_bp, 20 * d_bp], "3gpp_umi_los", carrier_hz=3.5e9)
    assert far[1] - far[0] == pytest.approx(40.0, abs=0.1)


def test_path_loss_bad_inputs():
    with pytest.raises(ValueError, match="distance_m"):
        w.path_loss_db(0.0)
    with pytest.raises(ValueError, match="distance_m"):
        w.path_loss_db([10.0, -5.0])
    with pytest.raises(ValueError, match=r"model='hata'.*3gpp_macro"):
        w.path_loss_db(100.0, "hata")
    with pytest.raises(ValueError, match="carrier_hz"):
        w.path_loss_db(100.0, "free_space", carrier_hz=0.0)


def test_shadowing_doppler_noise_snr():
    rng = np.random.default_rng(0)
    s = w.shadowing_db(rng, 8.0, size=20_000)
    # SE(mean) = 8/sqrt(2e4) = 0.057, SE(std) = 8/sqrt(4e4) = 0.04.
    assert abs(s.mean()) < 0.25
    assert s.std() == pytest.approx(8.0, abs=0.2)
    np.testing.assert_array_equal(s, w.shadowing_db(np.random.default_rng(0), 8.0, size=20_000))
    with pytest.raises(ValueError, match="std_db"):
        w.shadowing_db(rng, -1.0)
    assert w.doppler_hz(10.0, 2e9) == pytest.approx(66.7128, abs=1e-4)
    # -174 dBm/Hz + 60 dB(1 MHz) + 9 dB NF = -105 dBm.
    assert w.watt_to_dbm(w.noise_power_w(1e6)) == pytest.approx(-105.0, abs=1e-12)
    # 23.0103 dBm - 90.5 dB + 105 dB = 37.5103 dB.
    snr = w.mean_snr_linear(0.2, 100.0, 1e6)
    assert w.linear_to_db(snr) == pytest.approx(37.5103, abs=1e-4)
    # A fixed shadowing value is an extra loss.
    assert w.linear_to_db(w.mean_snr_linear(0.2, 100.0, 1e6, shadowing_db=8.0)) == pytest.approx(
        29.5103, abs=1e-4
    )
    with pytest.raises(ValueError, match="bandwidth_hz"):
        w.mean_snr_linear(0.2, 100.0, 0.0)


# ------------------------------------------------------------------------------------------
# rates and bandwidth
# ------------------------------------------------------------------------------------------


def test_shannon_rates():
    assert w.shannon_rate_bps(1e6, 1.0) == pytest.approx(1e6)
    np.testing.assert_allclose(w.shannon_rate_bps(1e6, [0.0, 3.0, 15.0]), [0.0, 2e6, 4e6])
    n0 = 10 ** ((-174.0 - 30.0) / 10)  # [W/Hz]
    b = np.array([0.0, 1e5, 1e6, 1e7])
    r = w.shannon_rate_from_power_bps(b, 0.2, 1e-9, n0)
    assert r[0] == 0.0
    np.testing.assert_allclose(r[1:], b[1:] * np.log2(1 + 0.2e-9 / (b[1:] * n0)), rtol=1e-12)
    assert w.shannon_rate_from_power_bps(0.0, 0.2, 1e-9, n0) == 0.0
    # Increasing and concave in B (REFERENCE.md section 5).
    grid = np.linspace(0, 2e7, 201)
    rg = w.shannon_rate_from_power_bps(grid, 0.2, 1e-9, n0)
    assert np.all(np.diff(rg) > 0)
    assert np.all(np.diff(rg, 2) < 0)
    # Broadcasting: users x bandwidths.
    rb = w.shannon_rate_from_power_bps(b[None, 1:], 0.2, np.array([[1e-9], [1e-10]]), n0)
    assert rb.shape == (2, 3) and np.all(rb[0] > rb[1])
    with pytest.raises(ValueError, match="snr_linear"):
        w.shannon_rate_bps(1e6, -1.0)
    with pytest.raises(ValueError, match="noise_density_w_per_hz"):
        w.shannon_rate_from_power_bps(1e6, 0.2, 1e-9, 0.0)


def test_bandwidth_splits():
    np.testing.assert_allclose(w.equal_split_hz(10e6, 4), [2.5e6] * 4)
    np.testing.assert_allclose(w.ofdma_split_hz(10e6, [0.5, 0.25, 0.25]), [5e6, 2.5e6, 2.5e6])
    np.testing.assert_allclose(w.ofdma_split_hz(10e6, [0.2, 0.3]), [2e6, 3e6])
    w.ofdma_split_hz(1.0, [0.5, 0.5 + 5e-10])  # within the 1e-9 tolerance
    with pytest.raises(ValueError, match="fractions"):
        w.ofdma_split_hz(1.0, [0.6, 0.5])
    with pytest.raises(ValueError, match="fractions"):
        w.ofdma_split_hz(1.0, [0.6, -0.1])
    with pytest.raises(ValueError, match="n="):
        w.equal_split_hz(1.0, 0)


# ------------------------------------------------------------------------------------------
# Bessel J0 and Jakes
# ------------------------------------------------------------------------------------------


def _j0_power_series(x: float) -> float:
    return math.fsum((-1) ** k * (x / 2) ** (2 * k) / math.factorial(k) ** 2 for k in range(60))


def test_bessel_j0_known_values():
    assert w.bessel_j0(0.0) == pytest.approx(1.0, abs=1e-15)
    assert abs(w.bessel_j0(2.404825557695773)) < 1e-14  # first zero
    assert abs(w.bessel_j0(5.520078110286311)) < 1e-14  # second zero
    assert abs(w.bessel_j0(8.653727912911013)) < 1e-14  # third zero
    assert w.bessel_j0(1.0) == pytest.approx(0.7651976865579666, abs=1e-15)
    # Power series (exact in exact arithmetic; fsum keeps it to ~1e-15 for |x| <= 6).
    xs = np.linspace(-6, 6, 25)
    np.testing.assert_allclose(w.bessel_j0(xs), [_j0_power_series(x) for x in xs], atol=1e-13)
    assert w.bessel_j0(np.zeros((2, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="x="):
        w.bessel_j0(1e4)


def test_bessel_j0_against_scipy():
    special = pytest.importorskip("scipy.special")
    xs = np.linspace(-50, 50, 4001)
    assert np.max(np.abs(w.bessel_j0(xs) - special.j0(xs))) < 1e-12


def test_jakes_correlation():
    assert w.jakes_correlation(66.7, 1e-3) == pytest.approx(w.bessel_j0(2 * math.pi * 0.0667))
    assert w.jakes_correlation(0.0, 1e-3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="slot_s"):
        w.jakes_correlation(10.0, -1.0)


# ------------------------------------------------------------------------------------------
# Gauss-Markov fading
# ------------------------------------------------------------------------------------------


def _simulate_complex(fading: GaussMarkovFading, rng, n_steps):
    fading.reset(rng)
    hs = np.empty((n_steps, fading.n_links), dtype=complex)
    hs[0] = fading.h
    for t in range(1, n_steps):
        fading.step(rng)
        hs[t] = fading.h
    return hs


def test_rayleigh_gauss_markov_statistics():
    rho = 0.8
    fading = GaussMarkovFading(rho, n_links=4000)
    hs = _simulate_complex(fading, np.random.default_rng(1), 100)
    p = np.abs(hs) ** 2
    # Mean power 1: 4e5 samples, power autocorrelation rho^(2k) inflates the variance by
    # (1 + rho^2)/(1 - rho^2) = 4.6, so SE ~ sqrt(4.6 / 4e5) = 0.0034.
    assert p.mean() == pytest.approx(1.0, abs=0.02)
    # Exponential marginal at the last slot (4000 independent links): KS 0.1% critical value
    # 1.95/sqrt(4000) = 0.031 (this seed gives 0.028; 200 seeds: 0.5% exceed the 1% value).
    last = np.sort(p[-1])
    ecdf = np.arange(1, last.size + 1) / last.size
    assert np.max(np.abs(ecdf - (1 - np.exp(-last)))) < 0.031
    # Lag-1 autocorrelations: corr(h_t, h_{t+1}) = rho, corr(|h_t|^2, |h_{t+1}|^2) = rho^2
    # (SE ~ 0.003 here; rho and rho^2 differ by 0.16).
    corr_h = np.mean(hs[1:] * np.conj(hs[:-1])).real / np.mean(p)
    assert corr_h == pytest.approx(rho, abs=0.015)
    pc = p - p.mean()
    corr_p = np.mean(pc[1:] * pc[:-1]) / np.mean(pc * pc)
    assert corr_p == pytest.approx(rho**2, abs=0.02)


def test_rician_mean_power_and_k_factor():
    k = 3.0
    fading = GaussMarkovFading(0.5, k_factor=k, n_links=2000)
    hs = _simulate_complex(fading, np.random.default_rng(2), 50)
    p = np.abs(hs) ** 2
    assert p.mean() == pytest.approx(1.0, abs=0.01)  # SE ~ 0.0016
    # LOS amplitude: |E h|^2 = K/(K+1).
    m = abs(hs.mean()) ** 2
    assert m / (1 - m) == pytest.approx(k, abs=0.1)
    # Moment estimator: Var|h|^2 / E^2 = (1+2K)/(1+K)^2 -> K = sqrt(1-g)/(1-sqrt(1-g)).
    g = p.var() / p.mean() ** 2
    k_mom = math.sqrt(1 - g) / (1 - math.sqrt(1 - g))
    assert k_mom == pytest.approx(k, abs=0.3)


def test_gauss_markov_api_and_validation():
    a = GaussMarkovFading(0.9, n_links=3).simulate(np.random.default_rng(5), 20)
    b = GaussMarkovFading(0.9, n_links=3).simulate(np.random.default_rng(5), 20)
    assert a.shape == (20, 3)
    np.testing.assert_array_equal(a, b)
    # rho = 1 freezes the channel; rho = 0 is i.i.d.
    frozen = GaussMarkovFading(1.0, n_links=2).simulate(np.random.default_rng(0), 5)
    np.testing.assert_allclose(frozen, np.broadcast_to(frozen[0], frozen.shape))
    per_link = GaussMarkovFading([0.1, 0.99], n_links=2)
    assert per_link.rho.tolist() == [0.1, 0.99]
    fd = GaussMarkovFading.from_doppler(66.7, 1e-3)
    assert fd.rho[0] == pytest.approx(w.bessel_j0(2 * math.pi * 0.0667))
    with pytest.raises(ValueError, match="rho"):
        GaussMarkovFading(1.2)
    with pytest.raises(ValueError, match="rho"):
        GaussMarkovFading([0.5, 0.5, 0.5], n_links=2)
    with pytest.raises(ValueError, match="k_factor"):
        GaussMarkovFading(0.5, k_factor=-1.0)
    with pytest.raises(ValueError, match="n_links"):
        GaussMarkovFading(0.5, n_links=0)
    with pytest.raises(RuntimeError, match="reset"):
        GaussMarkovFading(0.5).step(np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# FSMC
# ------------------------------------------------------------------------------------------


def _laguerre_joint(x: np.ndarray, rho: float, n_terms: int) -> np.ndarray:
    """Independent reference: Kibble's Laguerre series for the bivariate exponential."""
    w_ = np.exp(-np.minimum(x, 700.0))
    w_[np.isinf(x)] = 0.0
    xs = np.minimum(x, 700.0)
    joint = np.outer(w_[:-1] - w_[1:], w_[:-1] - w_[1:])
    l_prev, l_cur = np.zeros_like(xs), np.ones_like(xs)
    for n in range(1, n_terms):
        l_prev, l_cur = l_cur, ((2 * n - 1 - xs) * l_cur - (n - 1) * l_prev) / n
        f = w_ * (l_prev - l_cur)  # antiderivative of e^{-x} L_n
        inc = f[1:] - f[:-1]
        joint += rho ** (2 * n) * np.outer(inc, inc)
    return joint


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9, 0.99])
@pytest.mark.parametrize("n_states", [1, 4, 8])
def test_fsmc_rayleigh_is_a_consistent_chain(rho, n_states):
    ch = FSMC.rayleigh(10.0, n_states, rho)
    assert ch.n_states == n_states
    assert ch.transition.shape == (n_states, n_states)
    np.testing.assert_allclose(ch.transition.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(ch.transition >= 0)
    np.testing.assert_allclose(ch.stationary @ ch.transition, ch.stationary, atol=1e-12)
    np.testing.assert_allclose(ch.stationary, 1.0 / n_states, atol=1e-12)
    th = ch.thresholds_snr
    assert th[0] == 0.0 and th[-1] == math.inf and th.size == n_states + 1
    # Representatives lie inside their bins, and their stationary mean is the mean SNR.
    assert np.all((ch.snr_linear >= th[:-1]) & (ch.snr_linear < th[1:]))
    assert ch.stationary @ ch.snr_linear == pytest.approx(10.0, rel=1e-12)


def test_fsmc_rayleigh_matches_laguerre_series():
    for rho, edges in [(0.5, "equiprobable"), (0.9, "equiprobable"), (0.95, [0.0, 5.0, 10.0])]:
        n = 6 if edges == "equiprobable" else 4
        ch = FSMC.rayleigh(10.0, n, rho, edges=edges)
        x = ch.thresholds_snr / 10.0
        ref = _laguerre_joint(x, rho, n_terms=2000)
        ref_t = ref / ref.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(ch.transition, ref_t, atol=1e-12)


def test_fsmc_rayleigh_matches_marcum_q_integration():
    stats = pytest.importorskip("scipy.stats")
    integrate = pytest.importorskip("scipy.integrate")
    rho, mean = 0.9, 2.0
    ch = FSMC.rayleigh(mean, 3, rho, edges=[0.0, 6.0])
    x = ch.thresholds_snr / mean
    q = 1 - rho**2

    def tail(c, xx):  # P(x_{t+1} >= c | x_t = xx): Marcum Q via noncentral chi-square
        return 0.0 if np.isinf(c) else stats.ncx2.sf(2 * c / q, 2, 2 * rho**2 * xx / q)

    ref = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            ref[i, j] = integrate.quad(
                lambda xx, j=j: math.exp(-xx) * (tail(x[j], xx) - tail(x[j + 1], xx)),
                x[i],
                x[i + 1],
                epsabs=1e-13,
                epsrel=1e-12,
            )[0]
    np.testing.assert_allclose(ch.transition, ref / ref.sum(axis=1, keepdims=True), atol=1e-9)


def test_fsmc_rayleigh_limits_and_explicit_edges():
    iid = FSMC.rayleigh(5.0, 4, 0.0)
    np.testing.assert_allclose(iid.transition, 0.25, atol=1e-15)
    frozen = FSMC.rayleigh(5.0, 4, 1.0)
    np.testing.assert_allclose(frozen.transition, np.eye(4))
    # Explicit dB edges: stationary = Exp bin probabilities.
    ch = FSMC.rayleigh(10.0, 3, 0.9, edges=[5.0, 12.0])
    x = np.array([0.0, 10**0.5, 10**1.2, np.inf]) / 10.0
    np.testing.assert_allclose(ch.stationary, np.exp(-x[:-1]) - np.exp(-x[1:]), atol=1e-14)
    np.testing.assert_allclose(ch.stationary @ ch.transition, ch.stationary, atol=1e-13)
    # Far-tail bins (P ~ 4.6e-138) still get a sensible row: from SNR >= 25 dB with a 0 dB
    # mean, the next slot falls back (mean 0.81 * 316), staying with probability ~1e-8.
    tail = FSMC.rayleigh(1.0, 4, 0.9, edges=[-10.0, 10.0, 25.0])
    np.testing.assert_allclose(tail.transition.sum(axis=1), 1.0, atol=1e-12)
    assert tail.transition[3, 2] > 0.999 and tail.transition[3, 3] < 1e-6
    with pytest.raises(ValueError, match="edges"):
        FSMC.rayleigh(10.0, 4, 0.9, edges=[5.0, 12.0])  # 3 states, not 4
    with pytest.raises(ValueError, match="edges"):
        FSMC.rayleigh(10.0, 3, 0.9, edges=[12.0, 5.0])
    with pytest.raises(ValueError, match="edges"):
        FSMC.rayleigh(10.0, 3, 0.9, edges="uniform")
    with pytest.raises(ValueError, match="rho"):
        FSMC.rayleigh(10.0, 3, -0.1)
    with pytest.raises(ValueError, match="mean_snr_linear"):
        FSMC.rayleigh(0.0, 3, 0.5)
    with pytest.raises(ValueError, match="n_states"):
        FSMC.rayleigh(10.0, 0, 0.5)


def test_fsmc_matches_binned_gauss_markov_simulation():
    rho, mean, n = 0.9, 10.0, 6
    exact = FSMC.rayleigh(mean, n, rho)
    edges_db = 10 * np.log10(exact.thresholds_snr[1:-1])
    fading = GaussMarkovFading(rho, n_links=4000)
    snr = mean * fading.simulate(np.random.default_rng(3), 300)  # 1.2e6 transitions
    fitted = FSMC.fit(snr, edges_db, smoothing=0.0)
    # Each row has ~2e5 transitions: SE of an entry <= sqrt(0.25 / 2e5) = 0.0011 (inflated
    # a little by within-link dependence), so 0.008 is > 5 SE.
    np.testing.assert_allclose(fitted.transition, exact.transition, atol=0.008)
    freq = np.bincount(exact.state_of(snr).ravel(), minlength=n) / snr.size
    # Frequencies: SE ~ sqrt(p(1-p) * 9.5 / 1.2e6) = 0.001 (9.5 = (1+rho^2)/(1-rho^2)).
    np.testing.assert_allclose(freq, exact.stationary, atol=0.006)
    # Representatives: conditional means (the top bin is heavy-tailed: looser).
    np.testing.assert_allclose(fitted.snr_linear, exact.snr_linear, rtol=0.02)


def test_fsmc_fit_recovers_known_matrix():
    p = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    known = FSMC.from_matrix([1.0, 10.0, 100.0], p)
    path = known.sample_path(np.random.default_rng(4), 100_000)
    snr = known.snr_linear[path]
    edges_db = 10 * np.log10(known.thresholds_snr[1:-1])
    raw = FSMC.fit(snr, edges_db, smoothing=0.0)
    # ~3e4 visits per row: SE <= sqrt(0.25/3e4) = 0.003.
    np.testing.assert_allclose(raw.transition, p, atol=0.015)
    np.testing.assert_allclose(raw.snr_linear, [1.0, 10.0, 100.0])
    smooth = FSMC.fit(snr, edges_db)  # add-one: zero entries become 1 / (C_i + 3)
    assert 0 < smooth.transition[0, 2] < 1e-3
    np.testing.assert_allclose(smooth.transition, p, atol=0.015)
    # An unvisited state: add-one gives a uniform row; no smoothing gives a self-loop.
    few = FSMC.fit([1.0, 1.0, 10.0, 1.0], [5.0, 15.0])
    np.testing.assert_allclose(few.transition[2], 1 / 3)
    few0 = FSMC.fit([1.0, 1.0, 10.0, 1.0], [5.0, 15.0], smoothing=0.0)
    np.testing.assert_allclose(few0.transition[2], [0, 0, 1])
    np.testing.assert_allclose(few0.transition[0], [0.5, 0.5, 0])
    with pytest.raises(ValueError, match="snr_samples"):
        FSMC.fit([1.0], [5.0])


def test_wang_moayeri_approximation():
    fd, slot = w.doppler_hz(10.0, 2e9), 1e-4  # f_D T = 0.0067
    wm = FSMC.wang_moayeri(10.0, 8, fd, slot)
    np.testing.assert_allclose(wm.transition.sum(axis=1), 1.0, atol=1e-12)
    far = np.abs(np.subtract.outer(np.arange(8), np.arange(8))) > 1
    assert np.all(wm.transition[far] == 0)  # adjacent moves only
    np.testing.assert_allclose(wm.stationary, 1 / 8, atol=1e-12)
    np.testing.assert_allclose(wm.stationary @ wm.transition, wm.stationary, atol=1e-12)
    # Close to the exact chain at small f_D T (measured max |diff| 4e-5).
    exact = FSMC.rayleigh(10.0, 8, w.jakes_correlation(fd, slot))
    assert np.max(np.abs(wm.transition - exact.transition)) < 1e-3
    with pytest.raises(ValueError, match="doppler_hz\\*slot_s"):
        FSMC.wang_moayeri(10.0, 8, fd, 1e-2)


def test_fsmc_sampling_and_lookup():
    ch = FSMC.rayleigh(10.0, 4, 0.9)
    rng = np.random.default_rng(6)
    nxt = np.array([ch.step(1, rng) for _ in range(20_000)])
    assert all(isinstance(s, int) for s in nxt[:5].tolist())
    # SE <= sqrt(0.25 / 2e4) = 0.0035.
    np.testing.assert_allclose(
        np.bincount(nxt, minlength=4) / nxt.size, ch.transition[1], atol=0.02
    )
    init = np.array([ch.sample_initial(rng) for _ in range(20_000)])
    np.testing.assert_allclose(np.bincount(init, minlength=4) / init.size, 0.25, atol=0.02)
    vec = ch.step(np.array([0, 1, 2, 3] * 5000), rng)
    assert vec.shape == (20_000,) and vec.dtype.kind == "i"
    np.testing.assert_allclose(np.mean(vec[1::4] == 1), ch.transition[1, 1], atol=0.03)
    path = ch.sample_path(rng, 50_000)
    np.testing.assert_allclose(np.bincount(path, minlength=4) / path.size, 0.25, atol=0.03)
    th = ch.thresholds_snr
    np.testing.assert_array_equal(
        ch.state_of([0.0, th[1] * 0.999, th[1], th[3] * 10]), [0, 0, 1, 3]
    )
    np.testing.assert_allclose(ch.rates_bps(1e6), 1e6 * np.log2(1 + ch.snr_linear))
    assert FiniteStateMarkovChannel is FSMC
    with pytest.raises(ValueError, match="state"):
        ch.step(4, rng)
    with pytest.raises(ValueError, match="snr_linear"):
        ch.state_of(-1.0)


def test_from_matrix_validation():
    good = np.array([[0.9, 0.1], [0.2, 0.8]])
    ch = FSMC.from_matrix([1.0, 4.0], good)
    np.testing.assert_allclose(ch.thresholds_snr, [0.0, 2.0, np.inf])
    np.testing.assert_allclose(ch.stationary, [2 / 3, 1 / 3], atol=1e-12)
    with pytest.raises(ValueError, match="transition"):
        FSMC.from_matrix([1.0, 4.0], [[0.9, 0.2], [0.2, 0.8]])  # row sum
    with pytest.raises(ValueError, match="transition"):
        FSMC.from_matrix([1.0, 4.0], [[1.1, -0.1], [0.2, 0.8]])  # negative
    with pytest.raises(ValueError, match="transition"):
        FSMC.from_matrix([1.0, 4.0], [[1.0, 0.0]])  # not square
    with pytest.raises(ValueError, match="snr_linear"):
        FSMC.from_matrix([1.0, 4.0, 9.0], good)  # size mismatch
    with pytest.raises(ValueError, match="snr_linear"):
        FSMC.from_matrix([4.0, 1.0], good)  # not increasing, no thresholds
    with pytest.raises(ValueError, match="thresholds_snr"):
        FSMC.from_matrix([4.0, 1.0], good, thresholds_snr=[0.0, 2.0, 3.0])


# ---- link adaptation and the uplink channel builder -----------------------------------------
def test_link_rate_bounds_and_broadcast():
    snr = np.array([0.0, 0.01, 1.0, 3.0, 1e6])
    rate = w.link_rate_bps(1e6, snr)
    # log2(1.01) = 0.01436 < CQI 1's 0.1523; log2(1e6) = 19.9 > CQI 15's 5.5547.
    np.testing.assert_allclose(rate, [0.1523e6, 0.1523e6, 1e6, 2e6, 5.5547e6])
    assert w.link_rate_bps(2e6, 3.0) == pytest.approx(4e6)


def test_uplink_builder_and_single_sampler():
    from mei_envs.envs.early_exit_upload import EarlyExitUploadConfig

    cfg = EarlyExitUploadConfig()
    ch = w.build_uplink(cfg, 0.02)
    assert ch.mean_snr == pytest.approx(
        w.mean_snr_linear(0.2, 600.0, 1e6, noise_figure_db=9.0), rel=1e-15
    )
    assert ch.rho == pytest.approx(w.jakes_correlation(0.8333 * 3.5e9 / w.SPEED_OF_LIGHT_MPS, 0.02))
    snr, states, rates = ch.sample_path(np.random.default_rng(3), 50)
    # fsmc mode: the chain's own sampler (same draws), the states' SNRs and rates.
    np.testing.assert_array_equal(states, ch.fsmc.sample_path(np.random.default_rng(3), 50))
    np.testing.assert_array_equal(snr, ch.fsmc.snr_linear[states])
    np.testing.assert_array_equal(rates, ch.state_rate_bps[states])
    gm = w.build_uplink(cfg.replace(channel="gauss_markov"), 0.02)
    snr, states, rates = gm.sample_path(np.random.default_rng(3), 50)
    np.testing.assert_array_equal(states, gm.fsmc.state_of(snr))
    np.testing.assert_array_equal(rates, w.link_rate_bps(1e6, snr))


def test_uplink_config_validation_names_field():
    from mei_envs.config import ConfigError
    from mei_envs.envs.early_exit_upload import EarlyExitUploadConfig

    for field, bad in [("channel", "awgn"), ("fsmc_states", 0), ("speed_mps", -1.0)]:
        with pytest.raises(ConfigError, match=field):
            EarlyExitUploadConfig.from_dict({field: bad})
    with pytest.raises(ConfigError, match="max_spectral_efficiency_bps_per_hz"):
        w.UplinkChannelConfig.from_dict(
            {"min_spectral_efficiency_bps_per_hz": 2.0, "max_spectral_efficiency_bps_per_hz": 1.0}
        )
