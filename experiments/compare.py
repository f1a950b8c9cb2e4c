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
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mei_envs.agents.args import VEC_ENV_CHOICES
from mei_envs.config import Config, ConfigError
from mei_envs.experiments.io import (
    mark_complete,
    slug,
    write_csv_atomic,
    write_manifest,
    write_text_atomic,
    write_yaml_atomic,
)
from mei_envs.experiments.stats import summarize
from mei_envs.experiments.sweep import BACKENDS, SweepJob, map_tasks, prepare_resume

_MAX_N_ENVS_ASSUMED = 64  # upper bound on training envs per run when n_envs comes from YAML


class CompareConfigError(ConfigError):
    """A CompareConfig key or value is invalid; the message names it."""


@dataclasses.dataclass(frozen=True)
class CompareConfig(Config):
    """Settings of one comparison run (all plain values, so it round-trips through YAML).

    Built and validated like an env config (:class:`mei_envs.config.Config`): unknown keys
    are named, values are coerced by their annotation (numpy scalars and YAML ``1e5`` accepted).
    """

    SEQUENCE_TYPE: ClassVar[type] = list
    ERROR: ClassVar[type[ValueError]] = CompareConfigError

    env_id: str = "mei_envs/EarlyExitUpload-v1"
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    algos: list[str] = dataclasses.field(default_factory=lambda: ["ppo"])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    total_timesteps: int | None = None  # None: each algo's YAML n_timesteps for this env
    n_envs: int | None = None  # None: each algo's YAML n_envs
    # Training envs: "auto" (the env's native vector version where it registers one, else
    # DummyVecEnv), "native", "dummy" or "subproc"; native and dummy give the same rollouts.
    vec_env: str = "auto"
    hyperparams_override: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Observation hint (mei_envs.agents.hint): a registered heuristic whose advice (one-hot of
    # its action, its keep set) every agent observes beside the env's observation; null: none.
    # Training then uses DummyVecEnv under vec_env "auto" (the native vector env takes no
    # per-env wrapper).
    obs_hint: str | None = None
    obs_hint_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    obs_hint_features: str = "action,keep"
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
    checkpoint_freq: int = 50_000  # env steps between checkpoints (what --resume continues)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> CompareConfig:
        """Load a YAML mapping of CompareConfig fields (plus overrides).

        Raises:
            FileNotFoundError: no such file.
            CompareConfigError: not YAML, not a mapping, or an invalid key or value (named).
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"compare config {str(path)!r}: no such file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CompareConfigError(f"{str(path)!r}: not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise CompareConfigError(f"{str(path)!r}: expected a mapping of CompareConfig keys")
        return cls.from_dict(data, **overrides)

    # ---- validation ---------------------------------------------------------------------
    def _fail(self, name: str, must: str) -> typing.NoReturn:
        raise CompareConfigError(f"CompareConfig.{name}={getattr(self, name)!r}: {must}")

    def validate(self) -> None:
        """Check every field; raise :class:`CompareConfigError` naming the first bad one."""
        import mei_envs

        if self.env_id not in mei_envs.ENV_IDS:
            self._fail("env_id", f"must be one of {list(mei_envs.ENV_IDS)}")
        if not self.algos:
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
        if not self.seeds or any(s < 0 for s in self.seeds):
            self._fail("seeds", "must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "must not repeat a seed")
        for name in ("total_timesteps", "n_envs"):
            if getattr(self, name) is not None:
                self._check_range(name, 1, integer=True)
        for name, lo in (
            ("eval_freq", 1),
            ("train_eval_episodes", 1),
            ("train_eval_seed", 0),
            ("eval_episodes", 1),
            ("eval_seed", 0),
            ("workers", 1),
            ("stats_seed", 0),
            ("bootstrap_resamples", 100),
            ("checkpoint_freq", 0),
        ):
            self._check_range(name, lo, integer=True)
        self._check_range("confidence", 0.0, 1.0, lo_open=True, hi_open=True)
        if isinstance(self.baselines, str):
            if self.baselines not in ("all", "none"):
                self._fail("baselines", "must be 'all', 'none' or a list of policy names")
        self._check_choice("backend", BACKENDS)
        self._check_choice("vec_env", VEC_ENV_CHOICES)
        if self.obs_hint is not None:
            if self.vec_env == "native":
                self._fail("vec_env", "'native' cannot carry obs_hint; use 'auto' or 'dummy'")
            from mei_envs.agents.args import hint_features
            from mei_envs.agents.hint import check_hint

            try:
                check_hint(
                    self.env_id,
                    self.obs_hint,
                    self.obs_hint_params,
                    hint_features(self.obs_hint_features),
                )
            except ValueError as exc:
                raise CompareConfigError(f"CompareConfig.{exc}") from None
        for name in ("out_dir", "device"):
            if not getattr(self, name):
                self._fail(name, "must be a non-empty string")
        if self.run_name is not None and not self.run_name:
            self._fail("run_name", "must be a non-empty string or null")
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

        folder = files("mei_envs.agents") / "hyperparams"
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
    base = Path(cfg.out_dir) / f"{slug(cfg.env_id)}__{slug(name)}__{stamp}"
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}_{k}")


def _expected_outputs(cfg: CompareConfig, aggregates: bool = True) -> list[str]:
    files = ["config.yml", "episodes.csv", "summary.csv", "summary.md", "curve_levels.csv"]
    if cfg.baselines != "none" and aggregates:
        files += ["aggregates.csv", "aggregates.md", "improvement.csv"]
        files += ["performance_profile.png", "performance_profile.pdf"]
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


def _train_jobs(cfg: CompareConfig, run_dir: Path) -> list[SweepJob]:
    """One training job per (algo, seed), in that order, into ``run_dir/train/<algo>__<seed>``."""
    return [
        SweepJob.of(
            env_id=cfg.env_id,
            algo=algo,
            seed=seed,
            run_dir=str(run_dir / "train" / f"{algo}__{seed}"),
            env_config=dict(cfg.env_config),
            total_timesteps=cfg.total_timesteps,
            n_envs=cfg.n_envs,
            vec_env=cfg.vec_env,
            hyperparams_override=dict(cfg.hyperparams_override.get(algo, {})),
            obs_hint=cfg.obs_hint,
            obs_hint_params=dict(cfg.obs_hint_params),
            obs_hint_features=cfg.obs_hint_features,
            eval_freq=cfg.eval_freq,
            eval_episodes=cfg.train_eval_episodes,
            eval_seed=cfg.train_eval_seed,
            checkpoint_freq=cfg.checkpoint_freq,
            tensorboard=cfg.tensorboard,
            device=cfg.device,
        )
        for algo in cfg.algos
        for seed in cfg.seeds
    ]


def check_compare(cfg: CompareConfig) -> list[Any]:
    """Every check that can run before a compare starts; returns the baseline specs.

    The env config builds; each algorithm fits the env's action space (e.g. ``algos: [sac]``
    on a discrete env is refused here); ``hyperparams_override`` names only real
    hyperparameters of its algorithm; the baselines exist; the training stack is installed.

    Raises:
        CompareConfigError: naming the field (``algos``, ``hyperparams_override``, ...).
        ModuleNotFoundError: torch/SB3 or another needed package is missing.
    """
    cfg.validate()
    from mei_envs.agents.algos import check_algo_for_env
    from mei_envs.agents.hyperparameters import check_hyperparam_keys
    from mei_envs.baselines.evaluation import make_env

    env = make_env(cfg.env_id, cfg.env_config)  # fails on a bad env_config, naming the key
    try:
        for algo in cfg.algos:
            try:
                check_algo_for_env(algo, env)
            except ValueError as exc:
                raise CompareConfigError(f"CompareConfig.algos: {exc}") from None
    finally:
        env.close()
    for algo, override in cfg.hyperparams_override.items():
        try:
            check_hyperparam_keys(algo, override)
        except ValueError as exc:
            raise CompareConfigError(
                f"CompareConfig.hyperparams_override[{algo!r}]: {exc}"
            ) from None
    import matplotlib  # noqa: F401  (the figures need it: fail now, not after the training)
    import scipy  # noqa: F401

    return _select_baselines(cfg)


def _interrupted(run_dir: Path) -> KeyboardInterrupt:
    exc = KeyboardInterrupt()
    exc.hint = (  # type: ignore[attr-defined]
        f"finished trainings are kept in {run_dir}; continue with: "
        f"mei-envs compare --resume {run_dir}"
    )
    return exc


def resume_compare(run_dir: str | Path, *, quiet: bool = False) -> Path:
    """Finish an interrupted compare run folder (``mei-envs compare --resume RUN_DIR``).

    Uses the folder's own ``config.yml``. Finished trainings (``COMPLETE``) are reused
    untouched; interrupted ones continue from their last checkpoint to their exact budget
    (their progress.csv and monitor files trimmed to the checkpoint); trainings without a
    checkpoint start over. Evaluation and the summary are deterministic, so they are
    recomputed. A complete folder is returned as it is.

    Raises:
        FileNotFoundError: ``run_dir`` or its config.yml is missing.
        CompareConfigError: its config.yml is invalid.
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "config.yml").is_file():
        raise FileNotFoundError(
            f"--resume {str(run_dir)!r}: no config.yml (not a compare run folder)"
        )
    cfg = CompareConfig.from_yaml(run_dir / "config.yml")
    if (run_dir / "COMPLETE").is_file():
        if not quiet:
            print(f"{run_dir} is complete; nothing to resume")
        return run_dir
    return run_compare(cfg, quiet=quiet, _resume_dir=run_dir)


