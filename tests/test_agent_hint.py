"""The observation hint (mei_envs.agents.hint): features, masks, the training switch, errors."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mei_envs  # noqa: F401  (registers the envs)
from mei_envs.agents.hint import PolicyHint, PolicyHintWrapper, check_hint
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.baselines.registry import make_policy

ENV_ID = "mei_envs/EdgeLLMCache-v0"
# Short episodes keep the knapsack solves few; the default catalog keeps its 45 models.
SHORT = {"requests_per_episode": 200}


def _env(**cfg):
    return gym.make(ENV_ID, config={**SHORT, **cfg})


@pytest.mark.parametrize("refresh", [50, 1])
def test_features_equal_the_policy_choice_on_random_states(refresh):
    """Under random legal actions (states knapsack_greedy would never reach), the one-hot is
    the action an independent knapsack_greedy takes at that state and the keep part is its
    keep set; the env's own observation comes first, unchanged."""
    env = PolicyHintWrapper(_env(), "knapsack_greedy", {"refresh": refresh})
    inner = env.unwrapped
    M = inner.n_models
    assert env.observation_space.shape == (inner.observation_space.shape[0] + 2 * M + 1,)
    twin = make_policy(ENV_ID, "knapsack_greedy", inner, refresh=refresh)
    rng = np.random.default_rng(0)
    checked = 0
    for ep in range(2 if refresh > 1 else 1):
        obs, info = env.reset(seed=300 + ep)
        twin.reset(obs, info)
        done = False
        while not done:
            base = obs[: -(2 * M + 1)]
            onehot, keep = obs[-(2 * M + 1) : -M], obs[-M:]
            np.testing.assert_array_equal(base, inner._obs())
            want = twin.act(obs, info)
            assert onehot.sum() == 1.0 and int(np.argmax(onehot)) == want
            np.testing.assert_array_equal(keep.astype(bool), twin.keep_set())
            assert env.observation_space.contains(obs)
            checked += 1
            legal = np.flatnonzero(env.action_masks())
            obs, _, done, _, info = env.step(int(rng.choice(legal)))
    assert checked > 30


def test_following_the_hint_is_knapsack_greedy():
    """Acting on the one-hot reproduces knapsack_greedy's own episodes exactly."""
    env = PolicyHintWrapper(_env(), "knapsack_greedy", features=["action"])
    n = env.action_space.n
    hits = []
    for ep in range(2):
        obs, _ = env.reset(seed=500 + ep)
        done = False
        while not done:
            obs, _, done, _, info = env.step(int(np.argmax(obs[-n:])))
        hits.append(info["hit_ratio"])
    ref = run_episodes(ENV_ID, "knapsack_greedy", episodes=2, seed=500, env_config=SHORT)
    np.testing.assert_array_equal(hits, ref.metrics["hit_ratio"])


def test_masks_pass_through_wrapper_and_vec_env():
    from mei_envs.agents.envs import make_vec_env
    from mei_envs.agents.hint import HintSpec

    env = PolicyHintWrapper(_env(), "knapsack_greedy")
    env.reset(seed=1)
    for _ in range(5):
        mask = env.action_masks()
        np.testing.assert_array_equal(mask, env.unwrapped.action_masks())
        env.step(int(np.flatnonzero(mask)[0]))
    venv = make_vec_env(
        ENV_ID, 2, env_config=SHORT, masked=True, vec_env="auto", hint=HintSpec("knapsack_greedy")
    )
    try:
        assert type(venv).__name__ == "DummyVecEnv"  # auto falls back from native
        venv.seed(3)
        obs = venv.reset()
        assert obs.shape == (2, venv.observation_space.shape[0])
        masks = np.stack(venv.env_method("action_masks"))
        want = np.stack([e.unwrapped.action_masks() for e in venv.envs])
        np.testing.assert_array_equal(masks, want)
        assert masks.shape == (2, venv.action_space.n)
    finally:
        venv.close()


