"""Wireless link models shared by environments, baselines and DP oracles (numpy only).

Everything here follows REFERENCE.md section 5 (3GPP-style defaults used across the MEI4LLM
papers):

* unit conversions (dB, dBm, W);
* large-scale path loss (3GPP TR 36.814 macro, 3GPP TR 38.901 UMi-Street-Canyon LOS, free
  space), log-normal shadowing, Doppler shift, thermal noise, mean SNR;
* Shannon rates and bandwidth splits (equal / OFDMA fractions);
* small-scale fading: Jakes time correlation ``rho = J0(2 pi f_D T)`` (with our own Bessel
  J0), a first-order Gauss-Markov Rayleigh/Rician fading process, and a finite-state Markov
  channel (FSMC) whose transition matrix can be computed exactly from the Gauss-Markov
  Rayleigh process, approximated by Wang & Moayeri (1995), fitted to data, or given.

All random functions take the caller's ``np.random.Generator``. Bad inputs raise
``ValueError`` naming the argument, its value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mei_envs.checks import as_output, check_array, check_int
from mei_envs.config import EnvConfig

__all__ = [
    "SPEED_OF_LIGHT_MPS",
    "PATH_LOSS_MODELS",
    "db_to_linear",
    "linear_to_db",
    "dbm_to_watt",
    "watt_to_dbm",
    "path_loss_db",
    "macro_path_loss_db",
    "shadowing_db",
    "doppler_hz",
    "noise_power_w",
    "mean_snr_linear",
    "shannon_rate_bps",
    "shannon_rate_from_power_bps",
    "equal_split_hz",
    "ofdma_split_hz",
    "bessel_j0",
    "jakes_correlation",
    "GaussMarkovFading",
    "FiniteStateMarkovChannel",
    "FSMC",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0  # [m/s], exact by SI definition
PATH_LOSS_MODELS = (
    "3gpp_macro",
    "36814_macro",
    "3gpp_umi_los",
    "free_space",
    "38901_uma_los",
    "38901_uma_nlos",
    "38901_umi_los",
    "38901_umi_nlos",
)
# 3GPP TR 38.901 (V17) Table 7.4.1-1 scenarios: BS height [m] and validity ranges. The UE is
# at 1.5 m (the tables' hUT reference; the hUT terms vanish there).
TR38901_H_BS_M = {"uma": 25.0, "umi": 10.0}
TR38901_H_UT_M = 1.5
TR38901_DISTANCE_RANGE_M = (10.0, 5000.0)  # d2D validity of every UMa/UMi formula
TR38901_CARRIER_RANGE_HZ = (0.5e9, 100e9)  # fc validity (0.5-100 GHz)

# Defaults from REFERENCE.md section 5.
DEFAULT_NOISE_DENSITY_DBM_PER_HZ = -174.0  # [dBm/Hz] thermal noise at ~290 K
DEFAULT_NOISE_FIGURE_DB = 9.0  # [dB] receiver noise figure (REFERENCE: 7-9 dB typical)
DEFAULT_SHADOWING_STD_DB = 8.0  # [dB] log-normal shadowing, 3GPP TR 36.814 macro
DEFAULT_CARRIER_HZ = 2.0e9  # [Hz] 3GPP TR 36.814 evaluation carrier (macro formula is at 2 GHz)

FloatOrArray = float | NDArray[np.float64]
_TWO53 = float(2**53)  # Generator.random returns multiples of 2**-53
_STRIDE53 = 2**53 + 1


# --------------------------------------------------------------------------------------------
# validation helpers (shared with hardware and llm.costs: mei_envs.checks)
# --------------------------------------------------------------------------------------------
_check = check_array
_out = as_output
_check_int = check_int


def _as_float_array(name: str, value: ArrayLike) -> NDArray[np.float64]:
    return check_array(name, value, finite=False)


# --------------------------------------------------------------------------------------------
# unit conversions
# --------------------------------------------------------------------------------------------
def db_to_linear(x_db: ArrayLike) -> FloatOrArray:
    """``10**(x/10)``; -inf dB gives 0."""
    return _out(10.0 ** (_as_float_array("x_db", x_db) / 10.0))


def linear_to_db(x: ArrayLike) -> FloatOrArray:
    """``10*log10(x)`` for ``x >= 0`` (0 gives -inf)."""
    arr = _check("x", x, lo=0.0, finite=False)
    with np.errstate(divide="ignore"):
        return _out(10.0 * np.log10(arr))


def dbm_to_watt(x_dbm: ArrayLike) -> FloatOrArray:
    """Power in dBm to watts: ``10**((x-30)/10)``."""
    return _out(10.0 ** ((_as_float_array("x_dbm", x_dbm) - 30.0) / 10.0))


def watt_to_dbm(p_w: ArrayLike) -> FloatOrArray:
    """Power in watts (``>= 0``) to dBm (0 W gives -inf)."""
    arr = _check("p_w", p_w, lo=0.0, finite=False)
    with np.errstate(divide="ignore"):
        return _out(10.0 * np.log10(arr) + 30.0)


# --------------------------------------------------------------------------------------------
# large-scale propagation
# --------------------------------------------------------------------------------------------
def macro_path_loss_db(distance_m: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`path_loss_db`'s ``"3gpp_macro"`` formula, ``128.1 + 37.6 log10(d[km])`` (3GPP
    TR 36.814 Table A.2.1.1.2-3), on a float array of distances [m] > 0 without the argument
    checks: for hot paths whose distances are validated already (an env's reset)."""
    return 128.1 + 37.6 * np.log10(distance_m / 1000.0)


def path_loss_db(
    distance_m: ArrayLike,
    model: str = "3gpp_macro",
    *,
    carrier_hz: float = DEFAULT_CARRIER_HZ,
    h_bs_m: float = 10.0,
    h_ut_m: float = 1.5,
) -> FloatOrArray:
    """Distance-dependent path loss in dB (positive = loss).

    Models:
        * ``"3gpp_macro"`` (alias ``"36814_macro"``): ``128.1 + 37.6 log10(d[km])``, 3GPP
          TR 36.814 Table A.2.1.1.2-3 (macro cell, 2 GHz; REFERENCE.md section 5).
          ``carrier_hz`` is ignored: the formula holds at 2 GHz only.
        * ``"38901_uma_los"``, ``"38901_uma_nlos"``, ``"38901_umi_los"``,
          ``"38901_umi_nlos"``: 3GPP TR 38.901 Table 7.4.1-1 at ``carrier_hz`` (see
          ``_tr38901_path_loss_db``; validity ranges enforced).
        * ``"3gpp_umi_los"``: 3GPP TR 38.901 Table 7.4.1-1, UMi-Street Canyon LOS, dual slope:
          ``PL1 = 32.4 + 21 log10(d3D) + 20 log10(fc[GHz])`` up to the breakpoint
          ``d'BP = 4 h'BS h'UT fc / c`` (``h' = h - 1 m``), then
          ``PL2 = 32.4 + 40 log10(d3D) + 20 log10(fc) - 9.5 log10(d'BP^2 + (hBS-hUT)^2)``.
          ``distance_m`` is the 2-D distance; defaults hBS = 10 m, hUT = 1.5 m (38.901 UMi).
          The table's validity range (10 m - 5 km) is not enforced.
        * ``"free_space"``: Friis, ``20 log10(4 pi d fc / c)``.

    Args:
        distance_m: transmitter-receiver distance [m], every value > 0.
        model: one of :data:`PATH_LOSS_MODELS`.
        carrier_hz: carrier frequency [Hz] for ``3gpp_umi_los`` and ``free_space``.
        h_bs_m, h_ut_m: antenna heights [m] for ``3gpp_umi_los``.
    """
    d = _check("distance_m", distance_m, lo=0.0, lo_open=True)
    if model in ("3gpp_macro", "36814_macro"):
        return _out(macro_path_loss_db(d))
    fc = float(_check("carrier_hz", carrier_hz, lo=0.0, lo_open=True))
    if model == "free_space":
        return _out(20.0 * np.log10(4.0 * math.pi * d * fc / SPEED_OF_LIGHT_MPS))
    if model == "3gpp_umi_los":
        hb = float(_check("h_bs_m", h_bs_m, lo=1.0, lo_open=True))
        hu = float(_check("h_ut_m", h_ut_m, lo=1.0, lo_open=True))
        fc_ghz = fc / 1e9
        d3 = np.sqrt(d**2 + (hb - hu) ** 2)
        d_bp = 4.0 * (hb - 1.0) * (hu - 1.0) * fc / SPEED_OF_LIGHT_MPS  # [m]
        pl1 = 32.4 + 21.0 * np.log10(d3) + 20.0 * np.log10(fc_ghz)
        pl2 = (
            32.4
            + 40.0 * np.log10(d3)
            + 20.0 * np.log10(fc_ghz)
            - 9.5 * np.log10(d_bp**2 + (hb - hu) ** 2)
        )
        return _out(np.where(d <= d_bp, pl1, pl2))
    if model.startswith("38901_"):
        return _out(_tr38901_path_loss_db(d, fc, model[len("38901_") :]))
    raise ValueError(f"model={model!r}: must be one of {list(PATH_LOSS_MODELS)}")


