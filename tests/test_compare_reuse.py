"""``compare_reuse.reuse``: copies a finished training only when its training fields equal the
new job's, and refuses (naming the field) otherwise."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from mei_envs.experiments.compare import CompareConfig, _train_jobs
from mei_envs.experiments.compare_reuse import reuse


def _finished_training(tmp_path, cfg: CompareConfig, **changed) -> str:
    """An old run folder holding a finished ``ppo__0`` training with ``cfg``'s training fields
    (``changed`` overrides some of them)."""
    old = tmp_path / "old_run"
    job = _train_jobs(cfg, old)[0]
    src = old / "train" / "ppo__0"
    src.mkdir(parents=True)
    args = {**dataclasses.asdict(job.args), **changed}
    (src / "config.yml").write_text(yaml.safe_dump({"args": args}))
    (src / "model.zip").write_bytes(b"weights")
    (src / "COMPLETE").write_text("")
    return str(old)


def _cfg(tmp_path, **kw) -> CompareConfig:
    return CompareConfig(seeds=[0, 1], out_dir=str(tmp_path / "runs"), baselines=[], **kw)


def test_reuse_copies_a_matching_training(tmp_path):
    cfg = _cfg(tmp_path, eval_seed=100000)
    old = _finished_training(tmp_path, _cfg(tmp_path, eval_seed=200000))  # other held-out seeds
    run = reuse(cfg, {"ppo__0": old})
    assert (run / "train" / "ppo__0" / "model.zip").read_bytes() == b"weights"
    assert (run / "train" / "ppo__0" / "COMPLETE").is_file()
    assert not (run / "train" / "ppo__1").exists()  # left for --resume to train
    assert yaml.safe_load((run / "config.yml").read_text())["eval_seed"] == 100000


def test_reuse_refuses_a_training_with_other_fields(tmp_path):
    cfg = _cfg(tmp_path, total_timesteps=1000)
    old = _finished_training(tmp_path, cfg, total_timesteps=999)
    with pytest.raises(ValueError, match="total_timesteps=999 but the config has 1000"):
        reuse(cfg, {"ppo__0": old})
    old = _finished_training(tmp_path / "b", cfg, env_config={"preset": "vehicular"})
    with pytest.raises(ValueError, match="env_config="):
        reuse(cfg, {"ppo__0": old})


def test_reuse_refuses_unknown_jobs_and_unfinished_trainings(tmp_path):
    cfg = _cfg(tmp_path)
    old = _finished_training(tmp_path, cfg)
    with pytest.raises(ValueError, match=r"ppo__7: not a training of this config"):
        reuse(cfg, {"ppo__7": old})
    (tmp_path / "old_run" / "train" / "ppo__0" / "COMPLETE").unlink()
    with pytest.raises(ValueError, match="not a finished training"):
        reuse(cfg, {"ppo__0": old})
