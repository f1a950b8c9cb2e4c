"""Summary statistics for policy comparisons: mean, std, IQM and bootstrap confidence intervals.

* IQM (interquartile mean) is the 25 % trimmed mean recommended by Agarwal et al., "Deep RL at
  the Edge of the Statistical Precipice" (NeurIPS 2021): robust to outliers, less noisy than
  the median.
* Confidence intervals are percentile bootstrap intervals (95 % by default). A single group of
  values (a baseline, one trained agent) uses :func:`scipy.stats.bootstrap`. Several groups
  (the same agent trained with several seeds) use a two-level bootstrap: resample seeds with
  replacement, then episodes within each drawn seed, so the interval carries both
  seed-to-seed and episode-to-episode variation.

Every function that resamples takes the caller's :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

STATISTICS = ("mean", "iqm")


def iqm(x: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50 % (25 % trimmed from each end)."""
    return sps.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def _stat_fn(statistic: str):
    if statistic == "mean":
        return lambda x, axis=-1: np.mean(x, axis=axis)
    if statistic == "iqm":
        return lambda x, axis=-1: iqm(x, axis=axis)
    raise ValueError(f"statistic={statistic!r}: must be one of {list(STATISTICS)}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}: must be in (0, 1)")


def bootstrap_ci(
    x: Any,
    rng: np.random.Generator,
    *,
    statistic: str = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    axis: int = -1,
) -> tuple[Any, Any]:
    """Percentile bootstrap confidence interval of ``statistic`` along ``axis``.

    Args:
        x: values; with ``ndim > 1`` one interval is computed per slice along ``axis``.
        rng: caller's generator (drives the resampling).
        statistic: ``"mean"`` or ``"iqm"``.
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples.
        axis: axis holding the samples.

    Returns:
        ``(low, high)``; floats for 1-D input, arrays otherwise. With fewer than two samples
        or no spread the interval collapses to the statistic itself.
    """
    _check_confidence(confidence)
    fn = _stat_fn(statistic)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        raise ValueError("bootstrap_ci: x has no samples along axis")
    point = fn(x, axis=axis)
    degenerate = x.shape[axis] < 2 or np.all(np.ptp(x, axis=axis) == 0)
    if degenerate:
        low = high = point
    else:
        res = sps.bootstrap(
            (x,),
            fn,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            axis=axis,
            vectorized=True,
            rng=rng,
        )
        low, high = res.confidence_interval.low, res.confidence_interval.high
        # Slices without spread give nan from scipy; their interval is the point itself.
        low = np.where(np.isnan(low), point, low)
        high = np.where(np.isnan(high), point, high)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return np.asarray(low), np.asarray(high)


def grouped_bootstrap_ci(
    groups: Sequence[Any],
    rng: np.random.Generator,
    *,
    statistic: str = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> tuple[float, float]:
    """Two-level percentile bootstrap: resample groups, then values within each drawn group.

    The statistic of a resample is taken over all values of all drawn groups pooled, i.e. the
    same statistic :func:`describe` reports for the pooled values. With one group this is an
    ordinary bootstrap over its values.
    """
    _check_confidence(confidence)
    fn = _stat_fn(statistic)
    arrays = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("grouped_bootstrap_ci: every group needs at least one value")
    if len(arrays) == 1:
        return bootstrap_ci(
            arrays[0], rng, statistic=statistic, confidence=confidence, n_resamples=n_resamples
        )
    pooled = np.concatenate(arrays)
    if np.ptp(pooled) == 0:
        point = float(fn(pooled))
        return point, point
    n_groups = len(arrays)
    sizes = {a.size for a in arrays}
    drawn = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    if len(sizes) == 1:
        (n,) = sizes
        data = np.stack(arrays)  # (groups, n)
        inner = rng.integers(0, n, size=(n_resamples, n_groups, n))
        samples = data[drawn[:, :, None], inner].reshape(n_resamples, n_groups * n)
        values = fn(samples, axis=1)
    else:
        values = np.empty(n_resamples)
        for b in range(n_resamples):
            parts = [arrays[g][rng.integers(0, arrays[g].size, arrays[g].size)] for g in drawn[b]]
            values[b] = fn(np.concatenate(parts), axis=0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def describe(
    groups: Sequence[Any],
    rng: np.random.Generator,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> dict[str, float]:
    """Pooled statistics of one or more groups of values (e.g. episodes of each seed).

    Returns:
        ``n_groups``, ``n`` (values), ``mean``, ``std`` (ddof=1; 0 for one value), ``iqm``,
        ``ci_low``/``ci_high`` (interval of the mean) and ``iqm_ci_low``/``iqm_ci_high``.
    """
    arrays = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    pooled = np.concatenate(arrays) if arrays else np.empty(0)
    if pooled.size == 0:
        raise ValueError("describe: no values")
    kw = {"confidence": confidence, "n_resamples": n_resamples}
    lo, hi = grouped_bootstrap_ci(arrays, rng, statistic="mean", **kw)
    ilo, ihi = grouped_bootstrap_ci(arrays, rng, statistic="iqm", **kw)
    return {
        "n_groups": len(arrays),
        "n": int(pooled.size),
        "mean": float(pooled.mean()),
        "std": float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0,
        "iqm": float(iqm(pooled)),
        "ci_low": lo,
        "ci_high": hi,
        "iqm_ci_low": ilo,
        "iqm_ci_high": ihi,
    }


def summarize(
    records: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    rng: np.random.Generator,
    *,
    policy_key: str = "policy",
    group_key: str | None = "train_seed",
    per_group: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> list[dict[str, Any]]:
    """Summary rows per policy and metric from per-episode records.

    Args:
        records: one mapping per episode with ``policy_key``, optionally ``group_key`` (the
            training seed of an agent; empty/None for baselines), ``kind`` and each metric.
        metrics: metric columns to summarise (e.g. ``["return", "latency_s"]``).
        rng: caller's generator for the bootstraps.
        policy_key: column naming the policy.
        group_key: column naming the group (training seed); ``None`` to ignore groups.
        per_group: also emit one row per (policy, group) when a policy has several groups.

    Returns:
        Rows with ``policy``, ``kind``, ``seed`` (``"all"`` for the pooled row of a policy
        with groups, the group value for per-group rows, ``""`` for ungrouped policies),
        ``metric`` and the fields of :func:`describe`, in order of first appearance.
    """
    by_policy: dict[str, dict[Any, list[Mapping[str, Any]]]] = {}
    kinds: dict[str, str] = {}
    for rec in records:
        pol = str(rec[policy_key])
        grp = rec.get(group_key) if group_key else None
        grp = None if grp in ("", None) else grp
        by_policy.setdefault(pol, {}).setdefault(grp, []).append(rec)
        kinds.setdefault(pol, str(rec.get("kind", "")))
    rows: list[dict[str, Any]] = []
    kw = {"confidence": confidence, "n_resamples": n_resamples}
    for pol, groups in by_policy.items():
        grouped = any(g is not None for g in groups)
        for metric in metrics:
            values = [[float(r[metric]) for r in recs] for recs in groups.values()]
            seed_label = "all" if grouped else ""
            rows.append(
                {"policy": pol, "kind": kinds[pol], "seed": seed_label, "metric": metric}
                | describe(values, rng, **kw)
            )
            if grouped and per_group and len(groups) > 1:
                for grp, vals in zip(groups, values, strict=True):
                    rows.append(
                        {"policy": pol, "kind": kinds[pol], "seed": grp, "metric": metric}
                        | describe([vals], rng, **kw)
                    )
    return rows
