"""Run many training jobs in parallel: local processes or a Ray cluster.

A :class:`SweepJob` holds the ``TrainArgs`` of one ``agents.train.train`` call. :func:`grid`
builds the cartesian product of environments, env-config overrides, algorithms and seeds;
:func:`run_sweep` runs the jobs and returns their run folders in job order.
``run_sweep(..., resume=True)`` (``mei-envs sweep --resume``) reuses finished run folders
as they are and continues interrupted ones from their last checkpoint
(:func:`prepare_resume`).

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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from mei_envs.agents.args import TrainArgs
from mei_envs.experiments.io import slug

env_slug = slug  # the one run-name slug (kept under its old name)
BACKENDS = ("local", "ray")
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SweepError(RuntimeError):
    """One or more jobs failed (the CLI exits with :attr:`exit_code` 1).

    Attributes:
        failures: each failed job's label -> its exception.
        results: every job's result in job order (``None`` for the failed ones).
    """

    exit_code = 1

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
    """One training run: the :class:`~mei_envs.agents.args.TrainArgs` of a ``train`` call.

    ``reuse_complete``: a run folder that already holds a finished run (``COMPLETE``) is
    returned as is, without training (what ``--resume`` sets).
    """

    args: TrainArgs
    reuse_complete: bool = False

    @classmethod
    def of(cls, **fields: Any) -> SweepJob:
        """A job from ``TrainArgs`` fields (no progress bar: the parent prints progress)."""
        fields.setdefault("progress_bar", False)
        return cls(TrainArgs(**fields))

    def __getattr__(self, name: str) -> Any:
        # Read-through to the arguments (job.env_id, job.run_dir, ...); never for dunders or
        # ``args`` itself, so pickling a half-built object cannot recurse.
        if name.startswith("__") or name == "args":
            raise AttributeError(name)
        return getattr(self.args, name)

    @property
    def label(self) -> str:
        return f"{self.args.env_id}:{self.args.algo}:seed{self.args.seed}@{self.args.run_dir}"

    def to_train_args(self) -> TrainArgs:
        """The ``TrainArgs`` of this job (a copy)."""
        return dataclasses.replace(self.args)


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
        **job_fields: further ``TrainArgs`` fields (``total_timesteps``, ``n_envs``...).

    Raises:
        ValueError: an empty axis or an unknown job field (named).
    """
    allowed = {f.name for f in dataclasses.fields(TrainArgs)} - {
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
            SweepJob.of(
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

    run_dir = Path(job.args.run_dir)
    if job.reuse_complete and (run_dir / "COMPLETE").is_file():
        return run_dir
    from mei_envs.agents.callbacks import set_progress_sink

    if _PROGRESS_QUEUE is not None:
        label = f"{job.args.algo} seed {job.args.seed}"
        set_progress_sink(lambda *report: _PROGRESS_QUEUE.put(report), label)
    try:
        return Path(train(job.to_train_args()))
    finally:
        set_progress_sink(None)


def _call_single_threaded(fn: Callable[[Any], Any], item: Any) -> Any:
    limit_threads()
    return fn(item)


# ---- local worker processes: die with the parent, report progress ------------------------
_PROGRESS_QUEUE: Any = None  # set in each local worker by _init_worker


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit as soon as its parent is gone, even after the parent's SIGKILL.

    On Linux the kernel delivers SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); on
    every platform a daemon thread also polls the parent id (a re-parented orphan sees
    another one) and ends the process. Without this, a ``kill -9`` of ``mei-envs compare``
    left workers training into the abandoned folder.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:  # pragma: no cover - no glibc (e.g. musl): the thread below suffices
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _init_worker(parent_pid: int, progress_queue: Any) -> None:
    """Initializer of every local worker process."""
    global _PROGRESS_QUEUE
    # Ctrl-C reaches the whole process group; the parent decides (it stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _PROGRESS_QUEUE = progress_queue


ProgressFn = Callable[[str, int, int, float], None]


def progress_line(label: str, steps: int, planned: int, rate: float) -> str:
    """``ppo seed 0: 40,960/301,056 steps (14%), 1,234 steps/s, ETA 3m 31s``."""
    if steps == 0 or rate <= 0:
        return f"{label}: started, {planned:,} steps to go"
    share = steps / planned if planned else 0.0
    eta = (planned - steps) / rate if rate > 0 else float("nan")
    eta_s = "?" if eta != eta else f"{int(eta // 60)}m {int(eta % 60):02d}s"
    if steps >= planned:
        eta_s = "done"
    return f"{label}: {steps:,}/{planned:,} steps ({share:.0%}), {rate:,.0f} steps/s, ETA {eta_s}"


def print_progress(prefix: Callable[[], str] | None = None, stream: Any = None) -> ProgressFn:
    """A progress callback for :func:`map_tasks` that prints :func:`progress_line` lines."""

    def show(label: str, steps: int, planned: int, rate: float) -> None:
        head = prefix() if prefix is not None else ""
        print(f"{head}{progress_line(label, steps, planned, rate)}", file=stream or sys.stdout,
              flush=True)  # fmt: skip

    return show


def map_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    backend: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    labels: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[Any]:
    """``[fn(item) for item in items]`` in parallel workers (each limited to one thread).

    ``fn`` must be importable by name (a module-level function) so spawned processes and
    Ray workers can load it. All items run even if some fail; then :class:`SweepError`
    names every failure.

    Local backend: workers die with this process (even after a ``kill -9``); Ctrl-C kills
    them at once and re-raises ``KeyboardInterrupt`` (a finished training keeps its
    ``COMPLETE`` run folder, an interrupted one its last checkpoint). ``progress`` gets
    ``(label, steps, planned steps, steps/s)`` reports from the trainings (local backend).
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
        return _map_local(fn, items, workers, labels, progress)
    return _map_ray(fn, items, workers, ray_address, labels)


def _map_local(
    fn: Callable[[Any], Any],
    items: list[Any],
    workers: int,
    labels: list[str],
    progress: ProgressFn | None = None,
) -> list[Any]:
    results: list[Any] = [None] * len(items)
    failures: dict[str, BaseException] = {}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    stop = threading.Event()

    def relay() -> None:  # progress reports from the workers -> the caller's callback
        while not stop.is_set():
            try:
                report = queue.get(timeout=0.2)
            except Exception:  # noqa: BLE001 - queue.Empty, or the queue closed
                continue
            if progress is not None:
                progress(*report)

    relay_thread = threading.Thread(target=relay, name="progress-relay", daemon=True)
    relay_thread.start()
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(os.getpid(), queue),
    )
    try:
        futures = {pool.submit(_call_single_threaded, fn, it): i for i, it in enumerate(items)}
        for fut, i in futures.items():
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported together below
                failures[labels[i]] = exc
    except BaseException:  # Ctrl-C (or any error here): stop every worker now
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        stop.set()
        relay_thread.join(timeout=2)
        queue.close()
        queue.cancel_join_thread()
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


def check_jobs(jobs: Sequence[SweepJob]) -> None:
    """Everything that can be checked before a job starts: the training stack is installed,
    each algorithm fits its env's action space, hyperparameter overrides name real
    hyperparameters, every env config builds.

    Raises:
        ModuleNotFoundError: torch/SB3 missing (the CLI names the extra to install).
        ValueError: naming the job's algorithm, env or hyperparameter.
    """
    from mei_envs.agents.algos import check_algo_for_env
    from mei_envs.agents.hyperparameters import check_hyperparam_keys
    from mei_envs.baselines.evaluation import make_env

    _check_env_configs(jobs)
    seen: set[str] = set()
    for job in jobs:
        a = job.args
        key = repr((a.env_id, sorted(a.env_config.items()), a.algo))
        if key in seen:
            continue
        seen.add(key)
        env = make_env(a.env_id, a.env_config)
        try:
            check_algo_for_env(a.algo, env)
        finally:
            env.close()
        check_hyperparam_keys(a.algo, a.hyperparams_override)


# Files and folders the trainer writes into a run folder (a folder holding anything else is
# never deleted by a resume).
_TRAINER_OUTPUTS = frozenset(
    {"config.yml", "monitor", "progress.csv", "tb", "evaluations.npz", "checkpoints"}
)


def prepare_resume(job: SweepJob) -> SweepJob:
    """The job that finishes ``job.run_dir`` after an interruption.

    * ``COMPLETE`` present: reuse the folder untouched (``reuse_complete``).
    * a checkpoint in ``checkpoints/``: continue from the latest (``resume=True``); the
      trainer trims progress.csv and the monitor files to that checkpoint.
    * started but no checkpoint yet: the folder is emptied and the run starts over (only
      if it holds nothing but trainer outputs; otherwise a ``FileExistsError`` names it).
    * absent or empty: a fresh run.
    """
    run_dir = Path(job.args.run_dir)
    if (run_dir / "COMPLETE").is_file():
        return SweepJob(job.args, reuse_complete=True)
    if list((run_dir / "checkpoints").glob("model_*_steps.zip")):
        return SweepJob(dataclasses.replace(job.args, resume=True), reuse_complete=True)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in _TRAINER_OUTPUTS)
        if foreign:
            raise FileExistsError(
                f"resume: {run_dir} holds {foreign}, not only a trainer's outputs; "
                "move them away or choose another folder"
            )
        shutil.rmtree(run_dir)
    return SweepJob(dataclasses.replace(job.args, resume=False), reuse_complete=True)


def run_sweep(
    jobs: Iterable[SweepJob],
    backend: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Train every job; return the run folders in job order.

    Args:
        jobs: the runs.
        backend, workers, ray_address: see :func:`map_tasks`.
        resume: continue an interrupted sweep (:func:`prepare_resume` per job); without it
            an existing non-empty run folder is an error.
        progress: progress callback (see :func:`map_tasks`), e.g. :func:`print_progress`.

    Raises:
        ValueError: unknown backend (named with the allowed ones), bad ``workers``, two
            jobs writing to the same run folder, an algorithm that does not fit its env, an
            unknown hyperparameter or an invalid env config (all raised before any job starts).
        FileExistsError: a run folder exists and ``resume`` is off (names it).
        ImportError: ``backend="ray"`` without Ray installed, or no training stack.
        SweepError: after all jobs ran, if any failed (each failure named).
    """
    jobs = list(jobs)
    dirs = [str(Path(j.run_dir).resolve()) for j in jobs]
    dupes = sorted({d for d in dirs if dirs.count(d) > 1})
    if dupes:
        raise ValueError(f"run_sweep: several jobs share run_dir {dupes}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {list(BACKENDS)}")
    check_jobs(jobs)
    if resume:
        jobs = [prepare_resume(j) for j in jobs]
    else:
        taken = [d for d in dirs if Path(d).is_dir() and any(Path(d).iterdir())]
        if taken:
            raise FileExistsError(
                f"run folder(s) {taken} exist and are not empty; pass resume=True "
                "(mei-envs sweep --resume) to reuse finished runs and continue interrupted "
                "ones, or choose another --out-dir"
            )
    return map_tasks(
        train_job,
        jobs,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        labels=[j.label for j in jobs],
        progress=progress,
    )


__all__ = [
    "BACKENDS",
    "SweepError",
    "SweepJob",
    "env_slug",
    "grid",
    "limit_threads",
    "map_tasks",
    "prepare_resume",
    "print_progress",
    "run_sweep",
    "train_job",
]
