"""The Ray sweep backend on a local Ray instance started by the test (skipped without Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    from mei_envs.experiments.sweep import SweepError, SweepJob, grid, run_sweep

    jobs = grid(
        [mei_envs.ENV_IDS[0]],
        ["ppo"],
        [0, 1],
        out_dir=tmp_path,
        total_timesteps=256,
        n_envs=2,
        hyperparams_override={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        eval_freq=128,
        eval_episodes=1,
        checkpoint_freq=0,
        tensorboard=False,
    )
    paths = run_sweep(jobs, backend="ray", workers=2)
    assert [p.resolve() for p in paths] == [Path(j.run_dir).resolve() for j in jobs]
    for path in paths:
        assert (path / "COMPLETE").is_file() and (path / "model.zip").is_file()
        with np.load(path / "evaluations.npz") as ev:
            assert list(ev["timesteps"]) == [128, 256]
    assert ray.is_initialized()  # the sweep leaves a caller's Ray instance running

    bad = SweepJob(
        env_id=mei_envs.ENV_IDS[0], algo="no_such_algo", seed=0, run_dir=str(tmp_path / "bad")
    )
    with pytest.raises(SweepError, match="no_such_algo") as err:
        run_sweep([bad], backend="ray")
    assert list(err.value.failures) == [bad.label]