def _tr38901_path_loss_db(d2d: NDArray[np.float64], fc: float, case: str) -> NDArray[np.float64]:
    """3GPP TR 38.901 Table 7.4.1-1 UMa/UMi-Street-Canyon path loss [dB] at the carrier.

    LOS: dual slope with breakpoint ``d'BP = 4 h'BS h'UT fc / c`` (effective heights
    ``h' = h - 1 m``); UMa ``PL1 = 28 + 22 log10 d3D + 20 log10 fc``, ``PL2 = 28 + 40 log10
    d3D + 20 log10 fc - 9 log10(d'BP^2 + (hBS - hUT)^2)``; UMi ``32.4 + 21 ...`` / ``32.4 +
    40 ... - 9.5 log10(...)``. NLOS: ``max(PL_LOS, PL'_NLOS)`` with UMa ``13.54 + 39.08
    log10 d3D + 20 log10 fc`` and UMi ``22.4 + 35.3 log10 d3D + 21.3 log10 fc`` (fc in GHz,
    hUT = 1.5 m). Valid for 10 m <= d2D <= 5 km and 0.5 <= fc <= 100 GHz (enforced).
    """
    area, los = case.split("_")
    lo, hi = TR38901_DISTANCE_RANGE_M
    if np.any(d2d < lo) or np.any(d2d > hi):
        raise ValueError(
            f"distance_m={d2d.tolist()!r}: TR 38.901 {area.upper()} is valid for "
            f"{lo:g} m <= d2D <= {hi:g} m"
        )
    flo, fhi = TR38901_CARRIER_RANGE_HZ
    if not flo <= fc <= fhi:
        raise ValueError(f"carrier_hz={fc!r}: TR 38.901 is valid for {flo:g}..{fhi:g} Hz")
    hb, hu = TR38901_H_BS_M[area], TR38901_H_UT_M
    fc_ghz = fc / 1e9
    d3 = np.sqrt(d2d**2 + (hb - hu) ** 2)
    d_bp = 4.0 * (hb - 1.0) * (hu - 1.0) * fc / SPEED_OF_LIGHT_MPS
    if area == "uma":
        a1, a2, slope1, bp_coef = 28.0, 28.0, 22.0, 9.0
    else:
        a1, a2, slope1, bp_coef = 32.4, 32.4, 21.0, 9.5
    pl1 = a1 + slope1 * np.log10(d3) + 20.0 * np.log10(fc_ghz)
    pl2 = (
        a2
        + 40.0 * np.log10(d3)
        + 20.0 * np.log10(fc_ghz)
        - bp_coef * np.log10(d_bp**2 + (hb - hu) ** 2)
    )
    pl_los = np.where(d2d <= d_bp, pl1, pl2)
    if los == "los":
        return pl_los
    if area == "uma":
        pl_nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(fc_ghz)
    else:
        pl_nlos = 22.4 + 35.3 * np.log10(d3) + 21.3 * np.log10(fc_ghz)
    return np.maximum(pl_los, pl_nlos)


def shadowing_db(
    rng: np.random.Generator,
    std_db: float = DEFAULT_SHADOWING_STD_DB,
    size: int | tuple[int, ...] | None = None,
) -> FloatOrArray:
    """Log-normal shadowing sample(s) in dB: ``N(0, std_db^2)`` (8 dB, 3GPP TR 36.814 macro)."""
    std = float(_check("std_db", std_db, lo=0.0))
    return _out(np.asarray(rng.normal(0.0, std, size=size), dtype=float))


def doppler_hz(speed_mps: ArrayLike, carrier_hz: float) -> FloatOrArray:
    """Maximum Doppler shift ``f_D = v f_c / c`` [Hz]."""
    v = _check("speed_mps", speed_mps, lo=0.0)
    fc = float(_check("carrier_hz", carrier_hz, lo=0.0, lo_open=True))
    return _out(v * fc / SPEED_OF_LIGHT_MPS)


def noise_power_w(
    bandwidth_hz: ArrayLike,
    noise_density_dbm_per_hz: float = DEFAULT_NOISE_DENSITY_DBM_PER_HZ,
    noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB,
) -> FloatOrArray:
    """Receiver noise power ``B * N0 * NF`` [W] (N0 in dBm/Hz, NF in dB)."""
    b = _check("bandwidth_hz", bandwidth_hz, lo=0.0)
    n0 = float(_check("noise_density_dbm_per_hz", noise_density_dbm_per_hz))
    nf = float(_check("noise_figure_db", noise_figure_db))
    return _out(b * 10.0 ** ((n0 + nf - 30.0) / 10.0))


def mean_snr_linear(
    tx_power_w: ArrayLike,
    distance_m: ArrayLike,
    bandwidth_hz: ArrayLike,
    *,
    noise_density_dbm_per_hz: float = DEFAULT_NOISE_DENSITY_DBM_PER_HZ,
    noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB,
    path_loss_model: str = "3gpp_macro",
    shadowing_db: ArrayLike = 0.0,
    carrier_hz: float = DEFAULT_CARRIER_HZ,
) -> FloatOrArray:
    """Mean (fading-averaged) SNR ``p * 10^(-(PL + X)/10) / (B N0 NF)``, linear.

    ``shadowing_db`` is an extra loss X in dB added to the path loss (a draw of
    :func:`shadowing_db` is zero-mean, so the sign convention only matters for fixed values).
    """
    p = _check("tx_power_w", tx_power_w, lo=0.0)
    b = _check("bandwidth_hz", bandwidth_hz, lo=0.0, lo_open=True)
    x = _check("shadowing_db", shadowing_db)
    pl = np.asarray(path_loss_db(distance_m, path_loss_model, carrier_hz=carrier_hz))
    noise = np.asarray(noise_power_w(b, noise_density_dbm_per_hz, noise_figure_db))
    return _out(p * 10.0 ** (-(pl + x) / 10.0) / noise)


# --------------------------------------------------------------------------------------------
# rates and bandwidth
# --------------------------------------------------------------------------------------------
def shannon_rate_bps(bandwidth_hz: ArrayLike, snr_linear: ArrayLike) -> FloatOrArray:
    """``B log2(1 + snr)`` [bit/s]; broadcasts."""
    b = _check("bandwidth_hz", bandwidth_hz, lo=0.0)
    s = _check("snr_linear", snr_linear, lo=0.0)
    return _out(b * np.log2(1.0 + s))