def test_bad_hints_raise_clear_errors():
    with pytest.raises(ValueError, match=r"obs_hint='nope': no such policy .*knapsack_greedy"):
        PolicyHintWrapper(_env(), "nope")
    with pytest.raises(ValueError, match="is an oracle"):
        PolicyHintWrapper(_env(), "belady_shared")
    with pytest.raises(ValueError, match="'keep' needs a policy with a keep set"):
        PolicyHintWrapper(_env(), "lru")
    with pytest.raises(ValueError, match="obs_hint_features"):
        check_hint(ENV_ID, "lru", None, ["action", "bogus"])
    with pytest.raises(ValueError, match="knapsack_greedy.*refresh"):
        PolicyHintWrapper(_env(), "knapsack_greedy", {"refresh": 0})
    # lru has no keep set, but its action alone is a valid hint.
    assert PolicyHint(_env(), "lru", features=["action"]).size == 46


def test_vec_env_native_with_hint_is_refused():
    from mei_envs.agents.envs import resolve_vec_env

    assert resolve_vec_env(ENV_ID, "auto") == "native"
    assert resolve_vec_env(ENV_ID, "auto", hint=True) == "dummy"
    with pytest.raises(ValueError, match="'native' with obs_hint"):
        resolve_vec_env(ENV_ID, "native", hint=True)


def test_compare_config_checks_the_hint():
    from mei_envs.experiments.compare import CompareConfig, CompareConfigError

    base = {"env_id": ENV_ID, "algos": ["maskable_ppo"]}
    with pytest.raises(CompareConfigError, match="obs_hint='nope'"):
        CompareConfig.from_dict(base, obs_hint="nope")
    with pytest.raises(CompareConfigError, match="vec_env"):
        CompareConfig.from_dict(base, obs_hint="knapsack_greedy", vec_env="native")
    with pytest.raises(CompareConfigError, match="obs_hint_features"):
        CompareConfig.from_dict(base, obs_hint="knapsack_greedy", obs_hint_features="action,x")
    cfg = CompareConfig.from_dict(base, obs_hint="knapsack_greedy")
    assert CompareConfig.from_dict(cfg.to_dict()) == cfg


