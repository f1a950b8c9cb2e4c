"""The shared per-model actor (mei_envs.agents.item_policy): the env's item layout, weight
sharing (permutation equivariance), the trainer switch, save/load, and its errors."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

import mei_envs  # noqa: F401  (registers the envs)
from mei_envs.agents.args import TrainArgs
from mei_envs.agents.item_policy import ItemScorerPolicy
from mei_envs.agents.train import train
from mei_envs.baselines.evaluation import run_episodes

ENV_ID = "mei_envs/EdgeLLMCache-v0"
SHORT = {"requests_per_episode": 200}
HP = {
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 1,
    "policy": "ItemScorerPolicy",
    "normalize": "dict(norm_obs=False, norm_reward=True)",
}
COMMON = dict(
    total_timesteps=64,
    n_envs=1,
    env_config=dict(SHORT),
    eval_freq=0,
    checkpoint_freq=0,
    tensorboard=False,
)


def _table(lay: dict) -> np.ndarray:
    """table[k, m]: the observation entry of feature k of item m, from the layout's blocks."""
    M = lay["n_items"]
    return np.concatenate(
        [off + np.arange(rows * M).reshape(rows, M) for off, rows in lay["item_blocks"]]
    )


DIURNAL_ROWS = {"preset": "diurnal", "obs_regime_features": True}


@pytest.mark.parametrize("cfg", [{}, {"preset": "diurnal"}, {"half_lives": [50.0]}, DIURNAL_ROWS])
def test_layout_names_the_observation_rows(cfg):
    """obs_item_layout(): feature ``request_feature`` of the table is 1 at the pending model
    only, feature 0 is the cached set, the blocks fit the observation without overlap, and
    with per-regime rows their block holds the env's two regime rows."""
    env = gym.make(ENV_ID, config={**SHORT, **cfg})
    inner = env.unwrapped
    lay = inner.obs_item_layout()
    M, F = lay["n_items"], lay["n_features"]
    table = _table(lay)
    dim = env.observation_space.shape[0]
    assert M == env.action_space.n - 1 and table.shape == (F, M)
    assert len(np.unique(table)) == F * M and table.max() < dim
    assert len(lay["item_blocks"]) == (2 if cfg.get("obs_regime_features") else 1)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        st = inner.decision_state()
        rows = obs[table]
        np.testing.assert_array_equal(np.flatnonzero(rows[lay["request_feature"]]), [st["model"]])
        np.testing.assert_array_equal(rows[0].astype(bool), st["cached"])
        if len(lay["item_blocks"]) == 2:  # the regime rows: the observation's tail minus 3
            np.testing.assert_array_equal(
                rows[inner.n_features :].ravel(), obs[-inner.n_regime : -3]
            )
        obs, _, done, _, _ = env.step(int(rng.choice(np.flatnonzero(inner.action_masks()))))
        if done:
            break


def _policy(env: gym.Env, **kw) -> ItemScorerPolicy:
    lay = env.unwrapped.obs_item_layout()
    return ItemScorerPolicy(
        env.observation_space, env.action_space, lambda _: 3e-4, **{**lay, **kw}
    )


@pytest.mark.parametrize("cfg", [{}, DIURNAL_ROWS])
def test_scores_are_permutation_equivariant(cfg):
    """Renaming the models (permuting the columns of the whole item table, in every block)
    permutes the models' logits the same way and leaves the bypass logit alone: one network
    scores every model. A policy reading the table model-major, missing a block, or with
    per-model weights fails this."""
    th.manual_seed(0)
    env = gym.make(ENV_ID, config={**SHORT, **cfg})
    pol = _policy(env)
    for layer in pol.action_net.modules():  # away from the near-zero start, so it can fail
        if isinstance(layer, th.nn.Linear):
            th.nn.init.normal_(layer.weight)
    lay = env.unwrapped.obs_item_layout()
    M, table = lay["n_items"], _table(lay)
    obs, _ = env.reset(seed=3)
    for _ in range(3):  # a state with regime rows filled in
        obs, *_ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[-1]))
    perm = np.random.default_rng(1).permutation(M)
    moved = obs.copy()
    moved[table] = obs[table[:, perm]]
    with th.no_grad():
        a = pol.get_distribution(th.as_tensor(obs)[None]).distribution.logits[0]
        b = pol.get_distribution(th.as_tensor(moved)[None]).distribution.logits[0]
    assert a[:M].std() > 0.1  # the scores differ across models
    th.testing.assert_close(a[:M][perm], b[:M], rtol=1e-5, atol=1e-5)
    th.testing.assert_close(a[M], b[M], rtol=1e-5, atol=1e-5)