def shannon_rate_from_power_bps(
    bandwidth_hz: ArrayLike,
    tx_power_w: ArrayLike,
    channel_gain: ArrayLike,
    noise_density_w_per_hz: ArrayLike,
) -> FloatOrArray:
    """``r = B log2(1 + p g / (B N0))`` [bit/s] (REFERENCE.md section 5); broadcasts.

    Concave and increasing in B; ``B = 0`` gives rate 0 (the limit as B -> 0).
    """
    b = _check("bandwidth_hz", bandwidth_hz, lo=0.0)
    p = _check("tx_power_w", tx_power_w, lo=0.0)
    g = _check("channel_gain", channel_gain, lo=0.0)
    n0 = _check("noise_density_w_per_hz", noise_density_w_per_hz, lo=0.0, lo_open=True)
    b, p, g, n0 = np.broadcast_arrays(b, p, g, n0)
    pos = b > 0
    safe_b = np.where(pos, b, 1.0)
    rate = np.where(pos, b * np.log2(1.0 + p * g / (safe_b * n0)), 0.0)
    return _out(rate)


def equal_split_hz(total_hz: float, n: int) -> NDArray[np.float64]:
    """``n`` equal shares of ``total_hz``."""
    total = float(_check("total_hz", total_hz, lo=0.0))
    n = _check_int("n", n, 1)
    return np.full(n, total / n)


def ofdma_split_hz(total_hz: float, fractions: ArrayLike) -> NDArray[np.float64]:
    """Bandwidth per user ``total_hz * fractions``; fractions >= 0 with sum <= 1 (+1e-9)."""
    total = float(_check("total_hz", total_hz, lo=0.0))
    f = _check("fractions", fractions, lo=0.0)
    if f.ndim != 1:
        raise ValueError(f"fractions={fractions!r}: must be a 1-D sequence")
    if f.sum() > 1.0 + 1e-9:
        raise ValueError(f"fractions={fractions!r}: must sum to <= 1 (sum is {f.sum():.12g})")
    return total * f


# --------------------------------------------------------------------------------------------
# Bessel J0 and Jakes correlation
# --------------------------------------------------------------------------------------------
# J0(x) = (1/pi) int_0^pi cos(x sin t) dt. The integrand is pi-periodic and analytic, so the
# N-point trapezoidal (= midpoint) rule is exact up to the aliasing terms
# 2 * sum_{m>=1} J_{2mN}(x); with N = 256, J_512(x) < 1e-100 for |x| <= 200, so the error is
# round-off only (~1e-15) there, and still ~1e-15 at |x| = 400. Beyond |x| = 400 we use
# Hankel's asymptotic expansion (Abramowitz & Stegun 9.2.5, 9.2.9-9.2.10), whose terms
# shrink by ~(2k-1)^2 / (8 k |x|) < 1/400 each: 12 terms reach round-off.
_J0_NODES = 256
_J0_SIN = np.sin(np.pi * (np.arange(_J0_NODES) + 0.5) / _J0_NODES)
_J0_QUADRATURE_MAX_ABS_X = 400.0
_J0_HANKEL_TERMS = 12


def _hankel_coefficients(n_terms: int) -> NDArray[np.float64]:
    """a_k(0) = prod_{j<=k} (-(2j-1)^2) / (k! 8^k): J0's Hankel expansion coefficients."""
    a = np.empty(n_terms)
    a[0] = 1.0
    for k in range(1, n_terms):
        a[k] = a[k - 1] * (-((2 * k - 1) ** 2)) / (k * 8.0)
    return a


_J0_HANKEL = _hankel_coefficients(2 * _J0_HANKEL_TERMS)


def _j0_hankel(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """J0 for |x| > 400: sqrt(2/(pi x)) (P cos(x - pi/4) - Q sin(x - pi/4))."""
    x = np.abs(x)
    p = np.zeros_like(x)
    q = np.zeros_like(x)
    for k in range(_J0_HANKEL_TERMS):
        sign = -1.0 if k % 2 else 1.0
        p += sign * _J0_HANKEL[2 * k] / x ** (2 * k)
        q += sign * _J0_HANKEL[2 * k + 1] / x ** (2 * k + 1)
    chi = x - 0.25 * math.pi
    return np.sqrt(2.0 / (math.pi * x)) * (p * np.cos(chi) - q * np.sin(chi))


def bessel_j0(x: ArrayLike) -> FloatOrArray:
    """Bessel function of the first kind, order 0, for any finite ``x`` (error ~1e-15).

    ``|x| <= 400``: the midpoint rule for ``(1/pi) int_0^pi cos(x sin t) dt`` on a fixed
    256-node grid (spectrally accurate for this periodic integrand); beyond: Hankel's
    asymptotic expansion.
    """
    arr = _check("x", x)
    flat = arr.ravel()
    out = np.empty_like(flat)
    small = np.abs(flat) <= _J0_QUADRATURE_MAX_ABS_X
    near = flat[small]
    vals = np.empty_like(near)
    chunk = 4096  # bounds the temporary (chunk x 256) matrix
    for start in range(0, near.size, chunk):
        part = near[start : start + chunk]
        vals[start : start + chunk] = np.cos(np.multiply.outer(part, _J0_SIN)).mean(axis=-1)
    out[small] = vals
    out[~small] = _j0_hankel(flat[~small])
    return _out(out.reshape(arr.shape))


def jakes_correlation(doppler_hz: ArrayLike, slot_s: ArrayLike) -> FloatOrArray:
    """Clarke/Jakes slot-to-slot correlation of the complex gain: ``J0(2 pi f_D T)``.

    It is negative for ``f_D T`` in (0.38, 0.88), (1.38, 1.88), ... (J0's negative lobes,
    down to -0.403): a fast user or a long slot sees a gain anti-correlated with the previous
    slot's. :class:`GaussMarkovFading` and :meth:`FiniteStateMarkovChannel.rayleigh` accept
    any ``rho`` in [-1, 1]; a first-order model matches this lag-one correlation (lag ``n``
    then has ``rho^n``, not ``J0(2 pi f_D n T)``).
    """
    fd = _check("doppler_hz", doppler_hz, lo=0.0)
    t = _check("slot_s", slot_s, lo=0.0)
    return bessel_j0(2.0 * math.pi * fd * t)


# --------------------------------------------------------------------------------------------
# Gauss-Markov (AR(1)) Rayleigh / Rician fading
# --------------------------------------------------------------------------------------------
class GaussMarkovFading:
    """First-order Gauss-Markov small-scale fading for ``n_links`` independent links.

    The scattered part follows the complex Gaussian AR(1) process
    ``s_t = rho s_{t-1} + sqrt(1 - rho^2) w_t`` with ``s_0, w_t ~ CN(0, 1)`` i.i.d. (so the
    process is stationary from the first slot), and the gain is
    ``h_t = sqrt(K/(K+1)) + sqrt(1/(K+1)) s_t`` with a fixed line-of-sight phase 0. Hence
    ``E|h|^2 = 1``; ``K = 0`` is Rayleigh (``|h|^2 ~ Exp(1)``), ``K > 0`` Rician. For Rayleigh,
    ``corr(h_t, h_{t+1}) = rho`` and ``corr(|h_t|^2, |h_{t+1}|^2) = rho^2``.

    Args:
        rho: slot-to-slot correlation in [-1, 1], scalar or one per link (e.g.
            :func:`jakes_correlation`).
        k_factor: Rician K factor (linear, >= 0), scalar or one per link.
        n_links: number of independent links (>= 1).
    """

    def __init__(self, rho: ArrayLike, k_factor: ArrayLike = 0.0, n_links: int = 1) -> None:
        self.n_links = _check_int("n_links", n_links, 1)
        rho_arr = _check("rho", rho, lo=-1.0, hi=1.0)
        k_arr = _check("k_factor", k_factor, lo=0.0)
        for name, arr in (("rho", rho_arr), ("k_factor", k_arr)):
            if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, self.n_links)):
                raise ValueError(
                    f"{name} has shape {arr.shape}: must be a scalar or have n_links="
                    f"{self.n_links} entries"
                )
        self.rho = np.broadcast_to(rho_arr, (self.n_links,)).astype(float)
        self.k_factor = np.broadcast_to(k_arr, (self.n_links,)).astype(float)
        self._innov = np.sqrt(1.0 - self.rho**2)
        self._los = np.sqrt(self.k_factor / (self.k_factor + 1.0))
        self._scat = np.sqrt(1.0 / (self.k_factor + 1.0))
        self._s: NDArray[np.complex128] | None = None

    @classmethod
    def from_doppler(
        cls, doppler_hz: float, slot_s: float, k_factor: ArrayLike = 0.0, n_links: int = 1
    ) -> GaussMarkovFading:
        """Build with ``rho = J0(2 pi f_D T)`` (REFERENCE.md section 5; may be negative)."""
        return cls(jakes_correlation(doppler_hz, slot_s), k_factor, n_links)

    @staticmethod
    def _cn(rng: np.random.Generator, n: int) -> NDArray[np.complex128]:
        z = rng.standard_normal((2, n))
        return (z[0] + 1j * z[1]) * math.sqrt(0.5)

    @property
    def h(self) -> NDArray[np.complex128]:
        """Current complex gains, shape ``(n_links,)``."""
        if self._s is None:
            raise RuntimeError("GaussMarkovFading: call reset(rng) before reading h")
        return self._los + self._scat * self._s

    def reset(self, rng: np.random.Generator) -> NDArray[np.float64]:
        """Draw a stationary initial state; return power gains ``|h|^2``, shape (n_links,)."""
        self._s = self._cn(rng, self.n_links)
        return np.abs(self.h) ** 2

    def step(self, rng: np.random.Generator) -> NDArray[np.float64]:
        """Advance one slot; return power gains ``|h|^2``, shape (n_links,)."""
        if self._s is None:
            raise RuntimeError("GaussMarkovFading: call reset(rng) before step(rng)")
        self._s = self.rho * self._s + self._innov * self._cn(rng, self.n_links)
        return np.abs(self.h) ** 2

    def simulate(self, rng: np.random.Generator, n_steps: int) -> NDArray[np.float64]:
        """Power gains of ``n_steps`` slots starting from a reset: shape (n_steps, n_links)."""
        n_steps = _check_int("n_steps", n_steps, 1)
        # The same draws, in the same order, as reset() then step() n_steps - 1 times
        # (each slot draws the real parts of every link, then the imaginary parts).
        z = rng.standard_normal((n_steps, 2, self.n_links))
        w = (z[:, 0] + 1j * z[:, 1]) * math.sqrt(0.5)
        s = np.empty_like(w)
        s[0] = w[0]
        if self.n_links == 1:  # scalar recursion: plain complex arithmetic is ~20x faster
            rho, innov = float(self.rho[0]), float(self._innov[0])
            wl = w[:, 0].tolist()
            cur = wl[0]
            col = [cur]
            for t in range(1, n_steps):
                cur = rho * cur + innov * wl[t]
                col.append(cur)
            s[:, 0] = col
        else:
            for t in range(1, n_steps):
                s[t] = self.rho * s[t - 1] + self._innov * w[t]
        self._s = s[-1].copy()
        return np.abs(self._los + self._scat * s) ** 2


