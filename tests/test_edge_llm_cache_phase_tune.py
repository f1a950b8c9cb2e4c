"""The tuning script of ``phase_knapsack`` (experiments/edge_llm_cache_phase_tune.py)."""

from __future__ import annotations

import json

import pytest

from mei_envs.experiments import edge_llm_cache_phase_tune as tune

SHORT = ["--set", "requests_per_episode=200", "--episodes", "2"]
GRID = ["--grid", "half_life=50,1e9", "--grid", "prior=0,50", "--grid", "horizon=1,50"]
GRID += ["--grid", "refresh=25"]


def test_search_keeps_the_best_trial_and_reproduces(tmp_path):
    out = tune.main([*SHORT, *GRID, "--out", str(tmp_path / "t")])
    trials = out["trials"]
    # Defaults, then each constant's grid values that differ from the current best.
    assert trials[0]["params"] == tune.DEFAULTS
    assert len({tuple(sorted(t["params"].items())) for t in trials}) == len(trials)
    best = max(t["hit_ratio"] for t in trials)
    assert out["chosen_validation"] == best
    # The chosen setting's score is what a fresh evaluation gives (deterministic policy).
    again = tune.hit_ratios(out["env_config"], out["chosen"], 2, 200_000).mean()
    assert again == pytest.approx(out["chosen_validation"], abs=0.0)
    written = json.loads((tmp_path / "t.json").read_text())
    assert written["chosen"] == out["chosen"]
    assert "validation hit ratio" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seed", "100000"], "validation seeds"),
        (["--grid", "speed=1,2"], "name must be one of"),
        (
            ["--set", "requests_per_episode=200", "--baselines-json", "x.json", "--heldout", "2"],
            "drop --set",
        ),
    ],
)
def test_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        tune.main(argv)
