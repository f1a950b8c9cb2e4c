"""The Ray sweep backend on a local Ray instance started by the test (skipped without Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_sweep_runs_two_jobs_and_reports_failures(local_ray, tmp_path: Path):
    import mei_envs
    from mei_envs.experiments.sweep import SweepError, SweepJob, run_sweep
    from tests.test_experiments import check_tiny_sweep, tiny_sweep_jobs

    jobs = tiny_sweep_jobs(tmp_path)
    check_tiny_sweep(run_sweep(jobs, backend="ray", workers=2), jobs)
    assert ray.is_initialized()  # the sweep leaves a caller's Ray instance running

    bad = SweepJob.of(
        env_id=mei_envs.ENV_IDS[0], algo="ppo", seed=0, run_dir=str(tmp_path / "bad"),
        total_timesteps=64, hyperparams_override={"n_steps": 0}, eval_freq=0,
    )  # fmt: skip
    with pytest.raises(SweepError, match="n_steps") as err:
        run_sweep([bad], backend="ray")
    assert list(err.value.failures) == [bad.label]
