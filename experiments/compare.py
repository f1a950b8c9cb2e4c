"""Train RL agents and compare them with every baseline and oracle on the same held-out seeds.

One call of :func:`run_compare` produces one self-contained run folder::

    results/compare/{env_slug}__{name}__{timestamp}/
        MANIFEST.json          outputs this run will produce (written first)
        config.yml             the exact CompareConfig
        train/<algo>__<seed>/  agents.train run folders (model.zip, evaluations.npz, ...)
        episodes.csv           one row per (policy, training seed, held-out episode)
        summary.csv/.md        mean, std, IQM, 95 % bootstrap CIs per policy and metric
        learning_curves.png/.pdf
        final_comparison.png/.pdf
        COMPLETE               written last

Seeds: agents train on env seeds ``seed .. seed + n_envs - 1``; the trainer's periodic
evaluation uses ``train_eval_seed``; the held-out comparison resets episode ``i`` with
``eval_seed + i`` for *every* policy. :meth:`CompareConfig.validate` checks the three ranges
are disjoint.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mei_envs.experiments.io import (
    mark_complete,
    write_csv_atomic,
    write_manifest,
    write_text_atomic,
    write_yaml_atomic,
)
from mei_envs.experiments.stats import summarize
from mei_envs.experiments.sweep import BACKENDS, SweepJob, env_slug, map_tasks

_MAX_N_ENVS_ASSUMED = 64  # upper bound on training envs per run when n_envs comes from YAML


class CompareConfigError(ValueError):
    """A CompareConfig key or value is invalid; the message names it."""


@dataclasses.dataclass
class CompareConfig:
    """Settings of one comparison run (all plain values, so it round-trips through YAML)."""

    env_id: str = "mei_envs/EarlyExitUpload-v0"
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    algos: list[str] = dataclasses.field(default_factory=lambda: ["ppo"])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    total_timesteps: int | None = None  # None: each algo's YAML n_timesteps for this env
    n_envs: int | None = None  # None: each algo's YAML n_envs
    hyperparams_override: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    eval_freq: int = 10_000  # env steps between training-time evaluations
    train_eval_episodes: int = 30  # episodes per training-time evaluation
    train_eval_seed: int = 1_000_000  # seed of the training-time evaluation env
    eval_episodes: int = 100  # held-out episodes per policy (and per training seed)
    eval_seed: int = 100_000  # held-out episode i uses seed eval_seed + i
    baselines: str | list[str] = "all"  # "all", "none" or a list of registered names
    backend: str = "local"
    workers: int = 2
    ray_address: str | None = None
    out_dir: str = "results/compare"
    run_name: str | None = None
    tensorboard: bool = False
    device: str = "cpu"
    stats_seed: int = 0  # seed of the bootstrap generator
    bootstrap_resamples: int = 2000
    confidence: float = 0.95

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> CompareConfig:
        """A validated config from a mapping plus overrides; unknown keys are named."""
        merged = dict(values or {}) | overrides
        unknown = sorted(set(merged) - set(cls.field_names()))
        if unknown:
            raise CompareConfigError(
                f"CompareConfig: unknown key(s) {unknown}; allowed keys are "
                f"{sorted(cls.field_names())}"
            )
        cfg = cls(**merged)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> CompareConfig:
        """Load a YAML mapping of CompareConfig fields (plus overrides)."""
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise CompareConfigError(f"{str(path)!r}: expected a mapping of CompareConfig keys")
        return cls.from_dict(data, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> CompareConfig:
        return self.from_dict(self.to_dict(), **changes)

    # ---- validation ---------------------------------------------------------------------
    def _fail(self, name: str, must: str) -> typing.NoReturn:
        raise CompareConfigError(f"CompareConfig.{name}={getattr(self, name)!r}: {must}")

    def _int(self, name: str, lo: int, *, optional: bool = False) -> None:
        v = getattr(self, name)
        if optional and v is None:
            return
        if isinstance(v, float) and v.is_integer():
            setattr(self, name, v := int(v))  # YAML 1e5 -> 100000
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            self._fail(name, f"must be an integer >= {lo}" + (" or null" if optional else ""))

    def validate(self) -> None:
        """Check every field; raise :class:`CompareConfigError` naming the first bad one."""
        import mei_envs

        if self.env_id not in mei_envs.ENV_IDS:
            self._fail("env_id", f"must be one of {list(mei_envs.ENV_IDS)}")
        for name in ("env_config", "hyperparams_override"):
            if not isinstance(getattr(self, name), dict):
                self._fail(name, "must be a mapping")
        if isinstance(self.algos, str) or not isinstance(self.algos, list) or not self.algos:
            self._fail("algos", "must be a non-empty list of algorithm names")
        known = _known_algos()
        for algo in self.algos:
            if known and algo not in known:
                self._fail("algos", f"{algo!r} is not one of {sorted(known)}")
        if len(set(self.algos)) != len(self.algos):
            self._fail("algos", "must not repeat a name")
        bad_over = sorted(set(self.hyperparams_override) - set(self.algos))
        if bad_over:
            self._fail("hyperparams_override", f"keys {bad_over} are not in algos {self.algos}")
        if not all(isinstance(v, dict) for v in self.hyperparams_override.values()):
            self._fail("hyperparams_override", "must map algo name -> mapping of hyperparameters")
        if not isinstance(self.seeds, list) or not self.seeds:
            self._fail("seeds", "must be a non-empty list of integers >= 0")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            self._fail("seeds", "must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "must not repeat a seed")
        self._int("total_timesteps", 1, optional=True)
        self._int("n_envs", 1, optional=True)
        self._int("eval_freq", 1)
        self._int("train_eval_episodes", 1)
        self._int("train_eval_seed", 0)
        self._int("eval_episodes", 1)
        self._int("eval_seed", 0)
        self._int("workers", 1)
        self._int("stats_seed", 0)
        self._int("bootstrap_resamples", 100)
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)):
            self._fail("confidence", "must be a number in (0, 1)")
        if not 0.0 < self.confidence < 1.0:
            self._fail("confidence", "must be a number in (0, 1)")
        if isinstance(self.baselines, str):
            if self.baselines not in ("all", "none"):
                self._fail("baselines", "must be 'all', 'none' or a list of policy names")
        elif not isinstance(self.baselines, list) or not all(
            isinstance(b, str) for b in self.baselines
        ):
            self._fail("baselines", "must be 'all', 'none' or a list of policy names")
        if self.backend not in BACKENDS:
            self._fail("backend", f"must be one of {list(BACKENDS)}")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            self._fail("ray_address", "must be a string (e.g. 'auto', 'ray://host:10001') or null")
        for name in ("out_dir", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                self._fail(name, "must be a non-empty string")
        if self.run_name is not None and (not isinstance(self.run_name, str) or not self.run_name):
            self._fail("run_name", "must be a non-empty string or null")
        if not isinstance(self.tensorboard, bool):
            self._fail("tensorboard", "must be true or false")
        self._check_seed_ranges()

    def _check_seed_ranges(self) -> None:
        n_envs = self.n_envs or _MAX_N_ENVS_ASSUMED
        ranges = {
            "seeds (training envs)": (min(self.seeds), max(self.seeds) + n_envs),
            "train_eval_seed": (self.train_eval_seed, self.train_eval_seed + _MAX_N_ENVS_ASSUMED),
        }
        held = (self.eval_seed, self.eval_seed + self.eval_episodes)
        for what, (lo, hi) in ranges.items():
            if held[0] < hi and lo < held[1]:
                self._fail(
                    "eval_seed",
                    f"held-out seeds [{held[0]}, {held[1]}) overlap {what} [{lo}, {hi}); "
                    "choose eval_seed so the ranges are disjoint",
                )


def _known_algos() -> set[str]:
    """Algorithm names with a hyperparameter file in ``agents/hyperparams`` (no torch import)."""
    try:
        from importlib.resources import files

        folder = files("agents") / "hyperparams"
        return {p.name[: -len(".yml")] for p in folder.iterdir() if p.name.endswith(".yml")}
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return set()


# ---- worker tasks (module level so spawned processes and Ray can import them) -------------
@dataclasses.dataclass
class _EvalTask:
    env_id: str
    policy: str  # registered name or model.zip path
    episodes: int
    seed: int
    env_config: dict[str, Any]
    train_job: SweepJob | None = None  # train first, then evaluate run_dir/model.zip


def _run_task(task: _EvalTask) -> tuple[Path | None, Any]:
    """Optionally train, then evaluate on the held-out seeds: ``(run_dir, EpisodeResults)``."""
    from mei_envs.baselines.evaluation import run_episodes

    policy, run_dir = task.policy, None
    if task.train_job is not None:
        from mei_envs.experiments.sweep import train_job

        run_dir = train_job(task.train_job)
        policy = str(Path(run_dir) / "model.zip")
    res = run_episodes(
        task.env_id, policy, episodes=task.episodes, seed=task.seed, env_config=task.env_config
    )
    return run_dir, res


# ---- the comparison ---------------------------------------------------------------------
def _select_baselines(cfg: CompareConfig) -> list[Any]:
    from mei_envs.baselines.registry import list_policies

    specs = list_policies(cfg.env_id)[cfg.env_id]
    if cfg.baselines == "all":
        return specs
    if cfg.baselines == "none":
        return []
    by_name = {s.name: s for s in specs}
    unknown = [b for b in cfg.baselines if b not in by_name]
    if unknown:
        raise CompareConfigError(
            f"CompareConfig.baselines: unknown policies {unknown} for {cfg.env_id}; "
            f"registered: {sorted(by_name)}"
        )
    return [by_name[b] for b in cfg.baselines]


def new_run_dir(cfg: CompareConfig) -> Path:
    """A fresh ``{out_dir}/{env_slug}__{name}__{timestamp}`` folder (suffixed if taken)."""
    name = cfg.run_name or "-".join(cfg.algos)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.out_dir) / f"{env_slug(cfg.env_id)}__{env_slug(name)}__{stamp}"
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}_{k}")


def _expected_outputs(cfg: CompareConfig) -> list[str]:
    files = ["config.yml", "episodes.csv", "summary.csv", "summary.md", "curve_levels.csv"]
    files += [
        f"{stem}.{ext}"
        for stem in ("learning_curves", "final_comparison")
        for ext in ("png", "pdf")
    ]
    for algo in cfg.algos:
        for seed in cfg.seeds:
            files += [f"train/{algo}__{seed}/{f}" for f in ("model.zip", "evaluations.npz")]
    return files


def _episode_rows(
    res: Any, policy: str, kind: str, algo: str, train_seed: int | str
) -> list[dict[str, Any]]:
    rows = []
    for i, ep_seed in enumerate(res.seeds):
        row = {
            "policy": policy,
            "kind": kind,
            "algo": algo,
            "train_seed": train_seed,
            "episode": i,
            "episode_seed": ep_seed,
            "return": float(res.returns[i]),
            "length": int(res.lengths[i]),
        }
        row |= {k: float(v[i]) for k, v in res.metrics.items()}
        rows.append(row)
    return rows


def _fmt(x: Any) -> str:
    x = float(x)
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def summary_markdown(cfg: CompareConfig, rows: Sequence[Mapping[str, Any]]) -> str:
    """``summary.md``: one table per metric."""
    lines = [
        f"# {cfg.env_id}: trained agents vs baselines",
        "",
        f"Held-out evaluation: {cfg.eval_episodes} episodes per policy, episode seeds "
        f"{cfg.eval_seed}..{cfg.eval_seed + cfg.eval_episodes - 1} (same for every policy). "
        f"Agents: {', '.join(cfg.algos)}, training seeds {cfg.seeds}; the `all` row pools "
        f"every training seed. IQM = 25% trimmed mean. CI = {cfg.confidence:.0%} percentile "
        "bootstrap of the mean (two-level over training seeds, then episodes, for agents).",
        "",
    ]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for metric in metrics:
        lines += [
            f"## {metric}",
            "",
            "| policy | kind | seed | n | mean | std | IQM | CI low | CI high |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r["metric"] != metric:
                continue
            lines.append(
                f"| {r['policy']} | {r['kind']} | {r['seed']} | {r['n']} | {_fmt(r['mean'])} | "
                f"{_fmt(r['std'])} | {_fmt(r['iqm'])} | {_fmt(r['ci_low'])} | "
                f"{_fmt(r['ci_high'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def run_compare(cfg: CompareConfig, *, quiet: bool = False) -> Path:
    """Train every (algo, seed), evaluate agents and baselines on the held-out seeds, report.

    Returns:
        The run folder (complete: ``COMPLETE`` is written last).

    Raises:
        CompareConfigError: an invalid config or unknown baseline name.
        SweepError: a training or evaluation task failed (the run folder stays incomplete).
    """
    cfg.validate()
    from mei_envs.baselines.evaluation import make_env

    make_env(cfg.env_id, cfg.env_config).close()  # fail fast on a bad env_config
    specs = _select_baselines(cfg)
    run_dir = new_run_dir(cfg).resolve()
    write_manifest(run_dir, _expected_outputs(cfg), {"kind": "compare", "env_id": cfg.env_id})
    write_yaml_atomic(run_dir / "config.yml", cfg.to_dict())
    t0 = time.perf_counter()

    def _log(msg: str) -> None:
        if not quiet:
            print(f"[compare {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    # Agent tasks first (longest), then the baselines fill idle workers.
    tasks, labels, owners = [], [], []
    for algo in cfg.algos:
        for seed in cfg.seeds:
            job = SweepJob(
                env_id=cfg.env_id,
                algo=algo,
                seed=seed,
                run_dir=str(run_dir / "train" / f"{algo}__{seed}"),
                env_config=dict(cfg.env_config),
                total_timesteps=cfg.total_timesteps,
                n_envs=cfg.n_envs,
                hyperparams_override=dict(cfg.hyperparams_override.get(algo, {})),
                eval_freq=cfg.eval_freq,
                eval_episodes=cfg.train_eval_episodes,
                eval_seed=cfg.train_eval_seed,
                tensorboard=cfg.tensorboard,
                device=cfg.device,
            )
            tasks.append(_task(cfg, "", job))
            labels.append(f"train+eval {algo} seed {seed}")
            owners.append((algo, "agent", algo, seed))
    for spec in specs:
        tasks.append(_task(cfg, spec.name, None))
        labels.append(f"eval {spec.name}")
        owners.append((spec.name, spec.kind, "", ""))
    # The same baselines on the trainer's evaluation episodes: the learning curves' reference
    # lines must come from the episodes the curve points were measured on.
    n_main = len(tasks)
    for spec in specs:
        tasks.append(
            _EvalTask(
                env_id=cfg.env_id,
                policy=spec.name,
                episodes=cfg.train_eval_episodes,
                seed=cfg.train_eval_seed,
                env_config=dict(cfg.env_config),
            )
        )
        labels.append(f"eval {spec.name} on training-eval episodes")
    _log(
        f"{len(cfg.algos) * len(cfg.seeds)} training run(s) and {len(specs)} baseline(s) on "
        f"{cfg.backend} backend, {cfg.workers} worker(s); run folder {run_dir}"
    )
    results = map_tasks(
        _run_task,
        tasks,
        backend=cfg.backend,
        workers=cfg.workers,
        ray_address=cfg.ray_address,
        labels=labels,
    )
    _log("training and held-out evaluation done")
    results, curve_results = results[:n_main], results[n_main:]
    write_csv_atomic(
        run_dir / "curve_levels.csv",
        [
            {
                "policy": spec.name,
                "kind": spec.kind,
                "mean_return": float(res.returns.mean()),
                "episodes": cfg.train_eval_episodes,
                "first_seed": cfg.train_eval_seed,
            }
            for spec, (_, res) in zip(specs, curve_results, strict=True)
        ],
        fieldnames=["policy", "kind", "mean_return", "episodes", "first_seed"],
    )

    order = {"agent": 0, "heuristic": 1, "oracle": 2}
    episodes: list[dict[str, Any]] = []
    for (policy, kind, algo, seed), (_, res) in sorted(
        zip(owners, results, strict=True), key=lambda x: order.get(x[0][1], 3)
    ):
        episodes += _episode_rows(res, policy, kind, algo, seed)
    write_csv_atomic(run_dir / "episodes.csv", episodes)

    metric_names = ["return", *results[0][1].metrics] if results else ["return"]
    rng = np.random.default_rng(cfg.stats_seed)
    summary = summarize(
        episodes,
        metric_names,
        rng,
        confidence=cfg.confidence,
        n_resamples=cfg.bootstrap_resamples,
    )
    write_csv_atomic(run_dir / "summary.csv", summary)
    write_text_atomic(run_dir / "summary.md", summary_markdown(cfg, summary))

    from mei_envs.experiments.plot import render_run_plots

    render_run_plots(run_dir, rng)
    mark_complete(run_dir)
    _log("summary and figures written")
    if not quiet:
        print(_console_table(summary))
        print(f"Results: {run_dir}")
        print(f"  summary:  {run_dir / 'summary.md'}")
        print(f"  figures:  {run_dir / 'learning_curves.png'}, {run_dir / 'final_comparison.png'}")
    return run_dir


def _task(cfg: CompareConfig, policy: str, job: SweepJob | None) -> _EvalTask:
    return _EvalTask(
        env_id=cfg.env_id,
        policy=policy,
        episodes=cfg.eval_episodes,
        seed=cfg.eval_seed,
        env_config=dict(cfg.env_config),
        train_job=job,
    )


def _console_table(rows: Sequence[Mapping[str, Any]]) -> str:
    out = [f"{'policy':<22}{'kind':<11}{'seed':<6}{'mean return':>14}{'IQM':>12}   95% CI"]
    for r in rows:
        if r["metric"] != "return":
            continue
        out.append(
            f"{r['policy']:<22}{r['kind']:<11}{r['seed']!s:<6}{_fmt(r['mean']):>14}"
            f"{_fmt(r['iqm']):>12}   [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        )
    return "\n".join(out)
