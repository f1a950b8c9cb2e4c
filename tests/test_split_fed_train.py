"""The agent-vs-oracle table of experiments/split_fed_train.py: paired gaps and their CIs."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs.experiments.split_fed_train import gap_ci, report


def test_gap_is_ratio_of_means_and_its_interval_keeps_the_pairing() -> None:
    rng = np.random.default_rng(0)
    oracle = rng.uniform(300.0, 3000.0, 30)  # episodes differ a lot ...
    agent = oracle * 1.1  # ... but the agent is 10% slower on every one of them
    gap, low, high = gap_ci(agent, oracle, np.random.default_rng(1))
    assert gap == pytest.approx(agent.mean() / oracle.mean() - 1.0)
    assert gap == pytest.approx(0.1)
    # paired: the interval is narrow although the episode times spread by a factor of 10
    assert 0.08 < low <= gap <= high < 0.12
    # several seeds: seeds x episodes, pooled over both
    two = np.stack([oracle * 1.1, oracle * 1.3])
    gap2, low2, high2 = gap_ci(two, oracle, np.random.default_rng(1))
    assert gap2 == pytest.approx(0.2)
    assert low2 < 0.2 < high2
    with pytest.raises(ValueError, match="episodes"):
        gap_ci(agent[:10], oracle, np.random.default_rng(1))


def test_report_has_every_policy_and_a_pooled_row() -> None:
    rng = np.random.default_rng(2)
    oracle = rng.uniform(500.0, 1500.0, 12)
    stats = dict(energy_J=1.0, reached=1.0, cut_mean=1.0, rank_mean=16.0)
    results = {
        "fixed_equal": dict(stats, times=list(oracle * 2.5)),
        "myopic_oracle": dict(stats, times=list(oracle)),
        "ppo_seed0": dict(stats, times=list(oracle * 1.05)),
        "ppo_seed1": dict(stats, times=list(oracle * 1.15)),
    }
    cfg = dict(algo="ppo", seeds=[0, 1], total_timesteps=10, eval_episodes=12, eval_seed=7)
    text = report(cfg, results, "x.yml")
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == [*results, "**ppo, 2 seeds pooled**"]
    assert "| +5.0% [" in rows[2] and "| +15.0% [" in rows[3] and "| +10.0% [" in rows[4]
