"""The wheel installs one top-level name, and nothing imports the bare folder names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_only_mei_envs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("mei_envs-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_file,) = [n for n in names if n.endswith("top_level.txt")]
        top = zf.read(top_file).decode().split()
    assert top == ["mei_envs"]
    # The mapped folders and their data files land under mei_envs/.
    for expected in (
        "mei_envs/agents/train.py",
        "mei_envs/agents/hyperparams/ppo.yml",
        "mei_envs/baselines/registry.py",
        "mei_envs/experiments/compare.py",
        "mei_envs/experiments/configs/default_compare.yml",
        "mei_envs/data/hardware.csv",
    ):
        assert expected in names, expected
    roots = {n.split("/")[0] for n in names}
    assert not roots & {"agents", "baselines", "experiments"}


def test_no_bare_imports_of_the_mapped_folders():
    """ruff's banned-api rule (pyproject) rejects ``import baselines`` and friends."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    proc = subprocess.run(
        [ruff, "check", "--select", "TID251", "--output-format", "concise", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The rule itself works: a bare import is reported.
    probe = subprocess.run(
        [ruff, "check", "--select", "TID251", "--stdin-filename", "probe.py", "-"],
        input="import baselines.registry\nfrom experiments import io\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert probe.returncode == 1 and probe.stdout.count("TID251") == 2, probe.stdout
