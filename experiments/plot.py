"""Figures from finished run folders: learning curves and final comparisons.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend state; rendering uses Agg) and written atomically as PNG and PDF.

* :func:`plot_run` re-plots a compare run folder (``experiments.compare``); it refuses a
  folder without its ``COMPLETE`` marker or with outputs missing.
* :func:`plot_zoo` plots learning curves from an rl-baselines3-zoo log folder
  (``logs/<algo>/<env>_<n>/evaluations.npz``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mei_envs.experiments.io import check_run_complete, read_csv, save_figure_atomic
from mei_envs.experiments.stats import bootstrap_ci

FIGURE_FORMATS = ("png", "pdf")
_KIND_STYLE = {"heuristic": "--", "oracle": ":", "agent": "-"}
_KIND_COLOR = {"heuristic": "tab:orange", "oracle": "black", "agent": "tab:blue"}


@dataclass
class Curve:
    """Evaluation returns of one algorithm over training seeds on a common step grid."""

    label: str
    timesteps: np.ndarray  # (n_evals,) env steps
    returns: np.ndarray  # (n_seeds, n_evals) mean eval return per seed


def read_evaluations(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps, mean return per evaluation)`` from an SB3 ``evaluations.npz``."""
    with np.load(path) as data:
        if "timesteps" not in data or "results" not in data:
            raise ValueError(f"{str(path)!r}: not an SB3 evaluations.npz (timesteps, results)")
        t = np.asarray(data["timesteps"], dtype=np.float64).ravel()
        res = np.asarray(data["results"], dtype=np.float64)
    if res.ndim == 1:
        res = res[:, None]
    if t.size != res.shape[0]:
        raise ValueError(f"{str(path)!r}: {t.size} timesteps but {res.shape[0]} result rows")
    return t, res.mean(axis=1)


def build_curve(label: str, runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Curve:
    """Put several seeds' ``(timesteps, returns)`` on the grid of the shortest run."""
    runs = [(t, r) for t, r in runs if t.size > 0]
    if not runs:
        raise ValueError(f"{label}: no evaluations")
    grid = min((t for t, _ in runs), key=lambda t: t[-1])
    stacked = np.stack([np.interp(grid, t, r) for t, r in runs])
    return Curve(label, grid, stacked)


def _figure(n_panels: int, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Any, stem: Path) -> list[Path]:
    return [save_figure_atomic(fig, stem.with_suffix(f".{fmt}"), dpi=150) for fmt in FIGURE_FORMATS]


BAND_MEANING = "band: 95% bootstrap CI of the mean over training seeds"


def _draw_curves(ax: Any, curves: Sequence[Curve], rng: np.random.Generator) -> None:
    """Mean over seeds as a line; with several seeds a band (:data:`BAND_MEANING`)."""
    for i, c in enumerate(curves):
        color = f"C{i}"
        mean = c.returns.mean(axis=0)
        n = c.returns.shape[0]
        ax.plot(c.timesteps, mean, color=color, label=f"{c.label}: mean of {n} seed{'s' * (n > 1)}")
        if n > 1:
            lo, hi = bootstrap_ci(c.returns, rng, axis=0)
            ax.fill_between(
                c.timesteps, lo, hi, color=color, alpha=0.25, linewidth=0,
                label=f"{c.label}: 95% bootstrap CI of the mean over seeds",
            )  # fmt: skip


def plot_learning_curves(
    curves: Sequence[Curve],
    stem: str | Path,
    rng: np.random.Generator,
    *,
    reference_lines: Mapping[str, tuple[float, str]] | None = None,
    final_points: Mapping[str, tuple[float, float, float]] | None = None,
    ylabel: str = "mean evaluation return",
    title: str = "",
    reference_note: str = "",
) -> list[Path]:
    """Mean eval return against env steps with a 95 % bootstrap band over seeds.

    Args:
        curves: one per algorithm.
        stem: output path without suffix (``.png`` and ``.pdf`` are written).
        rng: caller's generator for the bootstrap band.
        reference_lines: ``{name: (held-out mean return, kind)}`` drawn horizontally
            (baselines dashed, oracles dotted).
        final_points: ``{curve label: (held-out mean, CI low, CI high)}`` drawn as a marker
            with error bar at the curve's last step, so the agent's held-out score sits on
            the same footing as the reference lines (the curve itself uses the trainer's
            evaluation episodes, which are other seeds).
        ylabel: y-axis label.
        title: figure title.
        reference_note: appended to each reference line's label (e.g. "on the curve's 30
            episodes": where the level was measured).
    """
    fig, (ax,) = _figure(1, width=7.0, height=4.5)
    _draw_curves(ax, curves, rng)
    for i, c in enumerate(curves):
        if final_points and c.label in final_points:
            mean, low, high = final_points[c.label]
            ax.errorbar(
                [c.timesteps[-1]],
                [mean],
                yerr=[[max(mean - low, 0.0)], [max(high - mean, 0.0)]],
                fmt="D",
                color=f"C{i}",
                markeredgecolor="black",
                capsize=4,
                zorder=5,
                label=f"{c.label} held-out (95% CI)",
            )
    # Policies with the same level (e.g. a tuned threshold that equals eager) share one line
    # and one legend entry, so no line hides another.
    merged: dict[tuple[float, str], list[str]] = {}
    for name, (value, kind) in (reference_lines or {}).items():
        merged.setdefault((round(float(value), 9), kind), []).append(name)
    for j, ((value, kind), names) in enumerate(merged.items()):
        ax.axhline(
            value,
            linestyle=_KIND_STYLE.get(kind, "--"),
            color="black" if kind == "oracle" else f"C{(len(curves) + j) % 10}",
            linewidth=1.2,
            label=f"{' = '.join(names)} ({kind}{reference_note})",
        )
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    if title:
        ax.set_title(title, fontsize="small")
    return _save(fig, Path(stem))


def constant_metrics(
    summary_rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], rtol: float = 1e-9
) -> list[str]:
    """Metrics whose pooled mean is the same for every policy (a panel that shows nothing)."""
    out = []
    for metric in metrics:
        means = [
            float(r["mean"])
            for r in summary_rows
            if r["metric"] == metric and str(r["seed"]) in ("", "all")
        ]
        if len(means) > 1 and np.allclose(means, means[0], rtol=rtol, atol=0.0):
            out.append(metric)
    return out