# --------------------------------------------------------------------------------------------
# Finite-state Markov channel
# --------------------------------------------------------------------------------------------
_JOINT_REL_TOL = 1e-15  # stop when a chunk adds < 1e-15 of every row's probability
_JOINT_CHUNK = 4096  # mixture terms per vectorised chunk
_JOINT_MAX_TERMS = 20_000_000
# Below this ratio of a slot's power step to the bin widths, the slow-fading expansion
# replaces the series (measured relative error of the transition probabilities against the
# series: 2.3e-5 at 8 bins and 1 - rho^2 = 1e-4 (ratio 0.08), 7e-5 at 16 bins (0.10),
# 2.3e-4 at 8 bins and 1e-3 (0.17)).
_SLOW_FADING_STEP_OVER_WIDTH = 0.15


def _normalised_edges(
    n_states: int, edges: str | ArrayLike, mean_snr: float
) -> NDArray[np.float64]:
    """Bin edges of ``x = snr / mean_snr``: ``[0, x_1, ..., x_{n-1}, inf]``."""
    if isinstance(edges, str):
        if edges != "equiprobable":
            raise ValueError(
                f"edges={edges!r}: must be 'equiprobable' or an array of thresholds in dB"
            )
        k = np.arange(1, n_states)
        inner = -np.log1p(-k / n_states)  # P(x < x_k) = k/n for x ~ Exp(1)
    else:
        inner_snr = _interior_thresholds_snr(edges)
        if inner_snr.size + 1 != n_states:
            raise ValueError(
                f"edges={edges!r}: {inner_snr.size} interior thresholds give "
                f"{inner_snr.size + 1} states, but n_states={n_states}"
            )
        inner = inner_snr / mean_snr
    return np.concatenate([[0.0], inner, [np.inf]])


def _interior_thresholds_snr(edges_db: ArrayLike) -> NDArray[np.float64]:
    """Linear interior thresholds from dB edges; optional leading -inf / trailing +inf."""
    arr = _as_float_array("edges", edges_db)
    if arr.ndim != 1:
        raise ValueError(f"edges={edges_db!r}: must be a 1-D array of thresholds in dB")
    if arr.size and arr[0] == -np.inf:
        arr = arr[1:]
    if arr.size and arr[-1] == np.inf:
        arr = arr[:-1]
    if not np.isfinite(arr).all() or np.any(np.diff(arr) <= 0):
        raise ValueError(
            f"edges={edges_db!r}: interior thresholds [dB] must be finite and strictly increasing"
        )
    return 10.0 ** (arr / 10.0)


