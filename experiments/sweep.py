"""Run many training jobs in parallel: local processes or a Ray cluster.

A :class:`SweepJob` describes one ``agents.train.train`` call. :func:`grid` builds the
cartesian product of environments, env-config overrides, algorithms and seeds;
:func:`run_sweep` runs the jobs and returns their run folders in job order.

Backends:

* ``"local"``: a :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start
  method (safe with torch), ``workers`` processes. As with any spawn pool, a script that
  calls :func:`run_sweep` must do so under ``if __name__ == "__main__":``.
* ``"ray"``: ``ray.init(address=ray_address)`` (``None`` starts a local instance; ``"auto"``
  joins a running cluster), one ``ray.remote`` task per job (1 CPU each), at most
  ``workers`` in flight. Ray is imported only when this backend is chosen. If the caller
  already called ``ray.init`` (e.g. with a ``runtime_env``), that instance is used and left
  running. On a multi-node cluster every node needs this package installed and ``run_dir``
  on a shared file system.

Each job pins torch (and OpenMP/MKL) to one thread so parallel jobs do not oversubscribe
the cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

BACKENDS = ("local", "ray")
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SweepError(RuntimeError):
    """One or more jobs failed.

    Attributes:
        failures: each failed job's label -> its exception.
        results: every job's result in job order (``None`` for the failed ones).
    """

    def __init__(
        self,
        failures: Mapping[str, BaseException],
        n_jobs: int,
        results: Sequence[Any] | None = None,
    ) -> None:
        self.failures = dict(failures)
        self.results = list(results) if results is not None else [None] * n_jobs
        lines = [f"  {label}: {type(err).__name__}: {err}" for label, err in failures.items()]
        super().__init__(f"{len(failures)} of {n_jobs} job(s) failed:\n" + "\n".join(lines))


@dataclasses.dataclass
class SweepJob:
    """One training run; fields mirror ``agents.train.TrainArgs``."""

    env_id: str
    algo: str
    seed: int
    run_dir: str
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    total_timesteps: int | None = None  # None: the algorithm's YAML value for this env
    n_envs: int | None = None
    vec_env: str = "dummy"
    normalize: bool | None = None
    hyperparams_override: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_freq: int = 10_000
    eval_episodes: int = 10
    eval_seed: int = 1_000_000
    checkpoint_freq: int = 50_000
    resume: bool = False
    tensorboard: bool = True
    device: str = "cpu"
    verbose: int = 0

    @property
    def label(self) -> str:
        return f"{self.env_id}:{self.algo}:seed{self.seed}@{self.run_dir}"

    def to_train_args(self) -> Any:
        """The ``agents.train.TrainArgs`` for this job."""
        from mei_envs.agents.train import TrainArgs

        return TrainArgs(
            env_id=self.env_id,
            algo=self.algo,
            total_timesteps=self.total_timesteps,
            seed=self.seed,
            n_envs=self.n_envs,
            vec_env=self.vec_env,
            normalize=self.normalize,
            env_config=dict(self.env_config),
            hyperparams_override=dict(self.hyperparams_override),
            run_dir=self.run_dir,
            eval_freq=self.eval_freq,
            eval_episodes=self.eval_episodes,
            eval_seed=self.eval_seed,
            checkpoint_freq=self.checkpoint_freq,
            resume=self.resume,
            progress_bar=False,
            tensorboard=self.tensorboard,
            device=self.device,
            verbose=self.verbose,
        )


def env_slug(env_id: str) -> str:
    """A file-name-safe form of an env id (``mei_envs/Foo-v0`` -> ``mei_envs-Foo-v0``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", env_id.replace("/", "-")).strip("-")


def _config_tag(overrides: Mapping[str, Any]) -> str:
    if not overrides:
        return "default"
    text = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "", text)


def grid(
    envs: Sequence[str],
    algos: Sequence[str],
    seeds: Sequence[int],
    config_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
    *,
    out_dir: str | Path = "results/sweep",
    base_env_config: Mapping[str, Any] | None = None,
    **job_fields: Any,
) -> list[SweepJob]:
    """Jobs for every (env, env-config override, algo, seed), in that nesting order.

    Args:
        envs, algos, seeds: the axes.
        config_grid: env-config overrides: a mapping ``{key: [values...]}`` (cartesian
            product over keys), an explicit list of override mappings, or ``None`` (one
            job per env with ``base_env_config``).
        out_dir: parent of the run folders ``{env}__{algo}__{overrides}__s{seed}``.
        base_env_config: env config shared by all jobs (overrides win).
        **job_fields: further :class:`SweepJob` fields (``total_timesteps``, ``n_envs``...).

    Raises:
        ValueError: an empty axis or an unknown job field (named).
    """
    allowed = {f.name for f in dataclasses.fields(SweepJob)} - {
        "env_id",
        "algo",
        "seed",
        "run_dir",
        "env_config",
    }
    unknown = sorted(set(job_fields) - allowed)
    if unknown:
        raise ValueError(f"grid: unknown job field(s) {unknown}; allowed: {sorted(allowed)}")
    for name, axis in (("envs", envs), ("algos", algos), ("seeds", seeds)):
        if isinstance(axis, str) or len(axis) == 0:
            raise ValueError(f"grid: {name}={axis!r} must be a non-empty list")
    if config_grid is None:
        overrides: list[dict[str, Any]] = [{}]
    elif isinstance(config_grid, Mapping):
        keys = list(config_grid)
        for k in keys:
            if isinstance(config_grid[k], str) or not isinstance(config_grid[k], Sequence):
                raise ValueError(
                    f"grid: config_grid[{k!r}]={config_grid[k]!r} must be a list of values"
                )
        overrides = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(config_grid[k] for k in keys))
        ]
    else:
        overrides = [dict(o) for o in config_grid]
    jobs = []
    for env_id, over, algo, seed in itertools.product(envs, overrides, algos, seeds):
        name = f"{env_slug(env_id)}__{algo}__{_config_tag(over)}__s{seed}"
        jobs.append(
            SweepJob(
                env_id=env_id,
                algo=algo,
                seed=int(seed),
                run_dir=str(Path(out_dir) / name),
                env_config=dict(base_env_config or {}) | over,
                **job_fields,
            )
        )
    return jobs


