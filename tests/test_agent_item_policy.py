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
    del lay["item_relation"]  # off unless a test asks for it
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


def test_layout_relation_is_the_share_of_bytes_used_by_the_other_model():
    """item_relation[m][n] = bytes of m in blocks n also uses / bytes of m: 1 from a base to
    each of its LoRA children (the child holds the whole base), the base's share of the child
    the other way, 0 for a quantised variant (it shares nothing) and on the diagonal."""
    env = gym.make(ENV_ID, config=SHORT)
    cat = env.unwrapped.catalog
    R = np.asarray(env.unwrapped.obs_item_layout()["item_relation"])
    M = cat.n_models
    assert R.shape == (M, M) and np.all(np.diag(R) == 0.0)
    base = cat.kinds.index("base")
    child = next(
        m for m in range(M) if cat.kinds[m] == "lora" and cat.families[m] == cat.families[base]
    )
    quant = cat.kinds.index("quantised")
    assert R[base, child] == pytest.approx(1.0)
    assert R[child, base] == pytest.approx(cat.model_bytes[base] / cat.model_bytes[child])
    assert 0.9 < R[child, base] < 1.0  # a LoRA adapter is a small part of its model
    assert np.all(R[quant] == 0.0) and np.all(R[:, quant] == 0.0)


def _randomised(pol: ItemScorerPolicy) -> ItemScorerPolicy:
    th.manual_seed(0)
    for layer in pol.action_net.modules():  # away from the near-zero start, so it can fail
        if isinstance(layer, th.nn.Linear):
            th.nn.init.normal_(layer.weight)
    return pol


def _logits(pol: ItemScorerPolicy, obs: np.ndarray) -> th.Tensor:
    with th.no_grad():
        return pol.get_distribution(th.as_tensor(obs)[None]).distribution.logits[0]


@pytest.mark.parametrize("heads,relation", [(4, False), (0, True), (2, True)])
def test_attention_and_relation_keep_equivariance_and_matter(heads, relation):
    """With attention over the items and/or pooling over related models: renaming the models
    (permuting the item table and the relation matrix alike) permutes the models' logits and
    leaves the bypass alone; and the extra context changes the scores (a policy that ignored
    it, e.g. a relation left unused, fails the last check)."""
    env = gym.make(ENV_ID, config={**SHORT, "preset": "adapter_heavy"})
    lay = env.unwrapped.obs_item_layout()
    M, table = lay["n_items"], _table(lay)
    R = np.asarray(lay["item_relation"])
    perm = np.random.default_rng(1).permutation(M)
    th.manual_seed(0)
    pol = _randomised(
        _policy(env, item_attention_heads=heads, item_relation=R if relation else None)
    )
    moved_pol = _policy(
        env, item_attention_heads=heads, item_relation=R[np.ix_(perm, perm)] if relation else None
    )
    moved_pol.load_state_dict(pol.state_dict())
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, *_ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[-1]))
    moved = obs.copy()
    moved[table] = obs[table[:, perm]]
    a, b = _logits(pol, obs), _logits(moved_pol, moved)
    assert a[:M].std() > 0.1
    th.testing.assert_close(a[:M][perm], b[:M], rtol=1e-4, atol=1e-4)
    th.testing.assert_close(a[M], b[M], rtol=1e-4, atol=1e-4)
    if relation:  # the same weights with no model related to any other score differently
        flat = _policy(env, item_attention_heads=heads, item_relation=np.zeros((M, M)))
        flat.load_state_dict(pol.state_dict())
        assert (_logits(flat, obs)[:M] - a[:M]).abs().max() > 1e-3
    else:  # attention: one model's features move the other models' scores
        nudged = obs.copy()
        nudged[table[:, 0]] = 1.0 - nudged[table[:, 0]]
        assert (_logits(pol, nudged)[1:M] - a[1:M]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"item_attention_heads": 3}, "item_attention_heads=3"),  # 64 is not a multiple of 3
        ({"item_attention_heads": -1}, "item_attention_heads=-1"),
        ({"item_attention_heads": True}, "item_attention_heads=True"),
        ({"item_relation": np.zeros((4, 4))}, r"item_relation of shape \(4, 4\)"),
        ({"item_relation": -np.ones((45, 45))}, "item_relation of shape"),
        ({"item_relation": True}, "item_relation of shape"),
    ],
)
def test_bad_attention_or_relation_is_refused(kw, match):
    env = gym.make(ENV_ID, config=SHORT)
    with pytest.raises(ValueError, match=match):
        _policy(env, **kw)


def test_trainer_fills_the_relation_and_the_model_reloads_with_it(tmp_path: Path):
    """policy_kwargs item_relation=True: the trainer puts the env's matrix in the policy, and
    the saved model reloads with it and with the attention layer."""
    hp = {**HP, "policy_kwargs": "dict(net_arch=[32], item_attention_heads=2, item_relation=True)"}
    run = train(
        TrainArgs(
            ENV_ID, "maskable_ppo", hyperparams_override=hp, run_dir=str(tmp_path / "r"), **COMMON
        )
    )
    from sb3_contrib import MaskablePPO

    pol = MaskablePPO.load(run / "model.zip").policy
    env = gym.make(ENV_ID, config=SHORT)
    np.testing.assert_allclose(
        np.asarray(pol.item_relation), np.asarray(env.unwrapped.obs_item_layout()["item_relation"])
    )
    assert pol.item_attention_heads == 2 and pol.mlp_extractor.attn is not None
    assert pol.mlp_extractor.relation is not None


def test_request_bypass_is_the_pending_models_own_score():
    """item_bypass="request": the bypass logit is the logit the pending model's row gets (the
    same scorer as every eviction, Belady's "the request is the candidate to drop"); renaming
    the models leaves it unchanged; the policy has no separate bypass head; other values, or a
    space with more than one non-item action, are refused."""
    env = gym.make(ENV_ID, config=SHORT)
    pol = _randomised(_policy(env, item_bypass="request"))
    assert pol.mlp_extractor.extra is None
    lay = env.unwrapped.obs_item_layout()
    M, table = lay["n_items"], _table(lay)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, *_ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[-1]))
    req = env.unwrapped.decision_state()["model"]
    assert req >= 0
    raw = pol.mlp_extractor.forward_actor(th.as_tensor(obs)[None])  # (1, (M + 1) * H)
    scores = pol.action_net(raw)[0]
    assert scores[:M].std() > 0.1
    th.testing.assert_close(scores[M], scores[req])
    perm = np.random.default_rng(2).permutation(M)
    moved = obs.copy()
    moved[table] = obs[table[:, perm]]
    th.testing.assert_close(_logits(pol, moved)[M], _logits(pol, obs)[M], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="item_bypass='both'"):
        _policy(env, item_bypass="both")
    wide = gym.spaces.Discrete(env.action_space.n + 1)
    lay.pop("item_relation")
    with pytest.raises(ValueError, match="exactly one non-item action"):
        ItemScorerPolicy(env.observation_space, wide, lambda _: 3e-4, item_bypass="request", **lay)