def _exp_bin_stats(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """For x ~ Exp(1) and edges ``x``: bin probabilities and conditional means."""
    lo, hi = x[:-1], x[1:]
    prob = np.exp(-lo) - np.exp(-hi)
    d = hi - lo
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # E[x | lo <= x < hi] = lo + 1 - d / (e^d - 1)  (-> lo + 1 for d = inf)
        corr = np.where(np.isinf(d), 0.0, d / np.expm1(d))
    return prob, lo + 1.0 - corr


def _rayleigh_joint(
    x: NDArray[np.float64], rho: float, *, slow_fading_expansion: bool = True
) -> NDArray[np.float64]:
    """Joint bin probabilities ``P(x_t in i, x_{t+1} in j)`` for the Gauss-Markov Rayleigh power.

    With ``q = 1 - rho^2``, the pair of consecutive normalised powers (Kibble's bivariate
    exponential) is a geometric mixture of independent gamma pairs: with
    ``K ~ Geometric``, ``P(K = k) = q rho^{2k}``, and given K, ``x_t / q`` and ``x_{t+1} / q``
    are i.i.d. ``Gamma(k + 1, 1)``. (Equivalently: given ``x_t``, ``2 x_{t+1} / q`` is
    noncentral chi-square with 2 dof and noncentrality ``2 rho^2 x_t / q``, whose Poisson
    mixture integrates in closed form over a bin of ``x_t``.) Hence

    ``P(i, j) = sum_k q rho^{2k} D_k(i) D_k(j)``,
    ``D_k(i) = P(Gamma(k+1) in [x_i/q, x_{i+1}/q)) = F_k(x_i/q) - F_k(x_{i+1}/q)``,

    where ``F_k(A) = P(Poisson(A) <= k)``. Every term is non-negative (no cancellation), so
    each row is accurate relative to its own probability, also for far-tail bins. Terms are
    summed in vectorised chunks until past every edge and a chunk adds less than 1e-15 of
    every row's probability.
    """
    w_edges = np.exp(-x)
    prob = w_edges[:-1] - w_edges[1:]
    if rho == 0.0:
        return np.outer(prob, prob)
    if rho == 1.0:
        return np.diag(prob)
    r2 = rho * rho
    q = 1.0 - r2
    a_inner = x[1:-1] / q  # interior edges in Gamma units (finite, > 0)
    log_a = np.log(a_inner)[:, None]
    a_max = float(a_inner.max()) if a_inner.size else 0.0
    k_past_edges = a_max + 40.0 * math.sqrt(a_max) + 50.0
    # Slow fading: one slot's power step (std sqrt(2 q G) at edge G) is small against the
    # bins on both sides of every edge; the series would need ~G/q terms.
    width = np.diff(x)
    step_over_width = np.sqrt(2.0 * q * x[1:-1]) / np.minimum(width[:-1], width[1:])
    small_steps = step_over_width.max() < _SLOW_FADING_STEP_OVER_WIDTH if a_inner.size else False
    if slow_fading_expansion and (small_steps or k_past_edges > _JOINT_MAX_TERMS):
        return _rayleigh_joint_slow_fading(x, q)
    n = prob.size
    joint = np.zeros((n, n))
    cdf_run = np.zeros((a_inner.size, 1))  # F_{k0-1}(A) carried between chunks
    k0 = 0
    while True:
        ks = np.arange(k0, k0 + _JOINT_CHUNK)
        lgam = np.array([math.lgamma(k + 1.0) for k in range(k0, k0 + _JOINT_CHUNK)])
        pmf = np.exp(-a_inner[:, None] + ks[None, :] * log_a - lgam[None, :])
        cdf_inner = cdf_run + np.cumsum(pmf, axis=1)
        cdf_run = cdf_inner[:, -1:]
        cdf = np.vstack([np.ones((1, ks.size)), cdf_inner, np.zeros((1, ks.size))])
        d = np.clip(cdf[:-1] - cdf[1:], 0.0, None)  # (n, chunk)
        wk = q * np.exp(ks * math.log(r2))
        dw = d * wk[None, :]
        joint += dw @ d.T
        k0 += _JOINT_CHUNK
        if k0 > k_past_edges:
            # 40 standard deviations past every edge, D_k is 1 for the top bin and 0 for the
            # others (to far below round-off, which would otherwise leave ~1e-13 of cumsum
            # noise in them), so the rest of the series is the geometric tail
            # sum_{k >= k0} q rho^{2k} = rho^{2 k0} in the top bin's diagonal.
            joint[-1, -1] += r2**k0
            return joint


def _rayleigh_joint_slow_fading(x: NDArray[np.float64], q: float) -> NDArray[np.float64]:
    """Joint bin probabilities for ``q = 1 - rho^2`` so small that the series needs too many
    terms (an almost static channel: ``f_D T`` below ~1e-3).

    Given ``x_t``, one slot moves the normalised power by ``2 Re(conj(h) sqrt(q) w) + O(q)``,
    a zero-mean Gaussian step of variance ``2 q x_t``. The probability mass crossing an edge
    ``G`` per slot, either way, is then ``e^{-G} E[max(N(0, 2qG), 0)] = e^{-G} sqrt(q G / pi)``
    (the drift ``-(1 - rho^2) x + q`` and jumps over a whole bin are higher order; used
    only where a step is < 0.15 of the bins around an edge, where the measured relative
    error of the transition probabilities against the series is ~2e-4 or less). Rows keep their
    stationary
    probabilities, so the chain is reversible like the exact one.
    """
    w_edges = np.exp(-x)
    prob = w_edges[:-1] - w_edges[1:]
    inner = x[1:-1]
    flow = np.exp(-inner) * np.sqrt(q * inner / math.pi)  # mass crossing each inner edge
    joint = np.diag(prob.copy())
    idx = np.arange(inner.size)
    joint[idx, idx + 1] = flow
    joint[idx + 1, idx] = flow
    joint[idx, idx] -= flow
    joint[idx + 1, idx + 1] -= flow
    return joint


class FiniteStateMarkovChannel:
    """Finite-state Markov channel (FSMC) over SNR bins.

    State ``i`` means the SNR lies in ``[thresholds_snr[i], thresholds_snr[i+1])``.

    Attributes:
        thresholds_snr: bin edges (linear SNR), length ``n_states + 1``, first 0, last inf.
        snr_linear: representative SNR of each state (conditional mean of the SNR in the bin
            for the Rayleigh constructors; empirical bin mean for :meth:`fit`).
        transition: ``(n, n)`` row-stochastic matrix, ``transition[i, j] = P(j | i)``.
        stationary: stationary distribution ``pi = pi @ transition``.
        n_states: number of states.

    Build with :meth:`rayleigh` (exact), :meth:`wang_moayeri` (level-crossing approximation),
    :meth:`fit` (from an SNR trajectory) or :meth:`from_matrix`.
    """

    def __init__(
        self,
        snr_linear: ArrayLike,
        transition: ArrayLike,
        thresholds_snr: ArrayLike,
        stationary: ArrayLike | None = None,
    ) -> None:
        snr = _check("snr_linear", snr_linear, lo=0.0)
        p = _check("transition", transition, lo=0.0)
        th = _check("thresholds_snr", thresholds_snr, lo=0.0, finite=False)
        if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 1:
            raise ValueError(f"transition has shape {p.shape}: must be square (n, n), n >= 1")
        n = p.shape[0]
        if snr.shape != (n,):
            raise ValueError(
                f"snr_linear has shape {snr.shape}: must be ({n},) to match transition {p.shape}"
            )
        row_sums = p.sum(axis=1)
        if np.max(np.abs(row_sums - 1.0)) > 1e-9:
            raise ValueError(
                f"transition row sums {row_sums.tolist()}: every row must sum to 1 (tol 1e-9)"
            )
        if th.shape != (n + 1,) or th[0] != 0.0 or th[-1] != np.inf or np.any(np.diff(th) <= 0):
            raise ValueError(
                f"thresholds_snr={th.tolist()}: must be strictly increasing, length {n + 1}, "
                "start at 0 and end at inf"
            )
        self.n_states = n
        self.snr_linear = snr
        self.transition = p / row_sums[:, None]
        self.thresholds_snr = th
        if stationary is None:
            self.stationary = self._solve_stationary(self.transition)
        else:
            pi = _check("stationary", stationary, lo=0.0)
            if pi.shape != (n,) or abs(pi.sum() - 1.0) > 1e-9:
                raise ValueError(
                    f"stationary={pi.tolist()}: must have {n} entries summing to 1 (tol 1e-9)"
                )
            self.stationary = pi / pi.sum()
        self._cum = np.cumsum(self.transition, axis=1)
        self._cum[:, -1] = 1.0  # guard against round-off so searchsorted never returns n
        self._cum_pi = np.cumsum(self.stationary)
        self._cum_pi[-1] = 1.0

    # ---- constructors -----------------------------------------------------------------------
    @classmethod
    def rayleigh(
        cls,
        mean_snr_linear: float,
        n_states: int,
        rho: float,
        edges: str | ArrayLike = "equiprobable",
    ) -> FiniteStateMarkovChannel:
        """Exact FSMC of Rayleigh SNR ``mean_snr * |h_t|^2`` with Gauss-Markov ``h`` (corr ``rho``).

        The joint law of consecutive powers is Kibble's bivariate exponential (given ``x_t``,
        ``2 x_{t+1} / (1 - rho^2)`` is noncentral chi-square with 2 dof and noncentrality
        ``2 rho^2 x_t / (1 - rho^2)``); the bin-to-bin joint probabilities are summed exactly
        from its Laguerre series (truncation error < 1e-13, see ``_rayleigh_joint``). The
        stationary distribution equals the bin probabilities (``1/n`` for equiprobable edges).

        Args:
            mean_snr_linear: average SNR (linear, > 0).
            n_states: number of SNR bins (>= 1).
            rho: correlation of the complex gain between slots, in [-1, 1] (the power
                process, hence the chain, depends on ``rho^2`` only).
            edges: ``"equiprobable"`` or ``n_states - 1`` interior thresholds in dB
                (a leading -inf and trailing +inf are accepted and ignored).
        """
        mean = float(_check("mean_snr_linear", mean_snr_linear, lo=0.0, lo_open=True))
        n = _check_int("n_states", n_states, 1)
        r = abs(float(_check("rho", rho, lo=-1.0, hi=1.0)))  # the power chain sees rho^2
        x = _normalised_edges(n, edges, mean)
        prob, cond_mean = _exp_bin_stats(x)
        if np.any(prob <= 0):
            raise ValueError(
                f"edges={edges!r}: some bins have probability 0 at mean_snr_linear={mean:g}"
            )
        joint = np.clip(_rayleigh_joint(x, r), 0.0, None)
        joint = 0.5 * (joint + joint.T)  # symmetric in exact arithmetic (reversible chain)
        transition = joint / joint.sum(axis=1, keepdims=True)
        return cls(mean * cond_mean, transition, mean * x, stationary=prob / prob.sum())

    @classmethod
    def wang_moayeri(
        cls,
        mean_snr_linear: float,
        n_states: int,
        doppler_hz: float,
        slot_s: float,
        edges: str | ArrayLike = "equiprobable",
    ) -> FiniteStateMarkovChannel:
        """Wang & Moayeri (1995) FSMC: adjacent-state transitions from level-crossing rates.

        For Rayleigh SNR with mean ``g``, the rate of crossing level ``G`` is
        ``N(G) = sqrt(2 pi G / g) f_D exp(-G / g)``; with bin probability ``pi_k`` and
        thresholds ``G_k < G_{k+1}``:
        ``P(k, k+1) = N(G_{k+1}) T / pi_k``, ``P(k, k-1) = N(G_k) T / pi_k``,
        ``P(k, k) = 1 - P(k, k+1) - P(k, k-1)``. Valid when ``f_D T`` is small (each state
        lasts many slots); raises if a row would need a negative self-transition. By
        detailed balance the stationary law equals the bin probabilities.
        """
        mean = float(_check("mean_snr_linear", mean_snr_linear, lo=0.0, lo_open=True))
        n = _check_int("n_states", n_states, 1)
        fd = float(_check("doppler_hz", doppler_hz, lo=0.0))
        t = float(_check("slot_s", slot_s, lo=0.0, lo_open=True))
        x = _normalised_edges(n, edges, mean)
        prob, cond_mean = _exp_bin_stats(x)
        if np.any(prob <= 0):
            raise ValueError(
                f"edges={edges!r}: some bins have probability 0 at mean_snr_linear={mean:g}"
            )
        inner = x[1:-1]
        lcr = np.sqrt(2.0 * math.pi * inner) * fd * np.exp(-inner)  # crossings per second
        up = np.zeros(n)
        down = np.zeros(n)
        up[:-1] = lcr * t / prob[:-1]
        down[1:] = lcr * t / prob[1:]
        stay = 1.0 - up - down
        if np.any(stay < 0):
            raise ValueError(
                f"doppler_hz*slot_s={fd * t:g}: too large for the Wang-Moayeri approximation "
                f"with {n} states (a self-transition would be {stay.min():.3g} < 0)"
            )
        p = np.diag(stay) + np.diag(up[:-1], 1) + np.diag(down[1:], -1)
        return cls(mean * cond_mean, p, mean * x, stationary=prob / prob.sum())

    @classmethod
    def fit(
        cls, snr_samples: ArrayLike, edges: ArrayLike, *, smoothing: float = 1.0
    ) -> FiniteStateMarkovChannel:
        """Estimate an FSMC from SNR trajectories by counting bin-to-bin transitions.

        ``transition[i, j] = (C[i, j] + smoothing) / (sum_j C[i, j] + n * smoothing)``, where
        ``C`` counts consecutive pairs; the default ``smoothing = 1`` is add-one (Laplace)
        smoothing, which keeps every row a distribution even for unvisited states but biases
        each entry by ``O(n / C_i)``. With ``smoothing = 0`` an unvisited state gets a
        self-loop. ``snr_linear`` is the mean of the samples in each bin (the geometric
        midpoint of the bin edges, or the lowest edge times 2 for the top bin and half the
        first threshold for the bottom bin, when a bin has no sample).

        Args:
            snr_samples: linear SNR, shape ``(T,)`` or ``(T, n_links)`` (time first; links are
                independent trajectories).
            edges: interior thresholds in dB (leading -inf / trailing +inf accepted).
            smoothing: pseudo-count added to every entry (>= 0).
        """
        s = _check("snr_samples", snr_samples, lo=0.0)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] < 2:
            raise ValueError(
                f"snr_samples has shape {s.shape}: must be (T,) or (T, n_links) with T >= 2"
            )
        alpha = float(_check("smoothing", smoothing, lo=0.0))
        inner = _interior_thresholds_snr(edges)
        n = inner.size + 1
        states = np.searchsorted(inner, s, side="right")
        pair = states[:-1] * n + states[1:]
        counts = np.bincount(pair.ravel(), minlength=n * n).reshape(n, n).astype(float)
        counts += alpha
        rows = counts.sum(axis=1)
        empty = rows == 0
        counts[empty, :] = 0.0
        counts[empty, empty] = 1.0
        transition = counts / counts.sum(axis=1, keepdims=True)
        th = np.concatenate([[0.0], inner, [np.inf]])
        sums = np.bincount(states.ravel(), weights=s.ravel(), minlength=n)
        hits = np.bincount(states.ravel(), minlength=n)
        fallback = np.empty(n)
        if n > 1:
            fallback[1:-1] = np.sqrt(th[1:-2] * th[2:-1])
            fallback[0] = th[1] / 2.0
            fallback[-1] = th[-2] * 2.0
        else:
            fallback[0] = 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            rep = np.where(hits > 0, sums / np.maximum(hits, 1), fallback)
        return cls(rep, transition, th)

    @classmethod
    def from_matrix(
        cls,
        snr_linear: ArrayLike,
        transition: ArrayLike,
        thresholds_snr: ArrayLike | None = None,
    ) -> FiniteStateMarkovChannel:
        """FSMC from given per-state SNRs and transition matrix (validated).

        Without ``thresholds_snr``, ``snr_linear`` must be strictly increasing and the edges
        are placed at the geometric midpoints (midpoints in dB) of consecutive SNRs.
        """
        snr = _check("snr_linear", snr_linear, lo=0.0, lo_open=True)
        if thresholds_snr is None:
            if snr.ndim != 1 or np.any(np.diff(snr) <= 0):
                raise ValueError(
                    f"snr_linear={snr_linear!r}: must be strictly increasing and > 0 when "
                    "thresholds_snr is not given"
                )
            thresholds_snr = np.concatenate([[0.0], np.sqrt(snr[:-1] * snr[1:]), [np.inf]])
        return cls(snr, transition, thresholds_snr)

    # ---- use ----------------------------------------------------------------------------------
    @staticmethod
    def _solve_stationary(p: NDArray[np.float64]) -> NDArray[np.float64]:
        n = p.shape[0]
        a = np.vstack([p.T - np.eye(n), np.ones((1, n))])
        b = np.zeros(n + 1)
        b[-1] = 1.0
        pi, *_ = np.linalg.lstsq(a, b, rcond=None)
        pi = np.clip(pi, 0.0, None)
        return pi / pi.sum()

    def sample_initial(self, rng: np.random.Generator) -> int:
        """Draw a state from the stationary distribution."""
        return int(np.searchsorted(self._cum_pi, rng.random(), side="right"))

    def step(self, state: int | ArrayLike, rng: np.random.Generator) -> int | NDArray[np.intp]:
        """Next state(s) given ``state`` (an int, or an int array for many links)."""
        if isinstance(state, (int, np.integer)) and not isinstance(state, bool):
            if not 0 <= state < self.n_states:
                raise ValueError(f"state={state!r}: must be in [0, {self.n_states - 1}]")
            return int(np.searchsorted(self._cum[state], rng.random(), side="right"))
        st = np.asarray(state)
        if st.dtype.kind not in "iu" or st.size and (st.min() < 0 or st.max() >= self.n_states):
            raise ValueError(f"state={state!r}: must be integers in [0, {self.n_states - 1}]")
        u = rng.random(st.shape)
        return (u[..., None] >= self._cum[st]).sum(axis=-1).astype(np.intp)

    def step_uniform(self, state: NDArray[np.intp], u: NDArray[np.float64]) -> NDArray[np.intp]:
        """Next states of many links from their uniform draws ``u`` (same shape as ``state``,
        valid states; no argument checks): what :meth:`step` gives with the generator's
        ``random`` returning ``u``, found by one ``searchsorted``.

        Exact: ``Generator.random`` returns ``u = k 2**-53`` with an integer ``k``, so
        ``u >= c`` iff ``k >= ceil(c 2**53)``; each state's integer thresholds are offset by
        ``state (2**53 + 1)`` into one sorted array. Other ``u`` take :meth:`step`'s
        comparison.
        """
        u = np.asarray(u, dtype=np.float64)
        st = np.asarray(state)
        n = self.n_states
        x = u * _TWO53
        k = x.astype(np.int64)
        if n > 512 or not (k == x).all():
            return (u[..., None] >= self._cum[st]).sum(axis=-1).astype(np.intp)
        flat = self.__dict__.get("_flat_thresholds")
        if flat is None:
            offset = np.arange(n, dtype=np.int64)[:, None] * (_STRIDE53)
            flat = (np.ceil(self._cum * _TWO53).astype(np.int64) + offset).ravel()
            self._flat_thresholds = flat
        return (np.searchsorted(flat, st * _STRIDE53 + k, side="right") - st * n).astype(np.intp)

    def sample_path(
        self, rng: np.random.Generator, n_steps: int, state: int | None = None
    ) -> NDArray[np.intp]:
        """A trajectory of ``n_steps`` states (from ``state`` or a stationary draw)."""
        n_steps = _check_int("n_steps", n_steps, 1)
        s = self.sample_initial(rng) if state is None else state
        if not 0 <= s < self.n_states:
            raise ValueError(f"state={state!r}: must be in [0, {self.n_states - 1}]")
        u = rng.random(n_steps - 1)
        out = np.empty(n_steps, dtype=np.intp)
        out[0] = s
        cum = self._cum
        for t in range(1, n_steps):
            s = int(np.searchsorted(cum[s], u[t - 1], side="right"))
            out[t] = s
        return out

    def state_of(self, snr_linear: ArrayLike) -> NDArray[np.intp]:
        """Bin index of each SNR value (linear, >= 0)."""
        s = _check("snr_linear", snr_linear, lo=0.0, finite=False)
        return np.asarray(np.searchsorted(self.thresholds_snr[1:-1], s, side="right"))

    def rates_bps(self, bandwidth_hz: float) -> NDArray[np.float64]:
        """Shannon rate of each state's representative SNR over ``bandwidth_hz``."""
        return np.asarray(shannon_rate_bps(bandwidth_hz, self.snr_linear), dtype=float)

    def __repr__(self) -> str:
        return (
            f"FiniteStateMarkovChannel(n_states={self.n_states}, "
            f"snr_db={np.round(10 * np.log10(self.snr_linear), 2).tolist()})"
        )