def run_compare(
    cfg: CompareConfig, *, quiet: bool = False, _resume_dir: Path | None = None
) -> Path:
    """Train every (algo, seed), evaluate agents and baselines on the held-out seeds, report.

    Everything that can be checked is checked before the run folder is created
    (:func:`check_compare`). Progress: one line per training job every ~10 s (steps, rate,
    ETA). Ctrl-C stops the workers at once; the ``KeyboardInterrupt`` carries a ``hint``
    naming the folder and the resume command (:func:`resume_compare`).

    Returns:
        The run folder (complete: ``COMPLETE`` is written last).

    Raises:
        CompareConfigError: an invalid config, algorithm/env mismatch, unknown
            hyperparameter or unknown baseline name.
        SweepError: a training or evaluation task failed (the run folder stays incomplete).
    """
    specs = check_compare(cfg)
    from mei_envs.experiments.stats import rliable_problem

    no_rliable = rliable_problem()
    if no_rliable and not quiet:
        print(f"compare: warning: no rliable aggregates: {no_rliable}", file=sys.stderr)
    if _resume_dir is None:
        run_dir = new_run_dir(cfg).resolve()
        expected = _expected_outputs(cfg, aggregates=no_rliable is None)
        write_manifest(run_dir, expected, {"kind": "compare", "env_id": cfg.env_id})
        write_yaml_atomic(run_dir / "config.yml", cfg.to_dict())
    else:
        run_dir = _resume_dir
    t0 = time.perf_counter()

    def _log(msg: str) -> None:
        if not quiet:
            print(f"[compare {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    try:
        return _run(
            cfg, run_dir, specs, _log, quiet, resume=_resume_dir is not None,
            aggregates=no_rliable is None,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise _interrupted(run_dir) from None


def _run(
    cfg: CompareConfig,
    run_dir: Path,
    specs: list[Any],
    _log: Any,
    quiet: bool,
    *,
    resume: bool,
    aggregates: bool,
) -> Path:
    # Agent tasks first (longest), then the baselines fill idle workers.
    tasks, labels, owners = [], [], []
    for job in _train_jobs(cfg, run_dir):
        if resume:
            job = prepare_resume(job)
        tasks.append(_task(cfg, "", job))
        labels.append(f"train+eval {job.args.algo} seed {job.args.seed}")
        owners.append((job.args.algo, "agent", job.args.algo, job.args.seed))
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
        + (" (resumed)" if resume else "")
    )
    results = map_tasks(
        _run_task,
        tasks,
        backend=cfg.backend,
        workers=cfg.workers,
        ray_address=cfg.ray_address,
        labels=labels,
        progress=None if quiet else _progress_printer(_log),
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
    if specs and aggregates:
        write_rliable_aggregates(run_dir, cfg, episodes, summary)

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


def write_rliable_aggregates(
    run_dir: Path,
    cfg: CompareConfig,
    episodes: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
) -> None:
    """``aggregates.csv``/``.md``: rliable's IQM, mean, optimality gap (normalized return, with
    stratified-bootstrap CIs over training seeds and held-out episodes) and each agent's
    probability of improvement over each baseline."""
    from mei_envs.experiments.stats import (
        normalize_scores,
        rliable_aggregates,
        rliable_improvement,
        score_matrices,
        score_references,
    )

    low_name, low, high_name, high = score_references(summary)
    raw = score_matrices(episodes, "return")
    if high > low:
        scores = normalize_scores(raw, low, high)
        scale = (
            f"Normalized return: 0 = {low_name} (worst heuristic, mean {_fmt(low)}), 1 = "
            f"{high_name} (mean {_fmt(high)})."
        )
    else:  # one baseline level only: nothing to normalize by
        scores, low_name, high_name = raw, "", ""
        scale = "Raw return (the baselines have one level only: no normalization)."
    kw = {"seed": cfg.stats_seed, "reps": cfg.bootstrap_resamples, "confidence": cfg.confidence}
    rows = [
        r | {"low_ref": low_name, "high_ref": high_name} for r in rliable_aggregates(scores, **kw)
    ]
    kinds = {str(e["policy"]): str(e["kind"]) for e in episodes}
    pairs = [(a, b) for a in scores if kinds[a] == "agent" for b in scores if kinds[b] != "agent"]
    better = rliable_improvement(scores, pairs)
    write_csv_atomic(run_dir / "aggregates.csv", rows)
    write_csv_atomic(run_dir / "improvement.csv", better)
    lines = [
        f"# {cfg.env_id}: rliable aggregates",
        "",
        f"{scale} Runs = training seeds (1 for a baseline), tasks = "
        f"the {cfg.eval_episodes} held-out episodes; {cfg.confidence:.0%} stratified-bootstrap "
        f"CIs over runs and tasks ({cfg.bootstrap_resamples} resamples, rliable). Optimality "
        "gap: mean shortfall below 1 (lower is better).",
        "",
        "| policy | IQM | CI | mean | CI | optimality gap | CI |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    by_pol: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by_pol.setdefault(r["policy"], {})[r["aggregate"]] = r
    for pol, agg in by_pol.items():
        cells = [
            f"{_fmt(agg[k]['value'])} | [{_fmt(agg[k]['ci_low'])}, {_fmt(agg[k]['ci_high'])}]"
            for k in ("IQM", "mean", "optimality_gap")
        ]
        lines.append(f"| {pol} | " + " | ".join(cells) + " |")
    if better:
        lines += [
            "",
            "Probability of improvement P(agent > baseline) on a held-out episode (rliable; "
            "point estimates: its bootstrap over every episode is too slow to run here):",
            "",
            "| agent | baseline | P |",
            "|---|---|---:|",
        ]
        lines += [f"| {b['policy']} | {b['versus']} | {b['probability']:.3f} |" for b in better]
    write_text_atomic(run_dir / "aggregates.md", "\n".join(lines) + "\n")


def _progress_printer(log: Any) -> Any:
    from mei_envs.experiments.sweep import progress_line

    return lambda *report: log(progress_line(*report))


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
