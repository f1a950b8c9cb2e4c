"""Round-cost model of split / split-federated / federated LoRA fine-tuning over a shared band.

Numpy only. Used by ``SplitFedAlloc-v0``, its baselines and its oracles (one copy of every
formula). Costs come from the shared domain core: training-step FLOPs, bytes and device
memory from :mod:`mei_envs.llm.costs`, roofline times from
:func:`mei_envs.hardware.time_train_step`, link rates from :func:`mei_envs.wireless.link_rate_bps`
and transmit energy from :mod:`mei_envs.radio`.

**One round** (``N`` devices, cut ``c``, LoRA rank ``r``, bandwidth shares ``beta``):

* ``sfl`` (parallel split-federated learning, SplitFed/EPSL style): device ``i`` trains blocks
  ``[0, c)`` forward and backward on its batch (``b`` sequences of ``s`` tokens), uploads the
  smashed data ``b*s*h*bytes`` at its uplink rate for bandwidth ``beta_i * W_up``, the server
  runs blocks ``[c, L)`` and the LM head forward and backward and returns the cut layer's
  gradient (same size) over ``beta_i * W_down``. **Server compute-sharing rule**: the
  server's compute is shared equally among the ``N`` devices' jobs (processor sharing with
  equal weights), so each device's server part takes ``N`` times its stand-alone roofline
  time. Device ``i``'s time is the chain
  ``T_i = t_dev_i + up_i / R_up_i(beta_i) + N t_srv + down_i / R_down_i(beta_i)`` and the
  round takes ``max_i T_i`` (the slowest device is the straggler). Every ``I`` rounds each
  device also uploads its device-side adapters and downloads their FedAvg average (unicast,
  same shares). The server-side adapters are one shared copy updated every round.
* ``sl`` (sequential split learning): devices take turns, each with the whole band and the
  whole server; the device-side adapters are relayed from one device to the next (upload
  and download every turn; no averaging, no drift). The round is the sum of the turns.
* ``fl`` (federated LoRA): every device holds the whole model (cut ``L``), no smashed data;
  adapters are exchanged every ``I`` rounds.

``c = L`` in ``sfl`` is federated learning too. Uplink rates: ``link_rate_bps(B, p g / (B N0
NF))`` with the device's transmit power ``p`` spread over its band ``B`` (concave,
increasing in ``B``); downlink at the base station's power spectral density (SNR independent
of ``B``, so the rate is linear in ``B``). Memory: a cut is feasible for a device iff
:func:`mei_envs.llm.costs.device_memory_bytes` (LoRA mode) fits in its usable memory.

Everything that depends on the round's numbers broadcasts: leading axes for candidate
(cut, rank) pairs, the last axis for devices.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import sys
from typing import Any, NamedTuple

import numpy as np

from mei_envs import radio, wireless

__all__ = [
    "ARRAY_OPS",
    "FLOAT_OPS",
    "Band",
    "advance_loss",
    "advance_loss_float",
    "chain_times",
    "device_energy_j",
    "device_round_times",
    "link_rates",
    "minmax_shares",
    "minmax_shares_float",
    "pairwise_sum",
    "proportional_shares",
    "round_costs_devices",
    "round_costs_float",
    "spectral_efficiency",
]

_TINY = 1e-300
_INF = math.inf


class Band(NamedTuple):
    """The shared band: total uplink and downlink bandwidth [Hz] and the spectral-efficiency
    range of link adaptation [bit/s/Hz] (:func:`mei_envs.wireless.link_rate_bps`)."""

    w_up_hz: float
    w_down_hz: float
    min_se: float
    max_se: float


# ---- one copy of every per-device formula, on floats or on arrays ---------------------------
# The formulas below use arithmetic operators and the few functions of an ``ops`` backend:
# ``FLOAT_OPS`` (math on Python floats: the single env's loss update and proportional split)
# or ``ARRAY_OPS`` (numpy ufuncs: the vector env, the oracle, the tests). Both give the same
# bits (libm's log2/exp/pow on this platform; the pinned trajectories check it). The single
# env's two hottest paths have written-out float twins, tested bit for bit against the array
# functions (tests/test_split_fed_fast_paths.py): round_costs_float (chain_times +
# device_energy_j, ~4x cheaper than calling them through FLOAT_OPS) and minmax_shares_float.
class _FloatOps:
    log2 = staticmethod(math.log2)
    log10 = staticmethod(math.log10)
    exp = staticmethod(math.exp)
    maximum = staticmethod(max)
    minimum = staticmethod(min)

    @staticmethod
    def airtime(bits: float, rate: float) -> float:
        """``bits / rate`` (``inf`` at rate 0), 0 with nothing to send."""
        if bits > 0:
            return bits / rate if rate > 0 else _INF
        return 0.0

    @staticmethod
    def recip(x: float) -> float:
        """``1 / x`` with ``inf`` at 0 (``x >= 0``)."""
        return 1.0 / x if x > 0 else _INF

    @staticmethod
    def where(cond: bool, a: float, b: float) -> float:
        return a if cond else b


class _ArrayOps:
    log2 = staticmethod(np.log2)
    log10 = staticmethod(np.log10)
    exp = staticmethod(np.exp)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    where = staticmethod(np.where)

    @staticmethod
    def airtime(bits: Any, rate: Any) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = bits / rate
            send = bits > 0
            return t if np.all(send) else np.where(send, t, 0.0)

    @staticmethod
    def recip(x: Any) -> Any:
        with np.errstate(divide="ignore"):
            return 1.0 / x


FLOAT_OPS = _FloatOps()
ARRAY_OPS = _ArrayOps()


# Builtin sum adds floats in sequence, in C, up to Python 3.11 (from 3.12 it compensates
# the rounding, Neumaier's sum, so pairwise_sum loops there)
_SEQUENTIAL_BUILTIN_SUM = sys.version_info < (3, 12)


def pairwise_sum(values: list[float]) -> float:
    """Sum of a list of floats in numpy's order for a contiguous float64 ``sum`` (pairwise:
    sequential below 8 terms, eight interleaved partial sums up to 128 terms, halves above),
    so the float and array paths agree bit for bit."""
    n = len(values)
    if n < 8:
        if _SEQUENTIAL_BUILTIN_SUM:
            return sum(values, -0.0)
        acc = -0.0
        for v in values:
            acc += v
        return acc
    if n > 128:
        half = n // 2
        half -= half % 8
        return pairwise_sum(values[:half]) + pairwise_sum(values[half:])
    r = values[:8]
    i = 8
    stop = n - n % 8
    while i < stop:
        for q in range(8):
            r[q] += values[i + q]
        i += 8
    acc = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        acc += values[i]
        i += 1
    return acc


def link_rates(
    shares: Any,
    gamma_up_hz: Any,
    snr_down: Any,
    band: Band,
    ops: Any = ARRAY_OPS,
    down_eff: Any = None,
):
    """Uplink and downlink rates [bit/s] of ``shares`` of the two bands.

    ``gamma_up_hz = p g / (N0 NF)`` is the uplink SNR-bandwidth product (SNR over ``B`` Hz is
    ``gamma / B``: the device's power is spread over its band); ``snr_down`` is the downlink
    SNR (constant power spectral density), or pass its ``down_eff =
    spectral_efficiency(snr_down)`` (it does not depend on the share; the env tabulates it
    with the channel state). Rates are :func:`mei_envs.wireless.link_rate_bps`.
    """
    b_up = shares * band.w_up_hz
    eff_up = spectral_efficiency(gamma_up_hz / ops.maximum(b_up, _TINY), band, ops)
    if down_eff is None:
        down_eff = spectral_efficiency(snr_down, band, ops)
    return b_up * eff_up, (shares * band.w_down_hz) * down_eff


def spectral_efficiency(snr: Any, band: Band, ops: Any = ARRAY_OPS) -> Any:
    """Shannon efficiency held within the link-adaptation range [bit/s/Hz]
    (:func:`mei_envs.wireless.link_rate_bps` over one hertz)."""
    return ops.minimum(ops.maximum(ops.log2(1.0 + snr), band.min_se), band.max_se)


def chain_times(
    shares: Any,
    base_s: Any,
    up_bits: Any,
    down_bits: Any,
    gamma_up_hz: Any,
    snr_down: Any,
    band: Band,
    ops: Any = ARRAY_OPS,
    down_eff: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Per-device chain times ``T_i = base_i + up_i / R_up_i + down_i / R_down_i`` [s]
    (``down_eff``: see :func:`link_rates`).

    Returns ``(T, uplink airtime, downlink airtime, uplink rate)``; a device with bits to
    send and a zero share gets ``inf``.
    """
    r_up, r_down = link_rates(shares, gamma_up_hz, snr_down, band, ops, down_eff)
    t_up = ops.airtime(up_bits, r_up)
    t_down = ops.airtime(down_bits, r_down)
    return base_s + t_up + t_down, t_up, t_down, r_up


def device_energy_j(
    radio_params: Any,
    round_s: Any,
    t_dev: Any,
    t_up: Any,
    r_up: Any,
    active_w: Any,
    idle_w: Any,
    ops: Any = ARRAY_OPS,
) -> Any:
    """Energy of a device in a round [J]: compute at active power, uplink transmit energy
    (:func:`mei_envs.radio.transmit_energy_j`), idle power the rest of the round."""
    tx = radio.transmit_energy_j(radio_params, r_up, t_up)
    idle_s = ops.maximum(round_s - t_dev - t_up, 0.0)
    return active_w * t_dev + tx + idle_w * idle_s


def device_round_times(shares: Any, *terms: Any, band: Band) -> tuple[Any, Any, Any]:
    """:func:`chain_times` on arrays (``terms = base_s, up_bits, down_bits, gamma_up_hz,
    snr_down``): ``(T, uplink airtime, downlink airtime)``."""
    t, t_up, t_down, _ = chain_times(np.asarray(shares, float), *terms, band, ARRAY_OPS)
    return t, t_up, t_down


def round_costs_float(
    shares: Any,
    types: list[int],
    base_s: list[float],
    t_dev_s: list[float],
    bits: float,
    gamma_up_hz: list[float],
    down_eff: list[float],
    active_w: list[float],
    idle_w: list[float],
    band: Band,
    radio_params: Any,
    sequential: bool,
) -> tuple[float, list[float], list[float], list[float]]:
    """One round on Python floats: the scalar twin of :func:`chain_times` and
    :func:`device_energy_j` (with :func:`mei_envs.radio.transmit_energy_j`), written out for
    the single env's hot path (a call per formula and per ``ops`` function cost ~4x more).

    The same operations in the same order as the ``ops`` functions on ``FLOAT_OPS`` (builtin
    ``max``/``min`` semantics: ``max(a, b) = b if b > a else a``), so the results are the
    same bits; ``tests/test_split_fed_fast_paths.py`` checks it against the array functions,
    the pinned trajectories check the env.

    Args:
        shares: per-device bandwidth shares (a list) or one float for all (the equal split;
            ``sequential`` rounds give every turn the whole band and ignore it).
        types: device type of each device; ``base_s``, ``t_dev_s``, ``active_w`` and
            ``idle_w`` are per device type (base time, device compute time [s], powers [W]).
        bits: bits each device sends up and receives down this round.
        gamma_up_hz: per-device uplink SNR-bandwidth products (:func:`link_rates`).
        down_eff: per-device downlink spectral efficiency, ``spectral_efficiency(snr_down)``
            (independent of the share: the env tabulates it with the channel state).
        sequential: ``sl``: the round is the sum of the turns (else the slowest device).

    Returns:
        ``(round_s, per-device T_i, uplink airtimes, energies [J])``.
    """
    # each per-device sequence is read once, in order: lazy maps, no lists
    t_dev = t_dev_s.__getitem__
    return round_costs_devices(
        shares,
        map(base_s.__getitem__, types),
        map(t_dev, types),
        map(operator.mul, map(active_w.__getitem__, types), map(t_dev, types)),
        map(idle_w.__getitem__, types),
        bits,
        gamma_up_hz,
        down_eff,
        band,
        radio_params,
        sequential,
    )


def round_costs_devices(
    shares: Any,
    base_s: list[float],
    t_dev_s: list[float],
    compute_j: list[float],
    idle_w: list[float],
    bits: float,
    gamma_up_hz: list[float],
    down_eff: list[float],
    band: Band,
    radio_params: Any,
    sequential: bool,
) -> tuple[float, list[float], list[float], list[float]]:
    """:func:`round_costs_float` with the per-type constants gathered per device: base time,
    device compute time [s], compute energy ``active_w * t_dev_s`` [J] (the same product) and
    idle power [W] of each device (the single env gathers them once per episode and (cut,
    rank), not every round). Each of these four is iterated once, in device order (an
    iterator will do)."""
    w_up, w_down, lo, hi = band
    alpha, beta = radio_params.alpha_u_w_per_mbps, radio_params.beta_w
    log2, inf, tiny = math.log2, _INF, _TINY
    send = bits > 0
    if sequential or type(shares) is float:
        shares = itertools.repeat(1.0 if sequential else shares)
    t_i: list[float] = []
    t_ups: list[float] = []
    # each device's compute and transmit energy, the first two terms of its energy sum
    # (added in the order of device_energy_j: compute, transmit, then idle)
    part: list[float] = []
    # zip without strict= (parsing the keyword costs as much as a device's arithmetic);
    # shares may be an endless repeat, the other lists have one entry per device
    for s, base, e_dev, g, eff_d in zip(shares, base_s, compute_j, gamma_up_hz, down_eff):  # noqa: B905
        b_up = s * w_up
        eff = log2(1.0 + g / (tiny if tiny > b_up else b_up))
        eff = lo if lo > eff else eff
        r_up = b_up * (hi if hi < eff else eff)
        r_down = (s * w_down) * eff_d
        if send:
            t_up = bits / r_up if r_up > 0 else inf
            t_down = bits / r_down if r_down > 0 else inf
        else:
            t_up = t_down = 0.0
        t_i.append(base + t_up + t_down)
        t_ups.append(t_up)
        part.append(e_dev + (alpha * r_up * 1e-6 + beta) * t_up)
    round_s = pairwise_sum(t_i) if sequential else max(t_i)
    energy = [
        e + idle * (0.0 if 0.0 > (idle_s := round_s - t_dev - t_up) else idle_s)
        for e, idle, t_dev, t_up in zip(part, idle_w, t_dev_s, t_ups)  # noqa: B905 (equal lengths)
    ]
    return round_s, t_i, t_ups, energy


_LN2 = float(np.log(2.0))


def minmax_shares(
    *terms: Any, band: Band, rtol: float = 1e-12, max_iter: int = 200
) -> tuple[Any, Any]:
    """Bandwidth shares minimising ``max_i T_i`` (sum of shares 1), and that round time, of
    ``terms = (base_s, up_bits, down_bits, gamma_up_hz, snr_down)`` (:func:`chain_times`).

    Exact up to ``rtol``: every ``T_i`` is decreasing in its share, so the optimum has all
    devices that send finish together at ``T*``, the least ``T`` with
    ``sum_i beta_i(T) <= 1``, where ``beta_i(T)`` is the share device ``i`` needs to finish by
    ``T``. The outer solve is a safeguarded Newton iteration on ``T`` (bracketed between the
    largest compute time, infeasible, and the equal split's round time, feasible); the
    inner solve ``beta_i(T)`` is a safeguarded Newton iteration on ``x = 1 / beta`` (``T_i``
    is increasing in ``x``), both falling back to bisection whenever a step leaves its
    bracket. Devices with nothing to send get share 0. Leading axes broadcast (one problem
    per leading index; the last axis is the devices): each problem stops changing once it
    has converged, so a batch of problems gives each problem's own solve bit for bit (the
    vector env and the oracle solve many at once).

    Returns:
        ``(round_time_s, shares)`` with shapes ``(...)`` and ``(..., N)``.
    """
    if len(terms) != 5:
        raise TypeError(
            f"minmax_shares takes 5 terms (base_s, up_bits, down_bits, gamma_up_hz, snr_down), "
            f"got {len(terms)}"
        )
    arrays = [np.asarray(v, float) for v in terms]
    if all(v.ndim <= 1 for v in arrays) and any(v.ndim == 1 for v in arrays):
        # one problem: the same solve on Python floats (same bits, ~20x cheaper)
        lists = [v.tolist() for v in np.broadcast_arrays(*arrays)]
        rt, shares = minmax_shares_float(*lists, band=band, rtol=rtol, max_iter=max_iter)
        return np.asarray(rt), np.array(shares)
    with np.errstate(all="ignore"):
        return _minmax(tuple(arrays), band, rtol, max_iter)


def minmax_shares_float(
    base_s: list[float],
    up_bits: list[float],
    down_bits: list[float],
    gamma_up_hz: list[float],
    snr_down: list[float],
    band: Band,
    rtol: float = 1e-12,
    max_iter: int = 200,
) -> tuple[float, list[float]]:
    """:func:`minmax_shares` of one problem on Python floats (per-device lists): the same
    iterations with the same operations in the same order, so the same bits (~20x cheaper
    than numpy on a handful of devices; ``tests/test_split_fed_fast_paths.py`` checks it
    against the array solve on random problems). Sums follow numpy's order
    (:func:`pairwise_sum`). Problems the float arithmetic cannot follow exactly (a
    non-finite input, or a division by zero where numpy would give ``inf``/``nan``) are
    handed to the array solve.

    Returns:
        ``(round_time_s, shares)``.
    """
    n = len(base_s)
    try:
        if all(map(math.isfinite, (*base_s, *up_bits, *down_bits, *gamma_up_hz, *snr_down))):
            return _minmax_float(
                base_s, up_bits, down_bits, gamma_up_hz, snr_down, band, rtol, max_iter
            )
    except (ZeroDivisionError, OverflowError, ValueError):
        pass
    with np.errstate(all="ignore"):
        terms = tuple(np.asarray(v, float).reshape(n) for v in (base_s, up_bits, down_bits))
        terms += (np.asarray(gamma_up_hz, float), np.asarray(snr_down, float))
        rt, shares = _minmax(terms, band, rtol, max_iter)
    return float(rt), shares.tolist()


def _minmax_float(
    base: list[float],
    up: list[float],
    down: list[float],
    gam: list[float],
    snr_d: list[float],
    band: Band,
    rtol: float,
    max_iter: int,
) -> tuple[float, list[float]]:
    """:func:`_minmax` of one problem, element by element (see :func:`minmax_shares_float`).

    Only the devices that send and can finish by the trial time (``ok``) take part in the
    inner iteration: numpy's values of the others never reach the result (their share is 0,
    or the trial time is infeasible and only the bracket moves)."""
    lo, hi = float(band.min_se), float(band.max_se)
    log2, sqrt, isfinite, inf, ln2 = math.log2, math.sqrt, math.isfinite, _INF, _LN2
    n = len(base)
    idx = range(n)
    sends = [up[i] > 0 or down[i] > 0 for i in idx]
    n_send = sum(sends)
    any_send = n_send > 0
    w_up, w_down = band.w_up_hz, band.w_down_hz
    a = [v / w_up for v in up]
    g = [v / w_up for v in gam]
    cd = []
    for i in idx:
        e = log2(1.0 + snr_d[i])
        e = lo if lo > e else e  # np.maximum / np.minimum on finite values
        cd.append(down[i] / (w_down * (hi if hi < e else e)))

    def ev(i: int, x: float) -> tuple[float, float]:
        """_ev of device i at x."""
        k = g[i] * x
        raw = log2(1.0 + k)
        eff = lo if lo > raw else raw
        eff = hi if hi < eff else eff
        xde = (1.0 if lo < raw < hi else 0.0) * (k / ((1.0 + k) * ln2))
        ai, ci = a[i], cd[i]
        return base[i] + (ai * x) / eff + ci * x, ai * (eff - xde) / (eff * eff) + ci

    t_one = [ev(i, 1.0)[0] for i in idx]
    x_eq = [float(max(n_send, 1)) if sends[i] else 1.0 for i in idx]
    if any_send:
        t_hi = max(ev(i, x_eq[i])[0] for i in idx if sends[i])
        t_lo = max(base[i] for i in idx if sends[i])
    else:
        t_hi = t_lo = 0.0
    senders = [i for i in idx if sends[i]]

    def run(
        i: int,
        t: float,
        tol: float,
        x: float,
        f: float,
        d: float,
        xh: float,
        limit: int,
        check: bool,
    ) -> tuple[float, float, float, float, int]:
        """Up to ``limit`` safeguarded Newton steps of device i's ``x_i(t)`` from the
        bracket ``[x, xh]`` (``f = T_i(x)``, ``d = dT_i/dx``), stopping where ``t - f <= tol``
        if ``check``; the new ``(x, f, d, xh)`` and the steps taken."""
        ai, gi, ci, bi = a[i], g[i], cd[i], base[i]
        steps = 0
        while steps < limit:
            if check and t - f <= tol:
                break
            x_new = x + (t - f) / d
            if x_new >= xh or x_new <= x or not isfinite(x_new):
                x_new = sqrt(x * xh) if isfinite(xh) else 2.0 * x
            k = gi * x_new  # _ev at x_new, inline
            raw = log2(1.0 + k)
            eff = lo if lo > raw else raw
            eff = hi if hi < eff else eff
            f_new = bi + (ai * x_new) / eff + ci * x_new
            if f_new <= t:
                xde = (1.0 if lo < raw < hi else 0.0) * (k / ((1.0 + k) * ln2))
                x, f, d = x_new, f_new, ai * (eff - xde) / (eff * eff) + ci
            else:
                xh = x_new
            steps += 1
        return x, f, d, xh, steps

    def need(t: float, x0: list[float]) -> tuple[dict[int, float], dict[int, float], bool]:
        """x_i(t) and dT_i/dx there of the devices that can finish by t, and whether every
        sending device can.

        The array solve steps all devices together until every one has converged (and
        keeps stepping the converged ones meanwhile); a device's steps do not depend on
        the others', and once converged it stays so (``T_i(x_lo)`` only grows), so each
        device here runs to its own convergence, then on to the slowest one's step count."""
        ok = [i for i in senders if t_one[i] <= t]
        tol = rtol * t
        state = {}
        for i in ok:
            x = x0[i]
            x = 1.0 if 1.0 > x else x
            f, d = ev(i, x)
            if f > t:  # a warm start beyond the root: restart from the whole band
                x = 1.0
                f, d = ev(i, x)
            state[i] = run(i, t, tol, x, f, d, inf, max_iter, True)
        most = max((st[4] for st in state.values()), default=0)
        x_lo, d_lo = {}, {}
        for i, (x, f, d, xh, steps) in state.items():
            if steps < most:
                x, f, d, _, _ = run(i, t, tol, x, f, d, xh, most - steps, False)
            x_lo[i], d_lo[i] = x, d
        return x_lo, d_lo, len(ok) == len(senders)

    t = t_hi
    lo_b, hi_b = t_lo, t_hi
    x_warm = [1.0] * n
    best_x = x_eq[:]
    zeros = [0.0] * n
    for _ in range(max_iter):
        x, dx, reach = need(t, x_warm)
        if reach:
            beta = zeros[:]
            for i in senders:
                beta[i] = 1.0 / x[i]
            g_t = pairwise_sum(beta) - 1.0
        else:
            g_t = inf
        feas = g_t <= 0.0
        if feas:
            hi_b = t
            for i in senders:
                best_x[i] = x[i]
        else:
            lo_b = t
        if hi_b - lo_b <= rtol * hi_b or (feas and g_t >= -rtol) or not any_send:
            break
        # d beta / dT = -1 / (x^2 dT/dx)
        terms = zeros[:]
        for i in x:
            terms[i] = -1.0 / (x[i] * x[i] * dx[i])
        dg = pairwise_sum(terms)
        t_new = t - g_t / dg if dg != 0.0 else inf
        if not isfinite(t_new) or t_new <= lo_b or t_new >= hi_b:
            t_new = 0.5 * (lo_b + hi_b)
        if feas:
            for i in senders:
                x_warm[i] = x[i]
        t = t_new
    shares = [1.0 / best_x[i] if sends[i] else 0.0 for i in idx]
    if any_send:
        total = pairwise_sum(shares)
        total = total if total > 0 else 1.0
        shares = [s / total for s in shares]
    else:
        shares = [1.0 / n] * n
    times = []
    for i in idx:
        s = shares[i]
        if sends[i]:
            times.append(ev(i, 1.0 / (_TINY if _TINY > s else s) if s > 0 else 1.0)[0])
        else:
            times.append(base[i])
    return max(times), shares


def _ev(
    x: np.ndarray, base: Any, a: Any, g: Any, cd: Any, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """``T_i(x) = base + a x / eff(g x) + cd x`` (``x = 1 / share``, increasing in ``x``)
    and ``dT_i/dx``."""
    k = g * x
    raw = np.log2(1.0 + k)
    eff = np.minimum(np.maximum(raw, lo), hi)
    xde = ((raw > lo) & (raw < hi)) * (k / ((1.0 + k) * _LN2))  # x * d eff / dx
    return base + (a * x) / eff + cd * x, a * (eff - xde) / (eff * eff) + cd


def _minmax(terms: tuple, band: Band, rtol: float, max_iter: int) -> tuple[Any, Any]:
    """:func:`minmax_shares` of ``terms = (base_s, up_bits, down_bits, gamma_up_hz,
    snr_down)`` on ``(P, N)`` rows; each iteration works on the problems (outer) and the
    problems' devices (inner) that have not converged yet."""
    base, up, down, gam, snr_d = np.broadcast_arrays(*(np.asarray(v, float) for v in terms))
    lead, n = base.shape[:-1], base.shape[-1]
    base, up, down, gam, snr_d = (v.reshape(-1, n) for v in (base, up, down, gam, snr_d))
    lo, hi = float(band.min_se), float(band.max_se)
    sends = (up > 0) | (down > 0)
    n_send = sends.sum(axis=-1, keepdims=True)
    any_send = n_send > 0
    a = up / band.w_up_hz
    g = gam / band.w_up_hz
    cd = down / (band.w_down_hz * np.minimum(np.maximum(np.log2(1.0 + snr_d), lo), hi))
    consts = (base, a, g, cd)

    ones = np.ones_like(base)
    t_one, _ = _ev(ones, *consts, lo, hi)
    x_eq = np.where(sends, np.maximum(n_send, 1) * ones, 1.0)
    t_eq, _ = _ev(x_eq, *consts, lo, hi)
    ninf = -np.inf
    t_hi = np.where(any_send, np.where(sends, t_eq, ninf).max(axis=-1, keepdims=True), 0.0)
    t_lo = np.where(any_send, np.where(sends, base, ninf).max(axis=-1, keepdims=True), 0.0)

    def need(
        t: np.ndarray, x0: np.ndarray, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x_i(t) = 1 / beta_i(t), dT_i/dx there, and whether device i can finish by t, for
        the problems ``rows`` (None: all)."""
        c = consts if rows is None else tuple(v[rows] for v in consts)
        snd = sends if rows is None else sends[rows]
        ok = ((t_one if rows is None else t_one[rows]) <= t) & snd
        x_lo = np.where(ok, np.maximum(x0, 1.0), 1.0)
        f_lo, d_lo = _ev(x_lo, *c, lo, hi)
        past = f_lo > t  # a warm start beyond the root: restart from the whole band
        if past.any():
            x_lo = np.where(past, 1.0, x_lo)
            f_lo, d_lo = _ev(x_lo, *c, lo, hi)
        x_hi = np.full_like(x_lo, np.inf)
        live = None  # None: every problem still iterates
        for _ in range(max_iter):
            if live is None:
                tl, fl, ol = t, f_lo, ok
            else:
                tl, fl, ol = t[live], f_lo[live], ok[live]
            done = ((tl - fl <= rtol * tl) | ~ol).all(axis=-1)
            if done.all():
                break
            if done.any() or live is not None:
                keep = np.flatnonzero(~done)
                live = keep if live is None else live[keep]
                tl, fl, ol = tl[keep], fl[keep], ol[keep]
                xl, dl, xh = x_lo[live], d_lo[live], x_hi[live]
                cl = tuple(v[live] for v in c)
            else:
                xl, dl, xh, cl = x_lo, d_lo, x_hi, c
            x_new = xl + (tl - fl) / dl
            bad = (x_new >= xh) | (x_new <= xl) | ~np.isfinite(x_new)
            if bad.any():
                mid = np.where(np.isfinite(xh), np.sqrt(xl * xh), 2.0 * xl)
                x_new = np.where(bad, mid, x_new)
            f_new, d_new = _ev(x_new, *cl, lo, hi)
            below = (f_new <= tl) | ~ol
            if live is None:
                x_lo = np.where(below, x_new, xl)
                f_lo = np.where(below, f_new, fl)
                d_lo = np.where(below, d_new, dl)
                x_hi = np.where(below, xh, x_new)
            else:
                x_lo[live] = np.where(below, x_new, xl)
                f_lo[live] = np.where(below, f_new, fl)
                d_lo[live] = np.where(below, d_new, dl)
                x_hi[live] = np.where(below, xh, x_new)
        return x_lo, d_lo, ok

    t = t_hi.copy()
    lo_b, hi_b = t_lo.copy(), t_hi.copy()
    x_warm = ones
    best_x = x_eq.copy()
    act = None  # None: every problem; else the indices still iterating
    for _ in range(max_iter):
        if act is None:
            ts, xw, snd, anys = t, x_warm, sends, any_send
            lb, hb, bx = lo_b, hi_b, best_x
        else:
            ts, xw, snd, anys = t[act], x_warm[act], sends[act], any_send[act]
            lb, hb, bx = lo_b[act], hi_b[act], best_x[act]
        x, dx, ok = need(ts, xw, act)
        reach = ok | ~snd
        beta = np.where(snd, 1.0 / x, 0.0)
        g_t = np.where(reach.all(axis=-1, keepdims=True), beta.sum(-1, keepdims=True) - 1.0, np.inf)
        feas = g_t <= 0.0
        hb = np.where(feas, ts, hb)
        lb = np.where(feas, lb, ts)
        bx = np.where(feas, x, bx)
        conv = ((hb - lb <= rtol * hb) | (feas & (g_t >= -rtol)) | ~anys)[:, 0]
        if act is None:
            lo_b, hi_b, best_x = lb, hb, bx
        else:
            lo_b[act], hi_b[act], best_x[act] = lb, hb, bx
        if conv.all():
            break
        # d beta / dT = -1 / (x^2 dT/dx)
        dg = np.where(snd & ok, -1.0 / (x * x * dx), 0.0).sum(-1, keepdims=True)
        t_new = ts - g_t / dg
        bad = ~np.isfinite(t_new) | (t_new <= lb) | (t_new >= hb)
        t_new = np.where(bad, 0.5 * (lb + hb), t_new)
        xw = np.where(feas, x, xw)
        if act is None and not conv.any():
            t, x_warm = t_new, xw
            continue
        keep = np.flatnonzero(~conv)
        if act is None:
            act = keep
            x_warm = x_warm.copy()
        else:
            act = act[keep]
        t[act] = t_new[keep]
        x_warm[act] = xw[keep]
    shares = np.where(sends, 1.0 / best_x, 0.0)
    total = shares.sum(-1, keepdims=True)
    # Spread any round-off leftover over the senders (more band never slows a device).
    shares = np.where(any_send, shares / np.where(total > 0, total, 1.0), 1.0 / n)
    x_fin = np.where(shares > 0, 1.0 / np.maximum(shares, _TINY), 1.0)
    times, _ = _ev(x_fin, *consts, lo, hi)
    times = np.where(sends, times, base)
    return times.max(axis=-1).reshape(lead), shares.reshape(*lead, n)


def proportional_shares(spectral_efficiency: Any) -> Any:
    """Shares proportional to each device's spectral efficiency (last axis)."""
    se = np.asarray(spectral_efficiency, float)
    return se / se.sum(axis=-1, keepdims=True)


# ---- the scenario's cost tables -------------------------------------------------------------
class SplitFedModel:
    """Cost tables of one scenario and the round/energy/progress functions (no randomness
    except in the explicit ``sample_*`` methods, which take the caller's generator).

    Table axes: device type ``d`` (index into ``cfg.device_types``), cut index ``j``
    (``cut = j + 1``, cuts 1..L) and rank index ``k`` (into ``cfg.ranks``).

    Args:
        cfg: a ``SplitFedAllocConfig`` (any object with its fields).
    """

    def __init__(self, cfg: Any) -> None:
        from mei_envs import hardware, training
        from mei_envs.llm import catalog, costs

        self.cfg = cfg
        arch = catalog.get_architecture(cfg.model)
        self.arch = arch
        L = arch.n_layers
        self.L = L
        self.N = cfg.n_devices
        self.ranks = np.asarray(cfg.ranks, dtype=np.int64)
        K = self.ranks.size
        self.K = K
        self.lora_targets = LORA_TARGETS[cfg.lora_targets]
        self.hw = [hardware.get_hardware(name) for name in cfg.device_types]
        self.server = hardware.get_hardware(cfg.server)
        self.radio = radio.get_profile(cfg.radio_profile)
        s, b = cfg.seq_len, cfg.batch
        cuts = np.arange(1, L + 1)
        self.cuts = cuts
        if cfg.scheme == "sfl":
            self.allowed_cuts = cuts
        elif cfg.scheme == "sl":
            self.allowed_cuts = cuts[:-1]
        else:
            self.allowed_cuts = cuts[-1:]

        tables = _cost_tables(
            cfg.model,
            s,
            b,
            cfg.weight_precision,
            cfg.act_precision,
            cfg.adapter_precision,
            cfg.lora_targets,
            tuple(int(r) for r in self.ranks),
            tuple(cfg.device_types),
            cfg.server,
        )
        self.dev_train_s = tables["dev_train_s"]  # (D, L, K) [s]
        self.srv_job_s = tables["srv_job_s"]  # (L, K) [s], one device's batch, alone
        self.mem_need_bytes = tables["mem_need_bytes"]  # (L, K) [B]
        self.adapter_bits = tables["adapter_bits"]  # (L, K) device-side adapters [bit]
        smashed = 8.0 * float(costs.hidden_state_bytes(arch, s, cfg.act_precision, batch=b))
        self.smashed_bits = np.where(cuts == L, 0.0, smashed)  # per cut index
        self.usable_memory_bytes = np.array(
            [cfg.device_memory_fraction * hw.memory_bytes for hw in self.hw]
        )
        self.active_power_w = np.array([hw.active_power_W for hw in self.hw])
        self.idle_power_w = np.array([hw.idle_power_W for hw in self.hw])
        self.device_tflops = (
            np.array(
                [
                    hw.effective_flops(hardware.compute_dtype_for(cfg.weight_precision))
                    for hw in self.hw
                ]
            )
            / 1e12
        )

        # Noise over one hertz, uplink SNR-bandwidth product scale and downlink PSD.
        n0 = float(wireless.noise_power_w(1.0, cfg.noise_density_dbm_per_hz, cfg.noise_figure_db))
        self.noise_w_per_hz = n0
        self.downlink_psd_w_per_hz = float(wireless.dbm_to_watt(cfg.downlink_psd_dbm_per_hz))

        # Training progress (fitted model, mei_envs/data/training_progress.json).
        self.progress = training.load_params()
        self.target_class = "attention" if cfg.lora_targets == "attention" else "all_linear"
        p = self.progress
        best_floor = float(training.floor_loss(p, self.ranks.max(), self.target_class))
        self.initial_loss = p.initial_loss
        self.target_loss = best_floor + cfg.target_loss_fraction * (p.initial_loss - best_floor)
        tokens = self.N * b * s * cfg.tokens_multiplier
        if cfg.scheme == "sl":
            self.round_tokens, self.batch_tokens, self.interval = (
                tokens,
                b * s * cfg.tokens_multiplier,
                1,
            )
        else:
            self.round_tokens, self.batch_tokens = tokens, tokens
            self.interval = cfg.aggregation_interval
        # share of the adapters that FedAvg averages (drift): device-side layers
        if cfg.scheme == "sfl":
            self.device_share = cuts / L
        elif cfg.scheme == "fl":
            self.device_share = np.ones(L)
        else:
            self.device_share = np.zeros(L)

        self.band = Band(
            float(cfg.bandwidth_hz),
            float(cfg.downlink_bandwidth_hz),
            float(cfg.min_spectral_efficiency_bps_per_hz),
            float(cfg.max_spectral_efficiency_bps_per_hz),
        )
        # Progress constants per rank (floor, L0 - floor, token scale) and per cut (effective
        # tokens of one round), from mei_envs.training's own functions (see advance_loss).
        tc = self.target_class
        rk = self.ranks.astype(float)
        self.loss_floor = np.asarray(training.floor_loss(p, rk, tc), float)
        self.loss_span = p.initial_loss - self.loss_floor
        self.token_scale = np.asarray(training._scale(p, rk, tc), float)
        self.decay_exponent = float(
            training._per_target(p, "decay_exponent", training._target_index(tc))
        )
        self.inv_decay_exponent = 1.0 / self.decay_exponent
        self.round_effective_tokens = np.asarray(
            training.effective_tokens(
                p,
                self.round_tokens,
                self.batch_tokens,
                interval=self.interval,
                noniid=cfg.noniid,
                device_share=self.device_share,
            ),
            float,
        )
        # Fast-path tables as nested lists (plain floats): [j][k][d] and [j][k].
        n_srv = 1 if cfg.scheme == "sl" else self.N
        self.base_table = self.dev_train_s + n_srv * self.srv_job_s[None]  # (D, L, K) [s]
        self.base_list = self.base_table.transpose(1, 2, 0).tolist()
        self.dev_train_list = self.dev_train_s.transpose(1, 2, 0).tolist()
        self.smashed_list = self.smashed_bits.tolist()
        self.adapter_list = self.adapter_bits.tolist()
        self.active_power_list = self.active_power_w.tolist()
        self.idle_power_list = self.idle_power_w.tolist()
        # advance_loss's constants of each (cut, rank) as floats, [j][k] (next_loss on floats)
        lf, span, scale = (v.tolist() for v in (self.loss_floor, self.loss_span, self.token_scale))
        dec, inv = self.decay_exponent, self.inv_decay_exponent
        self._loss_params = [
            [(lf[k], span[k], scale[k], dec, inv, du) for k in range(K)]
            for du in self.round_effective_tokens.tolist()
        ]

    # ---- devices and channel --------------------------------------------------------------
    def path_gain(self, distance_m: Any, shadow_db: Any) -> Any:
        """Large-scale power gain (linear) at ``distance_m`` [m] (> 0; the config's range)
        with shadowing loss ``shadow_db``: 3GPP TR 36.814 macro path loss."""
        pl = wireless.macro_path_loss_db(np.asarray(distance_m, dtype=np.float64))
        return 10.0 ** (-(pl + shadow_db) / 10.0)

    def path_gain_list(self, distance_m: np.ndarray, shadow_db: list[float]) -> list[float]:
        """:meth:`path_gain` of a draw of devices as a list of floats (the power on Python
        floats, libm's ``pow`` as numpy's; ``tests/test_split_fed_fast_paths.py``)."""
        pl = wireless.macro_path_loss_db(np.asarray(distance_m, dtype=np.float64)).tolist()
        return [10.0 ** (-(p + s) / 10.0) for p, s in zip(pl, shadow_db, strict=True)]

    def link_params(self, gain: Any) -> tuple[Any, Any]:
        """(uplink SNR-bandwidth product [Hz], downlink SNR) of a power gain (float or array)."""
        gamma_up = self.cfg.tx_power_w * gain / self.noise_w_per_hz
        snr_down = self.downlink_psd_w_per_hz * gain / self.noise_w_per_hz
        return gamma_up, snr_down

    def feasible(self, device_types: Any) -> np.ndarray:
        """(L, K) mask: cut j+1 at rank k fits every listed device's usable memory."""
        usable = self.usable_memory_bytes[np.asarray(device_types)].min()
        return self.mem_need_bytes <= usable

    # ---- one round -----------------------------------------------------------------------
    def round_bits(self, cut_index: Any, rank_index: Any, aggregate: Any) -> Any:
        """Bits each device sends up (and receives down) in a round: the smashed data, plus
        the device-side adapters in an exchange round (``aggregate`` 1; ``1/I`` amortised;
        every turn in ``sl``). Floats for int indices on the list tables, else arrays."""
        if isinstance(cut_index, int) and isinstance(rank_index, int):
            smashed, adapter = (
                self.smashed_list[cut_index],
                self.adapter_list[cut_index][rank_index],
            )
        else:
            smashed = self.smashed_bits[np.asarray(cut_index)]
            adapter = self.adapter_bits[np.asarray(cut_index), np.asarray(rank_index)]
        if self.cfg.scheme == "sl":
            return smashed + adapter
        return smashed + aggregate * adapter

    def round_terms(
        self, device_types: Any, cut_index: Any, rank_index: Any, aggregate: Any
    ) -> tuple[Any, Any, Any, Any]:
        """(base_s, up_bits, down_bits, device compute_s) per device, last axis devices.

        ``cut_index``/``rank_index`` may be arrays (add a trailing axis of 1 for devices);
        ``aggregate`` is 1 in an adapter-exchange round, 0 otherwise, or ``1/I`` for the
        amortised round.
        """
        d, j, k = np.asarray(device_types), np.asarray(cut_index), np.asarray(rank_index)
        t_dev = self.dev_train_s[d, j, k]
        base = self.base_table[d, j, k]
        bits = self.round_bits(j, k, aggregate) + 0.0 * t_dev
        return base, bits, bits, t_dev

    def round_time(
        self, shares: Any, base: Any, up: Any, down: Any, gamma_up: Any, snr_down: Any
    ) -> tuple[Any, Any, Any, Any]:
        """(round_s, per-device T_i, uplink airtime, downlink airtime) of given shares.

        ``sl`` ignores the shares: each turn has the whole band; the round is the sum.
        """
        if self.cfg.scheme == "sl":
            t, tu, td, _ = chain_times(1.0, base, up, down, gamma_up, snr_down, self.band)
            return t.sum(axis=-1), t, tu, td
        t, tu, td, _ = chain_times(
            np.asarray(shares, float), base, up, down, gamma_up, snr_down, self.band
        )
        return t.max(axis=-1), t, tu, td

    def best_shares(
        self, base: Any, up: Any, down: Any, gamma_up: Any, snr_down: Any
    ) -> tuple[Any, Any]:
        """Min-max shares (exact) and the round time; ``sl``: the whole band per turn."""
        if self.cfg.scheme == "sl":
            rt, *_ = self.round_time(None, base, up, down, gamma_up, snr_down)
            n = np.shape(base)[-1]
            return rt, np.full(np.shape(base), 1.0 / n)
        return minmax_shares(base, up, down, gamma_up, snr_down, band=self.band)

    def device_energy(
        self,
        device_types: Any,
        round_s: Any,
        t_dev: Any,
        t_up: Any,
        shares: Any,
        gamma_up: Any,
    ) -> Any:
        """Energy of each device in a round [J] (:func:`device_energy_j` at the uplink rate
        of its share; the whole band in ``sl``)."""
        d = np.asarray(device_types)
        sh = np.ones_like(t_up) if self.cfg.scheme == "sl" else shares
        r_up, _ = link_rates(sh, gamma_up, 0.0, self.band)
        return device_energy_j(
            self.radio,
            np.asarray(round_s)[..., None],
            t_dev,
            t_up,
            r_up,
            self.active_power_w[d],
            self.idle_power_w[d],
        )

    def next_loss(self, loss: Any, cut_index: Any, rank_index: Any) -> Any:
        """Loss after one round at (cut, rank) from ``loss`` (fitted progress model,
        :func:`advance_loss`); a float for a float loss and int indices."""
        if type(loss) is float and type(cut_index) is int and type(rank_index) is int:
            return advance_loss_float(loss, *self._loss_params[cut_index][rank_index])
        j, k = np.asarray(cut_index), np.asarray(rank_index)
        out = advance_loss(
            np.asarray(loss, float),
            self.loss_floor[k],
            self.loss_span[k],
            self.token_scale[k],
            self.decay_exponent,
            self.inv_decay_exponent,
            self.round_effective_tokens[j],
        )
        return float(out) if np.ndim(out) == 0 else out


def advance_loss(
    loss: Any,
    floor: Any,
    span: Any,
    scale: Any,
    decay_exponent: float,
    inv_decay_exponent: float,
    effective_tokens: Any,
    ops: Any = ARRAY_OPS,
) -> Any:
    """:func:`mei_envs.training.advance` with its per-(cut, rank) constants precomputed:
    ``floor`` and ``span = L0 - floor`` of the rank, its token ``scale``, the round's
    ``effective_tokens``. Invert the loss curve to the effective tokens reached, add the
    round's, read the curve again; the loss never increases. Bit for bit the same as
    ``training.advance`` (``tests/test_split_fed_vector.py`` checks it)."""
    frac = ops.minimum(ops.maximum((loss - floor) / span, 0.0), 1.0)
    u0 = scale * ops.maximum(ops.recip(frac) - 1.0, 0.0) ** inv_decay_exponent
    u = u0 + effective_tokens
    new = floor + span / (1.0 + (u / scale) ** decay_exponent)
    return ops.where(u0 < _INF, ops.minimum(new, loss), loss)


def advance_loss_float(
    loss: float,
    floor: float,
    span: float,
    scale: float,
    decay_exponent: float,
    inv_decay_exponent: float,
    effective_tokens: float,
) -> float:
    """:func:`advance_loss` on Python floats, written out for the single env's hot path (the
    ``FLOAT_OPS`` calls cost ~3x the arithmetic): the same operations in the same order, with
    builtin ``max``/``min`` semantics (``max(a, b) = b if b > a else a``), so the same bits
    (``tests/test_split_fed_speed.py`` checks it against the array formula)."""
    x = (loss - floor) / span
    x = 0.0 if 0.0 > x else x
    frac = 1.0 if 1.0 < x else x
    r = (1.0 / frac if frac > 0 else _INF) - 1.0
    u0 = scale * (0.0 if 0.0 > r else r) ** inv_decay_exponent
    if u0 < _INF:
        new = floor + span / (1.0 + ((u0 + effective_tokens) / scale) ** decay_exponent)
        return loss if loss < new else new
    return loss


def _affine_in_cut(fn: Any, lo: int, hi: int) -> np.ndarray:
    """``fn(c)`` for ``c = lo..hi`` from three evaluations, for costs that are affine in the
    number of held blocks (every block of a catalog model is the same); checked on a third
    point, with a plain loop where the check fails."""
    n = hi - lo + 1
    f0 = np.asarray(fn(lo), float)
    if n == 1:
        return f0[None]
    f1 = np.asarray(fn(lo + 1), float)
    out = (
        f0[None] + np.arange(n)[:, None] * (f1 - f0)[None]
        if f0.ndim
        else f0 + np.arange(n) * (f1 - f0)
    )
    if n >= 3:
        f2 = np.asarray(fn(lo + 2), float)
        if not np.allclose(out[2], f2, rtol=1e-9, atol=0.0):
            out = np.stack([np.asarray(fn(c), float) for c in range(lo, hi + 1)])
    return out


@functools.lru_cache(maxsize=64)
def _cost_tables(
    model: str,
    seq_len: int,
    batch: int,
    weight_precision: str,
    act_precision: str,
    adapter_precision: str,
    lora_targets: str,
    ranks: tuple[int, ...],
    device_types: tuple[str, ...],
    server: str,
) -> dict[str, np.ndarray]:
    """Per (device type, cut, rank) training-step times, server job times, device memory and
    adapter sizes (read-only arrays; cached per scenario).

    FLOPs and bytes of a layer range come from :func:`mei_envs.hardware.time_train_step`
    (``costs.train_flops`` / ``costs.train_bytes``); they are affine in the number of
    blocks, so three ranges per rank give every cut (checked, see :func:`_affine_in_cut`);
    the roofline (:func:`mei_envs.hardware.roofline`) then times them on each device.
    """
    from mei_envs import hardware
    from mei_envs.llm import catalog, costs

    arch = catalog.get_architecture(model)
    L = arch.n_layers
    targets = LORA_TARGETS[lora_targets]
    K = len(ranks)
    devices = [hardware.get_hardware(t) for t in device_types]
    srv = hardware.get_hardware(server)
    dev_flops = np.zeros((L, K))
    dev_bytes = np.zeros((L, K))
    srv_flops = np.zeros((L, K))
    srv_bytes = np.zeros((L, K))
    mem = np.zeros((L, K))
    adapter = np.zeros((L, K))
    hw0 = devices[0]

    # keywords every layer range shares (training step and device memory)
    job: dict[str, Any] = dict(seq_len=seq_len, batch=batch, mode="lora", lora_targets=targets)
    job.update(weight_precision=weight_precision, act_precision=act_precision)

    def step(layers: tuple[int, int], rank: int, head: bool, rg: bool) -> np.ndarray:
        out = hardware.time_train_step(
            hw0, arch, layers, lora_rank=rank, lm_head=head, input_requires_grad=rg, **job
        )
        return np.array([out["flops"], out["bytes"]], float)

    def memory(cut: int, rank: int) -> float:
        mem = costs.device_memory_bytes(arch, cut, lora_rank=rank, include_lm_head=cut == L, **job)
        return mem["total"]

    for k, r in enumerate(ranks):
        if L > 1:
            # device holds [0, c) for c < L (no LM head; block 0's input needs no gradient)
            fb = _affine_in_cut(lambda c, r=r: step((0, c), r, False, False), 1, L - 1)
            dev_flops[:-1, k], dev_bytes[:-1, k] = fb[:, 0], fb[:, 1]
            # server holds [c, L) and the LM head, returns the cut layer's gradient
            sb = _affine_in_cut(lambda n, r=r: step((L - n, L), r, True, True), 1, L - 1)
            srv_flops[:-1, k], srv_bytes[:-1, k] = sb[::-1, 0], sb[::-1, 1]
            mem[:-1, k] = _affine_in_cut(lambda c, r=r: memory(c, r), 1, L - 1)
        dev_flops[-1, k], dev_bytes[-1, k] = step((0, L), r, True, False)
        mem[-1, k] = memory(L, r)
        per_block = costs.lora_params(arch, r, targets, layers=(0, 1))
        adapter[:, k] = np.arange(1, L + 1) * per_block
    dtype = hardware.compute_dtype_for(weight_precision)
    dev_s = np.stack(
        [hardware.roofline(hw, dev_flops, dev_bytes, dtype)["latency_s"] for hw in devices]
    )
    srv_s = np.asarray(hardware.roofline(srv, srv_flops, srv_bytes, dtype)["latency_s"])
    srv_s[-1] = 0.0  # cut L: the server trains nothing
    out = {
        "dev_train_s": dev_s,
        "srv_job_s": srv_s,
        "mem_need_bytes": mem,
        "adapter_bits": 8.0 * adapter * costs.bytes_per_element(adapter_precision),
    }
    for v in out.values():
        v.setflags(write=False)
    return out


# Logical LoRA targets of each config choice (see mei_envs.llm.costs.resolve_lora_targets):
# "attention" = the q, k, v projections (what the fit's GPT-2 c_attn adapts);
# "all_linear" = every linear layer of a block (QLoRA's recommendation).
LORA_TARGETS: dict[str, Any] = {"attention": ("q", "k", "v"), "all_linear": "all_linear"}