FSMC = FiniteStateMarkovChannel


# --------------------------------------------------------------------------------------------
# Link adaptation
# --------------------------------------------------------------------------------------------
# Spectral efficiency bounds of link adaptation: 3GPP TS 38.214 Table 5.2.2.1-2 (64QAM CQI
# table), CQI 1 (QPSK, 0.1523 bit/s/Hz) to CQI 15 (64QAM, 5.5547 bit/s/Hz).
CQI1_SPECTRAL_EFFICIENCY = 0.1523  # [bit/s/Hz]
CQI15_SPECTRAL_EFFICIENCY = 5.5547  # [bit/s/Hz]


def link_rate_bps(
    bandwidth_hz: Any,
    snr_linear: Any,
    min_spectral_efficiency: Any = CQI1_SPECTRAL_EFFICIENCY,
    max_spectral_efficiency: Any = CQI15_SPECTRAL_EFFICIENCY,
) -> Any:
    """Shannon rate over ``bandwidth_hz`` with the spectral efficiency held within the MCS
    range of link adaptation [bit/s]: a deep fade is sent at the lowest MCS (with HARQ), not
    at the vanishing Shannon rate, and a strong channel saturates at the top MCS.

    Unchecked arithmetic on scalars or numpy arrays (it runs in env steps and DPs);
    validate the bounds where they are configured (:class:`UplinkChannelConfig`).
    """
    eff = np.clip(np.log2(1.0 + snr_linear), min_spectral_efficiency, max_spectral_efficiency)
    return bandwidth_hz * eff


