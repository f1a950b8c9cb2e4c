"""Summary statistics for policy comparisons.

Two layers:

* **rliable** (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS
  2021), the field's library, for its aggregates: :func:`rliable_aggregates` gives IQM, mean
  and optimality gap of normalized scores with stratified-bootstrap CIs,
  :func:`rliable_improvement` the probability of improvement of each agent over each
  baseline (point estimates: see there), :func:`rliable_profiles` performance profiles.
  Scores are arranged as rliable expects, a (runs x tasks) matrix per policy: runs are
  training seeds (one run for a baseline), tasks are the held-out episodes (and, across
  scenario presets, episodes of every preset), and ``task_bootstrap=True`` resamples both.
* **Hand-written, for what rliable does not do**: the per-policy, per-seed table of raw
  (unnormalized) metrics in ``summary.csv`` -- mean, std, IQM and percentile-bootstrap CIs
  of latency, energy, ... in their own units, including a two-level bootstrap (seeds, then
  episodes within each drawn seed) for one agent's pooled seeds. rliable aggregates
  normalized scores over a run x task matrix and has no per-metric, per-seed summary in
  physical units; single groups use :func:`scipy.stats.bootstrap`.

Every hand-written function that resamples takes the caller's
:class:`numpy.random.Generator`; the rliable ones take a seed.
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


# ---- rliable aggregates ------------------------------------------------------------------
RLIABLE_AGGREGATES = ("IQM", "mean", "optimality_gap")
_RLY: Any = None


def rliable_problem() -> str | None:
    """Why rliable cannot be used here (None when it can)."""
    try:
        rliable_library()
    except ImportError as exc:
        return str(exc)
    return None


def rliable_library() -> Any:
    """``rliable.library``, made to work with arch >= 7 (rliable 1.2 still passes arch's
    removed ``random_state`` argument; arch renamed it ``seed``).

    Raises:
        ImportError: rliable or a working ``arch`` is missing (arch < 8 fails to import with
            pandas 3); the message says what to install.
    """
    global _RLY
    if _RLY is not None:
        return _RLY
    try:
        import arch.bootstrap
        from rliable import library as rly
    except Exception as exc:  # noqa: BLE001 - arch 7 raises TypeError at import under pandas 3
        raise ImportError(
            f"rliable is not usable here ({type(exc).__name__}: {exc}); "
            "pip install 'rliable>=1.2' 'arch>=8'"
        ) from exc
    import inspect

    if "seed" in inspect.signature(arch.bootstrap.IIDBootstrap.__init__).parameters:

        class StratifiedBootstrap(rly.StratifiedBootstrap):
            """rliable's stratified bootstrap, passing the seed under arch's new name."""

            def __init__(self, *args: Any, random_state: Any = None, task_bootstrap: bool = False,
                         **kwargs: Any) -> None:  # fmt: skip
                arch.bootstrap.IIDBootstrap.__init__(self, *args, seed=random_state, **kwargs)
                self._args_shape = args[0].shape
                self._num_tasks = self._args_shape[1]
                self._parameters = [self._num_tasks, task_bootstrap]
                self._task_bootstrap = task_bootstrap
                self._strata_indices = self._get_strata_indices()

        class StratifiedIndependentBootstrap(rly.StratifiedIndependentBootstrap):
            """rliable's independent-samples stratified bootstrap, seed under arch's name."""

            def __init__(self, *args: Any, random_state: Any = None, **kwargs: Any) -> None:
                arch.bootstrap.IndependentSamplesBootstrap.__init__(
                    self, *args, seed=random_state, **kwargs
                )
                self._args_shapes = [arg.shape for arg in args]
                self._kwargs_shapes = {key: val.shape for key, val in self._kwargs.items()}
                self._args_strata_indices = [
                    self._get_strata_indices(shape) for shape in self._args_shapes
                ]
                self._kwargs_strata_indices = {
                    key: self._get_strata_indices(shape)
                    for key, shape in self._kwargs_shapes.items()
                }

        rly.StratifiedBootstrap = StratifiedBootstrap
        rly.StratifiedIndependentBootstrap = StratifiedIndependentBootstrap
    _RLY = rly
    return rly


def score_matrices(
    records: Sequence[Mapping[str, Any]],
    metric: str = "return",
    *,
    policy_key: str = "policy",
    run_key: str = "train_seed",
    task_key: str = "episode_seed",
) -> dict[str, np.ndarray]:
    """One (runs x tasks) matrix of ``metric`` per policy, as rliable expects.

    Runs are the values of ``run_key`` (training seeds; a baseline has one run), tasks the
    values of ``task_key`` (held-out episodes), in sorted order. Every policy must have been
    evaluated on the same tasks.

    Raises:
        ValueError: a policy misses some (run, task) cell or has other tasks than the rest.
    """
    cells: dict[str, dict[tuple[str, str], float]] = {}
    for rec in records:
        run = str(rec.get(run_key, ""))
        cells.setdefault(str(rec[policy_key]), {})[(run, str(rec[task_key]))] = float(rec[metric])
    out: dict[str, np.ndarray] = {}
    tasks_ref: list[str] | None = None
    for pol, table in cells.items():
        runs = sorted({r for r, _ in table}, key=_natural)
        tasks = sorted({t for _, t in table}, key=_natural)
        if tasks_ref is None:
            tasks_ref = tasks
        elif tasks != tasks_ref:
            raise ValueError(f"score_matrices: {pol!r} was evaluated on other tasks than the rest")
        try:
            out[pol] = np.array([[table[(r, t)] for t in tasks] for r in runs], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"score_matrices: {pol!r} has no value for {exc.args[0]}") from None
    return out


def _natural(text: str) -> Any:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def normalize_scores(
    matrices: Mapping[str, np.ndarray], low: float, high: float
) -> dict[str, np.ndarray]:
    """``(x - low) / (high - low)``: 0 at the ``low`` reference, 1 at ``high`` (the oracle).

    Raises:
        ValueError: ``high == low`` (no scale).
    """
    if not np.isfinite(high - low) or high == low:
        raise ValueError(f"normalize_scores: high={high} and low={low} give no scale")
    return {k: (np.asarray(v, dtype=np.float64) - low) / (high - low) for k, v in matrices.items()}


def _optimality_gap(scores: np.ndarray) -> float:
    from rliable import metrics

    return metrics.aggregate_optimality_gap(scores, gamma=1.0)


def rliable_aggregates(
    scores: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    reps: int = 2000,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """IQM, mean and optimality gap (gamma = 1) of normalized scores with rliable's
    stratified-bootstrap percentile CIs (runs and tasks resampled).

    Returns:
        One row per (policy, aggregate): ``policy``, ``aggregate``, ``value``, ``ci_low``,
        ``ci_high``, ``runs``, ``tasks``.
    """
    from rliable import metrics

    rly = rliable_library()
    _check_confidence(confidence)

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), _optimality_gap(x)])

    point, interval = rly.get_interval_estimates(
        dict(scores),
        aggregates,
        task_bootstrap=True,
        reps=reps,
        confidence_interval_size=confidence,
        random_state=np.random.RandomState(seed),
    )
    rows = []
    for pol, values in point.items():
        for j, name in enumerate(RLIABLE_AGGREGATES):
            rows.append(
                {
                    "policy": pol,
                    "aggregate": name,
                    "value": float(values[j]),
                    "ci_low": float(interval[pol][0, j]),
                    "ci_high": float(interval[pol][1, j]),
                    "runs": int(scores[pol].shape[0]),
                    "tasks": int(scores[pol].shape[1]),
                }
            )
    return rows


def rliable_improvement(
    scores: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """P(X > Y) of each ``(X, Y)`` pair: rliable's probability of improvement (per task, the
    Mann-Whitney probability that a run of X beats a run of Y, ties counting half, averaged
    over tasks).

    Point estimates only: rliable computes it with one ``scipy.stats.mannwhitneyu`` call per
    task, about 1.6 ms each here, so its bootstrap CI over 100 held-out episodes and 2,000
    resamples would take over five minutes per pair.

    Returns:
        One row per pair: ``policy``, ``versus``, ``probability``.
    """
    from rliable import metrics

    return [
        {
            "policy": x,
            "versus": y,
            "probability": float(metrics.probability_of_improvement(scores[x], scores[y])),
        }
        for x, y in pairs
    ]


def rliable_profiles(
    scores: Mapping[str, np.ndarray],
    taus: np.ndarray,
    *,
    seed: int = 0,
    reps: int = 2000,
    confidence: float = 0.95,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's performance profiles: the share of (run, task) scores above each tau, with
    stratified-bootstrap CIs (``(profiles, intervals)`` keyed by policy).

    rliable draws these resamples from numpy's global generator; it is seeded with ``seed``
    for the call and restored afterwards, so the figure is reproducible.
    """
    rly = rliable_library()
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return rly.create_performance_profile(
            dict(scores), np.asarray(taus), reps=reps, confidence_interval_size=confidence
        )
    finally:
        np.random.set_state(state)


def score_references(summary_rows: Sequence[Mapping[str, Any]]) -> tuple[str, float, str, float]:
    """The normalization of a compare run: ``(low name, low, high name, high)``.

    0 is the worst heuristic's mean held-out return, 1 the oracle's (the best oracle when
    there are several; the best heuristic when there is none).

    Raises:
        ValueError: no baseline rows (nothing to normalize by).
    """
    pooled = [
        r
        for r in summary_rows
        if r["metric"] == "return" and str(r["seed"]) in ("", "all") and r["kind"] != "agent"
    ]
    heuristics = [r for r in pooled if r["kind"] == "heuristic"]
    oracles = [r for r in pooled if r["kind"] == "oracle"]
    if not heuristics and not oracles:
        raise ValueError("score_references: no baseline to normalize the scores by")
    low = min(heuristics or oracles, key=lambda r: float(r["mean"]))
    high = max(oracles or heuristics, key=lambda r: float(r["mean"]))
    return str(low["policy"]), float(low["mean"]), str(high["policy"]), float(high["mean"])
