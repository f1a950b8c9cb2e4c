"""Start a compare run that reuses finished trainings of earlier compare runs.

    python -m mei_envs.experiments.compare_reuse --config CONFIG.yml [--set KEY=VALUE ...] \
        ALGO__SEED=OLD_RUN_DIR [...]

A training depends only on its training fields (env, algo, seed, budget, hyperparameters, hint,
training-time evaluation), not on the held-out evaluation, so a model trained in a validation
run (``eval_seed`` 200000) is the model a held-out run with the same training fields would
train. This copies ``OLD_RUN_DIR/train/ALGO__SEED`` into a new run folder of ``CONFIG`` and
finishes it with ``mei-envs compare --resume`` (finished trainings are reused untouched; the
other seeds train; every policy is evaluated on the held-out episodes). The training fields of
the copied run's ``config.yml`` must equal the new job's, or it refuses, naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import yaml

from mei_envs.config import parse_set_options
from mei_envs.experiments.compare import (
    CompareConfig,
    _expected_outputs,
    _train_jobs,
    check_compare,
    new_run_dir,
    resume_compare,
)
from mei_envs.experiments.io import write_manifest, write_yaml_atomic

# TrainArgs fields that may differ between the copied training and the new job.
_FREE = {"run_dir", "progress_bar", "verbose", "resume"}


def reuse(cfg: CompareConfig, sources: dict[str, str]) -> Path:
    """New run folder of ``cfg`` with ``sources`` ({"algo__seed": old compare run}) copied
    in; returns it (not yet finished)."""
    check_compare(cfg)
    run_dir = new_run_dir(cfg).resolve()
    jobs = {Path(j.args.run_dir).name: j for j in _train_jobs(cfg, run_dir)}
    for key, old in sources.items():
        if key not in jobs:
            raise ValueError(f"{key}: not a training of this config; its jobs: {sorted(jobs)}")
        src = Path(old) / "train" / key
        if not (src / "COMPLETE").is_file():
            raise ValueError(f"{src}: not a finished training (no COMPLETE)")
        saved = yaml.safe_load((src / "config.yml").read_text())["args"]
        want = dataclasses.asdict(jobs[key].args)
        for name, value in want.items():
            if name in _FREE or name not in saved or value is None:
                continue  # None: resolved from the same hyperparameter file
            if saved[name] != value:
                raise ValueError(f"{src}: {name}={saved[name]!r} but the config has {value!r}")
        shutil.copytree(src, Path(jobs[key].args.run_dir))
    write_manifest(run_dir, _expected_outputs(cfg), {"kind": "compare", "env_id": cfg.env_id})
    write_yaml_atomic(run_dir / "config.yml", cfg.to_dict())
    return run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mei_envs.experiments.compare_reuse")
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("sources", nargs="+", metavar="ALGO__SEED=OLD_RUN_DIR")
    ns = ap.parse_args(argv)
    cfg = CompareConfig.from_yaml(ns.config, **parse_set_options(ns.set, flag="--set"))
    sources = dict(s.split("=", 1) for s in ns.sources)
    run_dir = reuse(cfg, sources)
    print(f"reusing {sorted(sources)} in {run_dir}", flush=True)
    resume_compare(run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