# --------------------------------------------------------------------------------------------
# Uplink channel of an env: flat config fields, one builder, one path sampler
# --------------------------------------------------------------------------------------------
CHANNEL_MODES = ("fsmc", "gauss_markov")
UPLINK_PATH_LOSS_MODELS = (
    "38901_uma_nlos",
    "38901_uma_los",
    "38901_umi_nlos",
    "38901_umi_los",
    "36814_macro",
)
FSMC_RATES = ("airtime", "bin_mean_snr")
_AIRTIME_NODES = 2048  # midpoints per bin (in probability) for the harmonic-mean rate
RICIAN_FIT_SLOTS = 200_000  # length of the fixed-seed trace an FSMC is fitted on (Rician)


@dataclasses.dataclass(frozen=True)
class UplinkChannelConfig(EnvConfig):
    """Flat uplink-channel fields shared by every env config that needs a radio link.

    An env config inherits them (``class XConfig(UplinkChannelConfig)``) and calls
    :meth:`validate_uplink` from its ``validate``; :func:`build_uplink` turns them into the
    channel process. An env may re-declare a field to change its default.
    """

    channel: str = "fsmc"  # "fsmc" (exact Markov chain) or "gauss_markov" (continuous)
    fsmc_states: int = 8  # SNR bins of the FSMC (equiprobable, exact transitions)
    dp_channel_states: int = 8  # bins of the FSMC fitted for the DP in gauss_markov mode
    bandwidth_hz: float = 1.0e6  # ~5 LTE/NR PRBs at 15 kHz SCS (5 x 180 kHz)
    tx_power_w: float = 0.2  # 23 dBm, 3GPP UE power class 3
    # A user near the edge of a 3GPP TR 38.901 urban-macro cell (ISD 500 m: cell radius
    # 289 m), NLOS at 3.5 GHz: mean SNR 9.8 dB over 1 MHz at 23 dBm (EarlyExitUpload-v0 put
    # its user at 600 m with TR 36.814's 2 GHz formula, mean SNR ~8 dB).
    distance_m: float = 250.0
    noise_density_dbm_per_hz: float = -174.0  # thermal noise (REFERENCE.md 5)
    noise_figure_db: float = 9.0  # REFERENCE.md 5: 7-9 dB
    speed_mps: float = 0.8333  # 3 km/h pedestrian (3GPP TR 38.901 indoor/pedestrian UE)
    carrier_hz: float = 3.5e9  # NR band n78
    # Large-scale path loss at carrier_hz: 3GPP TR 38.901 UMa/UMi, LOS/NLOS (validity 10 m -
    # 5 km, 0.5-100 GHz), or TR 36.814's 2 GHz macro formula ("36814_macro", carrier ignored).
    path_loss_model: str = "38901_uma_nlos"
    k_factor: float = 0.0  # Rician K (0 = Rayleigh), gauss_markov mode only
    # Rate of an FSMC state: "airtime" = harmonic mean of the link-adapted rate over the bin
    # (a payload's expected airtime in the bin is exact); "bin_mean_snr" = the rate at the
    # bin's mean SNR (optimistic in deep fades; EarlyExitUpload-v0's choice).
    fsmc_rate: str = "airtime"
    # Link adaptation bounds on log2(1 + SNR): 3GPP TS 38.214 Table 5.2.2.1-2 (64QAM CQI
    # table), CQI 1 (QPSK, 0.1523 bit/s/Hz) to CQI 15 (64QAM, 5.5547 bit/s/Hz).
    min_spectral_efficiency_bps_per_hz: float = CQI1_SPECTRAL_EFFICIENCY
    max_spectral_efficiency_bps_per_hz: float = CQI15_SPECTRAL_EFFICIENCY

    def validate_uplink(self) -> None:
        """Check the uplink fields (raises :class:`ConfigError` naming the field)."""
        self._check_choice("channel", CHANNEL_MODES)
        self._check_range("fsmc_states", 1, 64, integer=True)
        self._check_range("dp_channel_states", 1, 64, integer=True)
        # Physical ranges, so that every accepted config has a finite SNR and rate.
        self._check_range("bandwidth_hz", 1e3, 1e9)  # 1 kHz (NB-IoT tone) .. 1 GHz
        self._check_range("tx_power_w", 0.0, 10.0, lo_open=True)  # UE class 1: 31 dBm
        self._check_range("distance_m", 1.0, 1e5)
        self._check_range("carrier_hz", 1e8, 3e11)  # 100 MHz .. 300 GHz
        self._check_range("noise_density_dbm_per_hz", -220.0, -100.0)
        self._check_range("noise_figure_db", 0.0, 30.0)
        self._check_range("speed_mps", 0.0, 150.0)
        self._check_range("k_factor", 0.0, 1000.0)
        self._check_choice("path_loss_model", UPLINK_PATH_LOSS_MODELS)
        if self.path_loss_model.startswith("38901_"):
            self._check_range("distance_m", *TR38901_DISTANCE_RANGE_M)
            self._check_range("carrier_hz", *TR38901_CARRIER_RANGE_HZ)
        self._check_choice("fsmc_rate", FSMC_RATES)
        self._check_range("min_spectral_efficiency_bps_per_hz", 0.0, 30.0, lo_open=True)
        self._check_range(
            "max_spectral_efficiency_bps_per_hz", self.min_spectral_efficiency_bps_per_hz, 30.0
        )

    def validate(self) -> None:
        self.validate_uplink()