def plot_final_comparison(
    summary_rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    stem: str | Path,
    *,
    title: str = "",
) -> list[Path]:
    """Each policy's held-out mean with its 95 % CI, one panel per metric.

    Uses the pooled rows of ``summary_rows`` (``seed`` empty or ``"all"``). Means are drawn as
    points with CI bars on an axis fitted to the data (bars from 0 would hide a 15 % gap);
    colours mark the policy kind (legend); metrics equal for every policy get no panel, and
    the title names them.
    """
    if not metrics:
        raise ValueError("plot_final_comparison: no metrics")
    from matplotlib.lines import Line2D

    constant = constant_metrics(summary_rows, metrics)
    shown = [m for m in metrics if m not in constant] or list(metrics[:1])
    fig, axes = _figure(len(shown), width=max(4.5, 0.9 * _n_policies(summary_rows) + 2.0))
    kinds_seen: dict[str, None] = {}
    for ax, metric in zip(axes, shown, strict=True):
        rows = [r for r in summary_rows if r["metric"] == metric and str(r["seed"]) in ("", "all")]
        if not rows:
            raise ValueError(f"plot_final_comparison: no summary rows for metric {metric!r}")
        names = [str(r["policy"]) for r in rows]
        mean = np.array([float(r["mean"]) for r in rows])
        low = np.array([float(r["ci_low"]) for r in rows])
        high = np.array([float(r["ci_high"]) for r in rows])
        x = np.arange(len(rows))
        for xi, m, lo, hi, r in zip(x, mean, low, high, rows, strict=True):
            kind = str(r.get("kind", ""))
            kinds_seen[kind] = None
            ax.errorbar(
                [xi], [m], yerr=[[max(m - lo, 0.0)], [max(hi - m, 0.0)]], fmt="o", capsize=4,
                color=_KIND_COLOR.get(kind, "tab:blue"), markeredgecolor="black",
            )  # fmt: skip
        span = float(np.nanmax(high) - np.nanmin(low)) or max(abs(float(mean.mean())), 1.0)
        ax.set_ylim(float(np.nanmin(low)) - 0.1 * span, float(np.nanmax(high)) + 0.1 * span)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel(f"{metric} (mean, 95% CI)")
        ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=_KIND_COLOR.get(k, "tab:blue"),
               markeredgecolor="black", label=k or "policy")
        for k in kinds_seen
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside upper right", title="kind", fontsize="small")
    full = title
    if constant:
        full += ("\n" if full else "") + f"equal for every policy (no panel): {', '.join(constant)}"
    if full:
        fig.suptitle(full)
    return _save(fig, Path(stem))