def test_untrained_policy_is_uniform_over_legal_actions():
    """The scorer starts near zero (SB3's 0.01 gain), so every legal action starts with about
    the same probability; masked ones get none."""
    th.manual_seed(0)
    env = gym.make(ENV_ID, config=SHORT)
    pol = _policy(env)
    obs, _ = env.reset(seed=4)
    mask = env.unwrapped.action_masks().copy()
    with th.no_grad():
        probs = pol.get_distribution(th.as_tensor(obs)[None], action_masks=mask[None])
        p = probs.distribution.probs[0].numpy()
    assert np.all(p[~mask] == 0.0)
    np.testing.assert_allclose(p[mask], 1.0 / mask.sum(), rtol=0.05)


def test_trainer_fills_the_layout_and_the_model_reloads(tmp_path: Path):
    """--hp policy=ItemScorerPolicy: the trainer reads n_items/n_features from the env, the
    saved model reloads as the same policy, and evaluation plays only legal actions (the env
    raises on a masked one) reproducibly. Training-time evaluation works with VecNormalize's
    norm_obs=False (it once read the absent obs_rms)."""
    run = train(
        TrainArgs(
            ENV_ID,
            "maskable_ppo",
            hyperparams_override=HP,
            run_dir=str(tmp_path / "r"),
            **{**COMMON, "eval_freq": 32, "eval_episodes": 1},
        )
    )
    assert (run / "evaluations.npz").is_file()
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(run / "model.zip")
    assert isinstance(model.policy, ItemScorerPolicy)
    env = gym.make(ENV_ID, config=SHORT)
    assert model.policy.n_items == env.unwrapped.n_models
    assert model.policy.n_features == env.unwrapped.n_features
    a = run_episodes(ENV_ID, str(run / "model.zip"), episodes=2, seed=9, env_config=SHORT)
    b = run_episodes(ENV_ID, str(run / "model.zip"), episodes=2, seed=9, env_config=SHORT)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert np.all((a.metrics["hit_ratio"] >= 0.0) & (a.metrics["hit_ratio"] <= 1.0))


def test_trainer_refuses_what_the_policy_cannot_read(tmp_path: Path):
    """Wrong algorithm, an env without an item table, or an appended hint: a ValueError naming
    the problem before any run folder is made."""
    bad = tmp_path / "bad"
    with pytest.raises(ValueError, match="ItemScorerPolicy: needs algo maskable_ppo"):
        train(
            TrainArgs(
                ENV_ID,
                "ppo",
                hyperparams_override=HP,
                run_dir=str(bad),
                **{**COMMON, "env_config": {**SHORT, "invalid_action": "bypass"}},
            )
        )
    with pytest.raises(
        ValueError, match="ItemScorerPolicy: needs algo maskable_ppo and no obs_hint"
    ):
        train(
            TrainArgs(
                ENV_ID,
                "maskable_ppo",
                obs_hint="knapsack_greedy",
                hyperparams_override=HP,
                run_dir=str(bad),
                **COMMON,
            )
        )
    with pytest.raises(ValueError, match="has no obs_item_layout"):
        train(
            TrainArgs(
                "mei_envs/EarlyExitUpload-v1",
                "maskable_ppo",
                hyperparams_override=HP,
                run_dir=str(bad),
                **{**COMMON, "env_config": {}},
            )
        )
    assert not bad.exists()


@pytest.mark.parametrize(
    "kw",
    [
        {"n_items": 0, "item_blocks": [[0, 12]]},
        {"n_items": 46, "n_features": 1, "item_blocks": [[0, 1]], "request_feature": 0},
        {"request_feature": 12},
        {"item_hidden": 0},
    ],
)
def test_bad_layout_is_refused(kw):
    env = gym.make(ENV_ID, config=SHORT)
    with pytest.raises(ValueError, match="ItemScorerPolicy: n_items="):
        _policy(env, **kw)


@pytest.mark.parametrize(
    "blocks",
    [
        [[0, 11]],  # rows do not add up to n_features
        [[0, 12], [40, 1]],  # overlaps the first block
        [[500, 12]],  # past the observation's end
        [[-1, 12]],
    ],
)
def test_bad_blocks_are_refused(blocks):
    env = gym.make(ENV_ID, config=SHORT)
    with pytest.raises(ValueError, match=r"ItemScorerPolicy: item_blocks="):
        _policy(env, item_blocks=blocks)