class UplinkChannel:
    """The channel process of one config, slotted at ``slot_s`` (built by :func:`build_uplink`).

    Attributes:
        mode: ``"fsmc"`` or ``"gauss_markov"``.
        mean_snr: fading-averaged SNR (linear).
        doppler_hz: maximum Doppler shift [Hz].
        rho: Jakes slot-to-slot correlation of the complex gain.
        fsmc: the Markov chain (the true process in ``fsmc`` mode; in ``gauss_markov`` mode
            the chain fitted to it, with ``dp_channel_states`` bins, for oracles).
        state_rate_bps: link rate of each FSMC state.
    """

    def __init__(self, cfg: UplinkChannelConfig, slot_s: float) -> None:
        self.cfg = cfg
        self.mode = cfg.channel
        self.slot_s = float(slot_s)
        self.mean_snr = float(
            mean_snr_linear(
                cfg.tx_power_w,
                cfg.distance_m,
                cfg.bandwidth_hz,
                noise_density_dbm_per_hz=cfg.noise_density_dbm_per_hz,
                noise_figure_db=cfg.noise_figure_db,
                path_loss_model=cfg.path_loss_model,
                carrier_hz=cfg.carrier_hz,
            )
        )
        self.doppler_hz = float(doppler_hz(cfg.speed_mps, cfg.carrier_hz))
        self.rho = float(jakes_correlation(self.doppler_hz, self.slot_s))
        samples = None
        if cfg.channel == "fsmc":
            self.fsmc = FSMC.rayleigh(self.mean_snr, cfg.fsmc_states, self.rho)
        elif cfg.k_factor == 0.0:
            self.fsmc = FSMC.rayleigh(self.mean_snr, cfg.dp_channel_states, self.rho)
        else:
            # Rician: fit bins and transitions on a long simulated trace (fixed seed, so the
            # fitted chain is a deterministic function of the config).
            n = cfg.dp_channel_states
            rng = np.random.default_rng(0)
            static = self.rho == 1.0  # a user at rest: the gain never changes
            fad = GaussMarkovFading(0.0 if static else self.rho, k_factor=cfg.k_factor)
            snr = self.mean_snr * fad.simulate(rng, RICIAN_FIT_SLOTS)[:, 0]
            edges = np.quantile(snr, np.linspace(0, 1, n + 1)[1:-1])
            fit = FSMC.fit(snr, 10 * np.log10(edges))
            if static:  # bins of the stationary law (i.i.d. draws); the chain stays put
                fit = FSMC(fit.snr_linear, np.eye(n), fit.thresholds_snr, np.full(n, 1.0 / n))
            self.fsmc = fit
            samples = snr
        if cfg.fsmc_rate == "bin_mean_snr":
            self.state_rate_bps = np.asarray(self.rate_bps(self.fsmc.snr_linear), float)
        elif samples is None:
            self.state_rate_bps = self._rayleigh_airtime_rates()
        else:
            states = self.fsmc.state_of(samples)
            inv = np.bincount(states, 1.0 / self.rate_bps(samples), self.fsmc.n_states)
            hits = np.bincount(states, minlength=self.fsmc.n_states)
            fallback = np.asarray(self.rate_bps(self.fsmc.snr_linear), float)
            with np.errstate(divide="ignore", invalid="ignore"):
                self.state_rate_bps = np.where(hits > 0, hits / inv, fallback)

    def _rayleigh_airtime_rates(self) -> NDArray[np.float64]:
        """Per bin, ``1 / E[1 / rate(SNR) | bin]`` for Rayleigh SNR (``Exp`` with the mean
        SNR): the rate that gives a payload its exact expected airtime in the bin. Midpoint
        rule in probability (``u = 1 - e^{-x}``) with 2048 nodes per bin; the integrand is
        bounded by the link-adaptation limits."""
        x = self.fsmc.thresholds_snr / self.mean_snr
        u_lo = -np.expm1(-x[:-1])
        u_hi = -np.expm1(-x[1:])
        t = (np.arange(_AIRTIME_NODES) + 0.5) / _AIRTIME_NODES
        u = u_lo[:, None] + (u_hi - u_lo)[:, None] * t[None, :]
        snr = -np.log1p(-u) * self.mean_snr
        return 1.0 / np.mean(1.0 / self.rate_bps(snr), axis=1)

    def rate_bps(self, snr_linear: Any) -> Any:
        """Link-adapted rate of ``snr_linear`` (see :func:`link_rate_bps`)."""
        cfg = self.cfg
        return link_rate_bps(
            cfg.bandwidth_hz,
            snr_linear,
            cfg.min_spectral_efficiency_bps_per_hz,
            cfg.max_spectral_efficiency_bps_per_hz,
        )

    def sample_path(
        self, rng: np.random.Generator, n_slots: int
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
        """SNR (linear), FSMC state and link rate of ``n_slots`` consecutive slots.

        In ``fsmc`` mode the state path is the chain's (stationary start) and the SNR and rate
        are the state's; in ``gauss_markov`` mode the SNR is the continuous process, the state
        its bin in the fitted chain and the rate that of the SNR itself.
        """
        if self.mode == "fsmc":
            states = self.fsmc.sample_path(rng, n_slots).astype(np.int64)
            return self.fsmc.snr_linear[states], states, self.state_rate_bps[states]
        fad = GaussMarkovFading(self.rho, k_factor=self.cfg.k_factor)
        snr = self.mean_snr * fad.simulate(rng, n_slots)[:, 0]
        states = np.asarray(self.fsmc.state_of(snr), dtype=np.int64)
        return snr, states, np.asarray(self.rate_bps(snr), float)


def build_uplink(cfg: UplinkChannelConfig, slot_s: float) -> UplinkChannel:
    """The channel process of ``cfg`` with one block (slot) of ``slot_s`` seconds."""
    return UplinkChannel(cfg, slot_s)