def _n_policies(rows: Sequence[Mapping[str, Any]]) -> int:
    return len({r["policy"] for r in rows})


# ---- compare run folders -----------------------------------------------------------------
def load_train_curves(train_dir: str | Path) -> list[Curve]:
    """Curves per algorithm from ``train/<algo>__<seed>/evaluations.npz`` folders."""
    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for sub in sorted(Path(train_dir).glob("*__*")):
        npz = sub / "evaluations.npz"
        if not npz.is_file():
            continue
        algo = sub.name.rsplit("__", 1)[0]
        runs.setdefault(algo, []).append(read_evaluations(npz))
    return [build_curve(algo, r) for algo, r in runs.items()]


def render_run_plots(run_dir: str | Path, rng: np.random.Generator) -> list[Path]:
    """Draw ``learning_curves`` and ``final_comparison`` (PNG + PDF) of a compare run folder.

    Does not check completeness (``run_compare`` calls it before writing ``COMPLETE``); use
    :func:`plot_run` for finished folders.
    """
    run_dir = Path(run_dir)
    summary = read_csv(run_dir / "summary.csv")
    title = _run_title(run_dir)
    cfg = _run_config(run_dir)
    levels_path = run_dir / "curve_levels.csv"
    if levels_path.is_file():
        # Baselines measured on the very episodes of the curve points: like with like.
        refs = {r["policy"]: (float(r["mean_return"]), r["kind"]) for r in read_csv(levels_path)}
        finals = None
        n_ep = cfg.get("train_eval_episodes", "?")
        note = f", on the curve's {n_ep} episodes"
        caption = (
            f"{cfg.get('env_id', run_dir.name)}\ncurves and reference lines on the same "
            f"{n_ep} evaluation episodes\n(the oracle is optimal in expectation: on a "
            "finite sample a heuristic can score above it)"
        )
    else:  # run folders written before curve_levels.csv existed
        refs = {
            r["policy"]: (float(r["mean"]), r["kind"])
            for r in summary
            if r["metric"] == "return" and r["kind"] in ("heuristic", "oracle")
        }
        finals = {
            r["policy"]: (float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]))
            for r in summary
            if r["metric"] == "return" and r["kind"] == "agent" and r["seed"] in ("", "all")
        }
        note = ", held-out episodes"
        caption = (
            f"{cfg.get('env_id', run_dir.name)}\ncurves: {cfg.get('train_eval_episodes', '?')} "
            f"training-eval episodes per point; lines and markers: "
            f"{cfg.get('eval_episodes', '?')} held-out episodes"
        )
    curves = load_train_curves(run_dir / "train")
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    paths = plot_learning_curves(
        curves,
        run_dir / "learning_curves",
        rng,
        reference_lines=refs,
        final_points=finals,
        ylabel="mean return",
        title=caption,
        reference_note=note,
    )
    paths += plot_final_comparison(summary, metrics, run_dir / "final_comparison", title=title)
    if (run_dir / "aggregates.csv").is_file():
        paths += plot_performance_profile(run_dir, int(cfg.get("stats_seed", 0)))
    return paths


PROFILE_RESAMPLES = 200  # rliable's profile bootstrap costs ~20 ms per resample here