# ---- workers -----------------------------------------------------------------------------
def limit_threads() -> None:
    """Pin OpenMP/MKL/torch to one thread in this process (call first thing in a worker)."""
    for var in _THREAD_ENV_VARS:
        os.environ[var] = "1"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a training dependency
        return
    torch.set_num_threads(1)


def train_job(job: SweepJob) -> Path:
    """Run one job in this process (what every backend's worker calls)."""
    limit_threads()
    from mei_envs.agents.train import train

    return Path(train(job.to_train_args()))


def _call_single_threaded(fn: Callable[[Any], Any], item: Any) -> Any:
    limit_threads()
    return fn(item)


def map_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    backend: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    labels: Sequence[str] | None = None,
) -> list[Any]:
    """``[fn(item) for item in items]`` in parallel workers (each limited to one thread).

    ``fn`` must be importable by name (a module-level function) so spawned processes and
    Ray workers can load it. All items run even if some fail; then :class:`SweepError`
    names every failure.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {list(BACKENDS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    items = list(items)
    labels = list(labels) if labels is not None else [f"task {i}" for i in range(len(items))]
    if len(labels) != len(items):
        raise ValueError(f"labels: got {len(labels)} for {len(items)} items")
    if not items:
        return []
    if backend == "local":
        return _map_local(fn, items, workers, labels)
    return _map_ray(fn, items, workers, ray_address, labels)


def _map_local(
    fn: Callable[[Any], Any], items: list[Any], workers: int, labels: list[str]
) -> list[Any]:
    results: list[Any] = [None] * len(items)
    failures: dict[str, BaseException] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
        futures = {pool.submit(_call_single_threaded, fn, it): i for i, it in enumerate(items)}
        for fut, i in futures.items():
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported together below
                failures[labels[i]] = exc
    if failures:
        raise SweepError(failures, len(items), results)
    return results


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "backend='ray' needs Ray: pip install 'ray[default]' (or mei-envs[ray])"
        ) from exc
    return ray


def _map_ray(
    fn: Callable[[Any], Any],
    items: list[Any],
    workers: int,
    ray_address: str | None,
    labels: list[str],
) -> list[Any]:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if ray_address is None:  # a fresh local instance: no dashboard, quiet workers
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=ray_address)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_call_single_threaded)
        results: list[Any] = [None] * len(items)
        failures: dict[str, BaseException] = {}
        pending: dict[Any, int] = {}
        queue = iter(enumerate(items))

        def _submit_next() -> None:
            nxt = next(queue, None)
            if nxt is not None:
                pending[remote.remote(fn, nxt[1])] = nxt[0]

        for _ in range(workers):
            _submit_next()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - reported together below
                    failures[labels[i]] = getattr(exc, "cause", None) or exc
                _submit_next()
        if failures:
            raise SweepError(failures, len(items), results)
        return results
    finally:
        if started_here:
            ray.shutdown()


def _check_env_configs(jobs: Sequence[SweepJob]) -> None:
    """Build each distinct (env id, env config) once here, so a bad key fails before any job."""
    from mei_envs.baselines.evaluation import make_env

    seen: set[str] = set()
    for job in jobs:
        key = repr((job.env_id, sorted(job.env_config.items())))
        if key not in seen:
            seen.add(key)
            make_env(job.env_id, job.env_config).close()


def run_sweep(
    jobs: Iterable[SweepJob],
    backend: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
) -> list[Path]:
    """Train every job; return the run folders in job order.

    Raises:
        ValueError: unknown backend (named with the allowed ones), bad ``workers``, two
            jobs writing to the same run folder, or an invalid env config (``ConfigError``,
            raised before any job starts).
        ImportError: ``backend="ray"`` without Ray installed.
        SweepError: after all jobs ran, if any failed (each failure named).
    """
    jobs = list(jobs)
    dirs = [str(Path(j.run_dir).resolve()) for j in jobs]
    dupes = sorted({d for d in dirs if dirs.count(d) > 1})
    if dupes:
        raise ValueError(f"run_sweep: several jobs share run_dir {dupes}")
    if backend in BACKENDS:
        _check_env_configs(jobs)
    return map_tasks(
        train_job,
        jobs,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        labels=[j.label for j in jobs],
    )


__all__ = [
    "BACKENDS",
    "SweepError",
    "SweepJob",
    "env_slug",
    "grid",
    "limit_threads",
    "map_tasks",
    "run_sweep",
    "train_job",
]
