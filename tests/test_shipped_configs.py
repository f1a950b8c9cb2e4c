"""Every compare config shipped under experiments/configs passes the checks a compare runs
before it trains (env config builds, algorithms fit, hyperparameter keys exist, baselines
exist), so a config the README or a note names cannot rot silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mei_envs.experiments.compare import CompareConfig, check_compare

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yml")
    if "env_id" in (yaml.safe_load(p.read_text()) or {})
)


def test_configs_are_found():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_compare_config_passes_the_checks(path: Path):
    cfg = CompareConfig.from_yaml(path)
    check_compare(cfg)