def test_tiny_training_through_the_switch(tmp_path: Path):
    """``train`` with obs_hint: config.yml records it, the model observes the hinted space,
    and the saved agent evaluates through run_episodes (the hint rebuilt from config.yml)."""
    import yaml

    from mei_envs.agents.args import TrainArgs
    from mei_envs.agents.train import train

    with pytest.raises(ValueError, match="obs_hint='nope'"):
        train(TrainArgs(ENV_ID, "maskable_ppo", obs_hint="nope", run_dir=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
    run = train(
        TrainArgs(
            ENV_ID,
            "maskable_ppo",
            total_timesteps=128,
            n_envs=2,
            env_config=dict(SHORT),
            obs_hint="knapsack_greedy",
            hyperparams_override={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
            eval_freq=64,
            eval_episodes=1,
            checkpoint_freq=0,
            tensorboard=False,
            run_dir=str(tmp_path / "run"),
        )
    )
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert cfg["args"]["obs_hint"] == "knapsack_greedy" and cfg["vec_env"] == "dummy"
    from mei_envs.agents.policy import load_agent_policy

    env = _env()
    pol = load_agent_policy(run / "model.zip", env)
    M = env.unwrapped.n_models
    assert pol.model.observation_space.shape == (env.observation_space.shape[0] + 2 * M + 1,)
    res = run_episodes(ENV_ID, str(run / "model.zip"), episodes=2, seed=7, env_config=SHORT)
    again = run_episodes(ENV_ID, str(run / "model.zip"), episodes=2, seed=7, env_config=SHORT)
    assert 0.0 <= res.metrics["hit_ratio"].min() <= 1.0
    np.testing.assert_array_equal(res.returns, again.returns)  # reset restarts the hint


def test_residual_policy_starts_as_the_heuristic(tmp_path: Path):
    """HintResidualPolicy: an (almost) untrained agent acting deterministically plays
    knapsack_greedy's actions exactly (its logits are ~0 plus hint_logit on the hint); without
    a hint the trainer refuses it, naming what it needs."""
    from mei_envs.agents.args import TrainArgs
    from mei_envs.agents.train import train

    common = dict(
        total_timesteps=64,
        n_envs=1,
        env_config=dict(SHORT),
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
    )
    hp = {"n_steps": 64, "batch_size": 64, "n_epochs": 1, "policy": "HintResidualPolicy"}
    bad = tmp_path / "no_hint"
    with pytest.raises(ValueError, match="HintResidualPolicy: needs algo maskable_ppo and an obs"):
        train(
            TrainArgs(ENV_ID, "maskable_ppo", hyperparams_override=hp, run_dir=str(bad), **common)
        )
    assert not bad.exists()  # refused before the run folder is made
    run = train(
        TrainArgs(
            ENV_ID,
            "maskable_ppo",
            obs_hint="knapsack_greedy",
            hyperparams_override={**hp, "learning_rate": 1e-8},
            run_dir=str(tmp_path / "res"),
            **common,
        )
    )
    agent = run_episodes(ENV_ID, str(run / "model.zip"), episodes=2, seed=11, env_config=SHORT)
    ref = run_episodes(ENV_ID, "knapsack_greedy", episodes=2, seed=11, env_config=SHORT)
    np.testing.assert_array_equal(agent.returns, ref.returns)
    np.testing.assert_array_equal(agent.metrics["hit_ratio"], ref.metrics["hit_ratio"])


# phase_knapsack (baselines/edge_llm_cache_phase.py) keeps a clock and per-regime estimates
# across calls; as a hint it must keep the contract "reset at each episode start, act once per
# step". 300 requests of the diurnal preset span three regimes of 125 requests.
DIURNAL = {"preset": "diurnal", "requests_per_episode": 300}


def _hint_trace(env: PolicyHintWrapper, seed: int, actions: list[int] | None = None):
    """Play one episode (the given actions, else the hinted one) and return the hint features
    at every decision and the actions taken."""
    n, M = env.action_space.n, env.unwrapped.n_models
    obs, _ = env.reset(seed=seed)
    feats, taken, done = [], [], False
    while not done:
        feats.append(obs[-(n + M) :].copy())
        a = actions[len(taken)] if actions is not None else int(np.argmax(obs[-(n + M) : -M]))
        taken.append(a)
        obs, _, done, _, info = env.step(a)
    return np.array(feats), taken, info


def test_phase_knapsack_hint_is_its_policy_on_random_states():
    """Under random legal actions (repeated decisions at one request, states phase_knapsack
    never reaches), the one-hot is the action an independent phase_knapsack takes at that
    state and the keep part its keep set, through regime changes."""
    env = PolicyHintWrapper(gym.make(ENV_ID, config=DIURNAL), "phase_knapsack")
    inner = env.unwrapped
    n, M = env.action_space.n, inner.n_models
    twin = make_policy(ENV_ID, "phase_knapsack", inner)
    rng = np.random.default_rng(1)
    obs, info = env.reset(seed=31)
    twin.reset(obs, info)
    done, regimes, checked = False, set(), 0
    while not done:
        want = twin.act(obs, info)
        assert int(np.argmax(obs[-(n + M) : -M])) == want and obs[-(n + M) : -M].sum() == 1.0
        np.testing.assert_array_equal(obs[-M:].astype(bool), twin.keep_set())
        regimes.add(int(twin.regime(inner.decision_state()["t"])))
        checked += 1
        obs, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    assert checked > 30 and regimes == {0, 1, 2}


def test_following_the_phase_knapsack_hint_is_phase_knapsack():
    """Acting on the one-hot reproduces phase_knapsack's own episodes exactly, and an episode
    after another one gives the same hints as in a fresh wrapper (reset clears the per-regime
    estimates and the clock)."""
    env = PolicyHintWrapper(gym.make(ENV_ID, config=DIURNAL), "phase_knapsack")
    hits = []
    for seed in (40, 41):
        feats, taken, info = _hint_trace(env, seed)
        hits.append(info["hit_ratio"])
    ref = run_episodes(ENV_ID, "phase_knapsack", episodes=2, seed=40, env_config=DIURNAL)
    np.testing.assert_array_equal(hits, ref.metrics["hit_ratio"])
    fresh = PolicyHintWrapper(gym.make(ENV_ID, config=DIURNAL), "phase_knapsack")
    again, _, _ = _hint_trace(fresh, 41, taken)
    np.testing.assert_array_equal(feats, again)
