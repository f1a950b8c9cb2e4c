"""Long jobs can be stopped and resumed: SIGKILL and Ctrl-C of a running compare (tiny budgets).

A compare runs in a subprocess with one worker, so its two trainings run one after the other:
the test waits until the first has finished and the second has a checkpoint, then kills.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("stable_baselines3")
if not sys.platform.startswith("linux"):  # pragma: no cover - /proc is read for child pids
    pytest.skip("reads /proc to find worker processes", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
BUDGET = 2048  # steps per training: a multiple of the 2 x 64 rollout, a few seconds each


def _config(tmp_path: Path) -> Path:
    cfg = {
        "env_id": "mei_envs/EarlyExitUpload-v1",
        "algos": ["ppo"],
        "seeds": [0, 1],
        "total_timesteps": BUDGET,
        "n_envs": 2,
        "hyperparams_override": {"ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1}},
        "eval_freq": 1024,
        "train_eval_episodes": 2,
        "eval_episodes": 3,
        "baselines": ["eager"],
        "workers": 1,
        "checkpoint_freq": 256,
        "bootstrap_resamples": 200,
        "out_dir": str(tmp_path / "out"),
        "run_name": "killed",
    }
    path = tmp_path / "compare.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        parent_of[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent_of.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    cmd = [sys.executable, "-m", "mei_envs.cli", "compare", "--config", str(_config(tmp_path))]
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    log = open(tmp_path / "compare.log", "w")  # noqa: SIM115 - closed by the caller via proc
    # A shell's background job (``pytest ... &``) starts with SIGINT ignored, the child would
    # inherit that and Python would then install no KeyboardInterrupt handler: give the
    # compare the default disposition, as a terminal's foreground process has.
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    return proc, tmp_path / "out"


def _wait_for(proc: subprocess.Popen, tmp_path: Path, ready, what: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"compare exited early: {(tmp_path / 'compare.log').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout_s} s")
        time.sleep(0.02)


def _run_dir(out: Path) -> Path:
    runs = list(out.glob("*__killed__*"))
    return runs[0] if runs else out / "none"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_sigkill_leaves_no_worker_and_resume_completes(tmp_path: Path):
    from mei_envs.experiments.compare import resume_compare
    from mei_envs.experiments.io import check_run_complete, read_csv

    proc, out = _start(tmp_path)
    first = lambda: _run_dir(out) / "train" / "ppo__0"  # noqa: E731
    second = lambda: _run_dir(out) / "train" / "ppo__1"  # noqa: E731
    try:
        _wait_for(
            proc,
            tmp_path,
            lambda: (
                (first() / "COMPLETE").is_file()
                and any((second() / "checkpoints").glob("model_*_steps.zip"))
            ),
            "finished first training and checkpoint of the second",
        )
        workers = _children(proc.pid)
        assert workers, "compare has no worker process"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(workers), f"orphaned workers {_alive(workers)} survived the kill"
    finally:
        proc.kill()
        proc.wait()
    run = _run_dir(out)
    assert not (run / "COMPLETE").exists()
    assert not (second() / "COMPLETE").exists()
    finished = _digest(first())

    assert resume_compare(run, quiet=True) == run.resolve()

    check_run_complete(run)
    assert _digest(first()) == finished  # reused byte for byte
    for seed in (0, 1):
        done = yaml.safe_load((run / "train" / f"ppo__{seed}" / "COMPLETE").read_text())
        assert done["num_timesteps"] == BUDGET
    with open(second() / "progress.csv") as f:
        steps = [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] == BUDGET  # trimmed: no step goes back
    for monitor in (second() / "monitor").glob("*.monitor.csv"):
        lengths = [int(line.split(",")[1]) for line in monitor.read_text().splitlines()[2:]]
        assert sum(lengths) <= BUDGET // 2  # one env's steps, the discarded segment gone
    policies = {(r["policy"], r["seed"]) for r in read_csv(run / "summary.csv")}
    assert {("ppo", "all"), ("ppo", "0"), ("ppo", "1"), ("eager", "")} <= policies


def test_ctrl_c_stops_compare_quickly_and_says_how_to_resume(tmp_path: Path):
    proc, out = _start(tmp_path)
    try:
        _wait_for(
            proc,
            tmp_path,
            lambda: any(_run_dir(out).glob("train/*/checkpoints/model_*_steps.zip")),
            "checkpoint",
        )
        workers = _children(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    text = (tmp_path / "compare.log").read_text()
    assert rc == 130, text
    # Before the fix a Ctrl-C waited for the queued trainings (about a minute); the bound is
    # loose because the machine may be loaded (this is not a timing benchmark).
    assert stopped_s < 20, f"took {stopped_s:.1f} s to stop"
    assert f"mei-envs compare --resume {_run_dir(out).resolve()}" in text
    assert "Traceback" not in text
    assert "ppo seed 0: started, 2,048 steps to go" in text  # per-job progress lines
    time.sleep(1)
    assert not _alive(workers)
