"""Files of a training run folder: models, statistics, checkpoints, the CSV log, config.yml.

Every file is written atomically (:mod:`mei_envs.experiments.io`). :func:`trim_run_logs` cuts
``progress.csv`` and the monitor files back to a checkpoint when a killed run resumes, so the
logs hold exactly the segment the resumed model continues.
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
    filter_excluded_keys,
)
from stable_baselines3.common.vec_env import VecNormalize

from mei_envs.experiments.io import write_bytes_atomic


def save_model(model: BaseAlgorithm, path: Path) -> None:
    buf = io.BytesIO()
    model.save(buf)
    write_bytes_atomic(path, buf.getvalue())


def save_vecnormalize(venv: VecNormalize, path: Path) -> None:
    # Pickle without the wrapped envs (as VecNormalize.save does via __getstate__).
    write_bytes_atomic(path, pickle.dumps(venv))


def save_replay_buffer(model: BaseAlgorithm, path: Path) -> None:
    buf = io.BytesIO()
    model.save_replay_buffer(buf)
    write_bytes_atomic(path, buf.getvalue())


class _ResumableCSV(CSVOutputFormat):
    """SB3's CSV writer that continues an existing file and orders new columns by name.

    SB3 appends the keys first seen in a dump in ``set`` order, which follows the string hash
    (random per process unless PYTHONHASHSEED is set): the same run got its columns in a
    different order each time, e.g. ``train/...`` first in one process, ``eval/...`` in the
    next. Here new keys are added sorted, so the header depends only on what was logged.
    """

    def __init__(self, filename: str) -> None:  # noqa: D107
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(filename)
            return
        text = path.read_text()
        if not text.endswith("\n"):  # drop a row cut short by a kill
            text = text[: text.rfind("\n") + 1]
        path.write_text(text)
        self.file = open(filename, "r+")  # noqa: SIM115
        self.file.seek(0, os.SEEK_END)
        header = text.split("\n", 1)[0]
        self.keys = [k for k in header.split(",") if k] if header else []
        self.separator = ","
        self.quotechar = '"'

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        """Add this dump's new keys as sorted columns (old rows padded), then write the row."""
        shown = filter_excluded_keys(key_values, key_excluded, "csv")
        new = sorted(k for k in shown if k not in self.keys)
        if new:
            self.file.seek(0)
            rows = self.file.readlines()[1:]
            self.keys.extend(new)
            self.file.seek(0)
            self.file.write(self.separator.join(self.keys) + "\n")
            for row in rows:
                self.file.write(row.rstrip("\n") + self.separator * len(new) + "\n")
            self.file.truncate()
        super().write(key_values, key_excluded, step)  # finds no new key: writes the row only


def make_logger(run_dir: Path, tensorboard: bool, verbose: int) -> Logger:
    formats: list[KVWriter] = [_ResumableCSV(str(run_dir / "progress.csv"))]
    if tensorboard:
        (run_dir / "tb").mkdir(exist_ok=True)
        formats.append(TensorBoardOutputFormat(str(run_dir / "tb")))
    if verbose > 0:
        formats.append(HumanOutputFormat(sys.stdout))
    return Logger(folder=str(run_dir), output_formats=formats)


def save_checkpoint(model: BaseAlgorithm, folder: Path, replay_buffer: bool) -> Path:
    """Write a checkpoint of ``model`` at its current step count; returns the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    n = model.num_timesteps
    venv = model.get_vec_normalize_env()
    if venv is not None:
        save_vecnormalize(venv, folder / f"vecnormalize_{n}_steps.pkl")
    if replay_buffer:
        save_replay_buffer(model, folder / f"replay_buffer_{n}_steps.pkl")
    path = folder / f"model_{n}_steps.zip"
    save_model(model, path)
    if replay_buffer:
        for old in folder.glob("replay_buffer_*_steps.pkl"):
            if old.name != f"replay_buffer_{n}_steps.pkl":
                old.unlink(missing_ok=True)
    return path


_CKPT_RE = re.compile(r"model_(\d+)_steps\.zip$")


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The ``model_<n>_steps.zip`` with the largest n in ``folder`` (None when there is none)."""
    best: tuple[Path, int] | None = None
    for name in glob.glob(str(folder / "model_*_steps.zip")):
        m = _CKPT_RE.search(name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(name), int(m.group(1)))
    return best


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.yml`` of a run folder."""
    path = Path(run_dir) / "config.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (not a run folder?)")
    with open(path) as f:
        return yaml.safe_load(f)


def trim_run_logs(run_dir: Path, num_timesteps: int, n_envs: int) -> None:
    """Cut a run folder's logs back to step ``num_timesteps`` (the checkpoint resumed from).

    ``progress.csv`` keeps the rows whose ``time/total_timesteps`` is at most
    ``num_timesteps``; each ``monitor/<i>.monitor.csv`` keeps the episodes env ``i`` finished
    within its first ``num_timesteps // n_envs`` steps (the vectorised envs step in
    lockstep). A row cut short by a kill is dropped. The resumed run appends after them, so
    timesteps never go back.
    """
    progress = run_dir / "progress.csv"
    if progress.is_file():
        lines = progress.read_text().splitlines(keepends=True)
        if lines:
            header = lines[0].rstrip("\n").split(",")
            col = header.index("time/total_timesteps") if "time/total_timesteps" in header else -1
            kept = [lines[0]]
            for line in lines[1:]:
                if not line.endswith("\n"):
                    break
                cells = line.rstrip("\n").split(",")
                steps = cells[col] if 0 <= col < len(cells) else ""
                if steps and float(steps) > num_timesteps:
                    break
                kept.append(line)
            write_bytes_atomic(progress, "".join(kept).encode())
    per_env = num_timesteps // max(n_envs, 1)
    for monitor in sorted((run_dir / "monitor").glob("*.monitor.csv")):
        lines = monitor.read_text().splitlines(keepends=True)
        kept, total = lines[:2], 0
        for line in lines[2:]:
            cells = line.rstrip("\n").split(",")
            if not line.endswith("\n") or len(cells) < 3:
                break
            total += int(float(cells[1]))
            if total > per_env:
                break
            kept.append(line)
        write_bytes_atomic(monitor, "".join(kept).encode())