def plot_performance_profile(run_dir: str | Path, seed: int = 0) -> list[Path]:
    """``performance_profile.png/pdf``: rliable's performance profiles of the run's policies.

    The share of (training seed, held-out episode) scores above each threshold tau, on the
    normalized return of ``aggregates.csv`` (0 = worst heuristic, 1 = oracle), with a
    stratified-bootstrap 95 % band over seeds (:data:`PROFILE_RESAMPLES` resamples; a
    baseline has one run, so its band is its line).
    """
    from mei_envs.experiments.stats import normalize_scores, rliable_profiles, score_matrices

    run_dir = Path(run_dir)
    agg = read_csv(run_dir / "aggregates.csv")
    summary = read_csv(run_dir / "summary.csv")
    means = {
        r["policy"]: float(r["mean"])
        for r in summary
        if r["metric"] == "return" and r["seed"] in ("", "all")
    }
    scores = score_matrices(read_csv(run_dir / "episodes.csv"), "return")
    low_ref, high_ref = agg[0].get("low_ref", ""), agg[0].get("high_ref", "")
    xlabel = "return"
    if low_ref and high_ref:
        scores = normalize_scores(scores, means[low_ref], means[high_ref])
        xlabel = f"normalized return tau (0 = {low_ref}, 1 = {high_ref})"
    pooled = np.concatenate([v.ravel() for v in scores.values()])
    taus = np.linspace(float(pooled.min()), float(pooled.max()), 101)
    profiles, bands = rliable_profiles(scores, taus, seed=seed, reps=PROFILE_RESAMPLES)
    kinds = {r["policy"]: r["kind"] for r in summary}
    fig, (ax,) = _figure(1, width=7.0, height=4.5)
    for i, (pol, prof) in enumerate(profiles.items()):
        kind = kinds.get(pol, "")
        color = "black" if kind == "oracle" else f"C{i % 10}"
        ax.plot(taus, prof, color=color, linestyle=_KIND_STYLE.get(kind, "-"),
                label=f"{pol} ({kind})")  # fmt: skip
        ax.fill_between(taus, bands[pol][0], bands[pol][1], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of (seed, episode) scores > tau")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(
        f"{_run_title(run_dir)}\nperformance profiles (rliable); band: 95% stratified-bootstrap "
        "CI over training seeds",
        fontsize="small",
    )
    return _save(fig, run_dir / "performance_profile")


def _run_config(run_dir: Path) -> dict[str, Any]:
    cfg_path = run_dir / "config.yml"
    if not cfg_path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _run_title(run_dir: Path) -> str:
    cfg = _run_config(run_dir)
    if not cfg:
        return run_dir.name
    return f"{cfg.get('env_id', '')}  (held-out: {cfg.get('eval_episodes', '?')} episodes)"


def plot_run(run_dir: str | Path) -> list[Path]:
    """Re-plot a finished compare run folder in place; returns the figure paths.

    Raises:
        IncompleteRunError: the folder has no ``COMPLETE`` marker or misses outputs.
    """
    run_dir = check_run_complete(run_dir)
    rng = np.random.default_rng(int(_run_config(run_dir).get("stats_seed", 0)))
    return render_run_plots(run_dir, rng)


# ---- rl-baselines3-zoo log folders -------------------------------------------------------
_ZOO_RUN = re.compile(r"^(?P<env>.+)_(?P<n>\d+)(?:_[0-9a-fA-F-]{8,})?$")


def find_zoo_runs(log_folder: str | Path) -> dict[str, dict[str, list[Path]]]:
    """``{env: {algo: [evaluations.npz, ...]}}`` under ``<log_folder>/<algo>/<env>_<n>/``."""
    found: dict[str, dict[str, list[Path]]] = {}
    for npz in sorted(Path(log_folder).glob("*/*/evaluations.npz")):
        run, algo = npz.parent.name, npz.parent.parent.name
        m = _ZOO_RUN.match(run)
        if m is None:
            continue
        found.setdefault(m["env"], {}).setdefault(algo, []).append(npz)
    return found


def plot_zoo(log_folder: str | Path, out: str | Path | None = None, *, seed: int = 0) -> list[Path]:
    """Learning curves (mean and 95 % band over runs) per env and algo of a zoo log folder.

    Args:
        log_folder: the zoo's ``-f`` folder (``logs/``).
        out: output stem (default ``<log_folder>/learning_curves``).
        seed: seed of the bootstrap band's generator.

    Raises:
        FileNotFoundError: no ``<algo>/<env>_<n>/evaluations.npz`` below ``log_folder``.
    """
    runs = find_zoo_runs(log_folder)
    if not runs:
        raise FileNotFoundError(
            f"no rl-zoo runs (<algo>/<env>_<n>/evaluations.npz) under {str(log_folder)!r}"
        )
    rng = np.random.default_rng(seed)
    fig, axes = _figure(len(runs), width=6.0, height=4.2)
    for ax, (env, by_algo) in zip(axes, sorted(runs.items()), strict=True):
        curves = [
            build_curve(algo, [read_evaluations(p) for p in paths])
            for algo, paths in sorted(by_algo.items())
        ]
        _draw_curves(ax, curves, rng)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("mean evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    stem = Path(out) if out is not None else Path(log_folder) / "learning_curves"
    return _save(fig, stem.with_suffix("") if stem.suffix in (".png", ".pdf") else stem)
