"""The rollout oracle on tiny instances: with the whole episode as horizon it is at least as
good as each of its base policies (rollout's cost-improvement property) and never better than
the exact offline optimum."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs.baselines.edge_llm_cache import solve_offline
from mei_envs.baselines.registry import list_policies, make_policy
from tests.test_edge_llm_cache_oracles import ENV_ID, _env, _return


@pytest.mark.parametrize("reward", ["hits", "bytes"])
def test_full_horizon_rollout_improves_on_its_bases_and_is_bounded_by_opt(tmp_path, reward):
    rng = np.random.default_rng(2024 if reward == "hits" else 7)
    strictly_better = 0
    for _ in range(40):
        env, requests = _env(tmp_path, rng, unit=False, reward=reward)
        ro = _return(env, requests=requests, name="rollout", horizon=None)
        bases = [_return(env, b, requests) for b in ("belady", "belady_bytes")]
        env.reset(seed=0, options={"requests": requests})
        opt, _ = solve_offline(env)
        assert ro >= max(bases) - 1e-9, (ro, bases)
        assert ro <= opt + 1e-9, (ro, opt)
        strictly_better += ro > max(bases) + 1e-9
    assert strictly_better >= 1  # the lookahead finds something the bases miss


def test_rollout_is_registered_and_checks_its_parameters(tmp_path):
    assert "rollout" in {s.name for s in list_policies(ENV_ID)[ENV_ID]}
    env, _ = _env(tmp_path, np.random.default_rng(0), unit=False)
    for bad, match in (({"horizon": 0}, "horizon=0"), ({"bases": ["lru"]}, "bases=")):
        with pytest.raises(ValueError, match=match):
            make_policy(ENV_ID, "rollout", env, **bad)


def test_offline_opt_on_a_full_episode_is_a_clear_error():
    import gymnasium as gym

    env = gym.make(ENV_ID)
    pol = make_policy(ENV_ID, "offline_opt", env)
    obs, info = env.reset(seed=0)
    with pytest.raises(ValueError, match="offline_opt: .*tiny instance"):
        pol.reset(obs, info)


def test_full_horizon_rollout_improves_on_the_best_set_belady_shared(tmp_path):
    """``belady_shared`` is a function of the state and the time (its knapsack solves are
    memoised per anchor), so rollout over it keeps the cost-improvement property."""
    rng = np.random.default_rng(99)
    for _ in range(15):
        env, requests = _env(tmp_path, rng, unit=False)
        ro = _return(env, requests=requests, name="rollout", horizon=None, bases=["belady_shared"])
        base = _return(env, "belady_shared", requests)
        assert ro >= base - 1e-9, (ro, base)
