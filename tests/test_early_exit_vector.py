"""The native vector EarlyExitUpload (issue 12) against SyncVectorEnv over single envs:
sub-env i seeded s + i must give the same observations, rewards, ends, final observations
and lean infos, bit for bit, across episode ends, over many configs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from mei_envs.envs.early_exit_upload import EPISODE_KEYS, LEAN_KEYS
from mei_envs.envs.early_exit_upload_vector import EarlyExitUploadVectorEnv
from tests.vector_checks import step_both

ENV_ID = "mei_envs/EarlyExitUpload-v1"
CONFIGS = [
    {},
    {"preset": "pedestrian_cell_edge"},
    {"preset": "vehicular"},
    {"preset": "energy_first_phone"},
    {"preset": "bursty_exits"},
    {"preset": "short_replies"},
    {"preset": "bursty_short_replies"},
    {"preset": "lte_phone"},
    {"channel": "gauss_markov", "lambda_energy": 2.0},
    {"channel": "gauss_markov", "k_factor": 3.0, "dp_channel_states": 4},
    {"initial_radio": "connected", "flush_at_end": False, "tokens": 16, "tail_s": 0.05},
    {"upload_fractions": [0.0, 0.5, 1.0], "backlog_limit": 2, "exit_prob": 0.95},
    # Short episodes that often have no decision at all (ended at reset).
    {"tokens": 3, "exit_prob": 0.2, "exit_correlation": 0.5, "snr_history": 1},
    {"tokens": 40, "snr_history": 9, "fsmc_states": 3, "initial_radio": "connected"},
    {"info": "full", "model": "opt-125m", "cut_layer": 4},
]


def _compare_infos(got: dict, want: dict, where: str) -> None:
    keys = {k for k in want if not k.startswith("_") and want["_" + k].any()}
    keys_got = {k for k in got if not k.startswith("_") and got["_" + k].any()}
    assert keys == keys_got, (where, keys ^ keys_got)
    for k in keys:
        np.testing.assert_array_equal(got["_" + k], want["_" + k], err_msg=f"{where} _{k}")
        mask = want["_" + k]
        if k == "final_obs":
            for g, w in zip(got[k][mask], want[k][mask], strict=True):
                np.testing.assert_array_equal(g, w, err_msg=where)
        elif k == "final_info":
            _compare_infos(got[k], want[k], where + "/final_info")
        else:
            np.testing.assert_array_equal(got[k][mask], want[k][mask], err_msg=f"{where} {k}")


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())) or "default"
)
@pytest.mark.parametrize("seed", [0, 17])
def test_vector_env_equals_sync_vector_env(config: dict, seed: int) -> None:
    n = 5
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **config)
    assert isinstance(vec, EarlyExitUploadVectorEnv)
    ref = SyncVectorEnv(
        [lambda: gym.make(ENV_ID, **{**config, "info": "lean"})] * n,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    obs, info = vec.reset(seed=seed)
    obs_r, info_r = ref.reset(seed=seed)
    np.testing.assert_array_equal(obs, obs_r)
    assert info == info_r == {}
    rng = np.random.default_rng(seed)
    n_actions = vec.single_action_space.n
    ends = 0
    for t in range(3 * vec.model.K + 20):
        a = rng.integers(0, n_actions, n)
        where = f"step {t}"
        obs, rew, term, trunc, info, info_r = step_both(vec, ref, a, where)
        _compare_infos(info, info_r, where)
        ends += int(term.sum())
    assert ends >= n  # every sub-env crossed at least one episode end


def test_episode_totals_and_masks() -> None:
    vec = EarlyExitUploadVectorEnv(3, tokens=8)
    vec.reset(seed=1)
    assert vec.action_masks().shape == (3, 2) and vec.action_masks().all()
    totals = np.zeros((3, len(LEAN_KEYS)))
    for _ in range(40):
        _, _, term, _, info = vec.step(np.ones(3, dtype=np.int64))
        totals += np.stack([info[k] for k in LEAN_KEYS], axis=1)
        if term.any():
            fin = info["final_info"]
            for c, key in enumerate(EPISODE_KEYS):
                np.testing.assert_array_equal(fin[key][term], totals[term, c])
                assert not info["_" + key].any()
            totals[term] = 0.0


def test_bad_actions_and_order_are_named() -> None:
    vec = EarlyExitUploadVectorEnv(2)
    with pytest.raises(RuntimeError, match="before reset"):
        vec.step(np.zeros(2, dtype=np.int64))
    vec.reset(seed=0)
    for bad in (np.array([0, 2]), np.array([0]), np.array([0.0, 1.0]), np.array([-1, 0])):
        with pytest.raises(ValueError, match="actions"):
            vec.step(bad)
    with pytest.raises(ValueError, match="num_envs"):
        EarlyExitUploadVectorEnv(0)


def test_reset_with_seed_list_and_options_matches_single_envs() -> None:
    vec = EarlyExitUploadVectorEnv(2, tokens=6)
    exits = [1, 0, 1, 1, 0, 1]
    obs, _ = vec.reset(seed=[5, 9], options={"exit_sequence": exits})
    for i, s in enumerate((5, 9)):
        single = gym.make(ENV_ID, tokens=6)
        o, _ = single.reset(seed=s, options={"exit_sequence": exits})
        np.testing.assert_array_equal(obs[i], o)


def _run_both(vec, ref, rng, steps: int, n: int) -> None:
    for t in range(steps):
        a = rng.integers(0, vec.single_action_space.n, n)
        *_, info, info_r = step_both(vec, ref, a, f"step {t}")
        _compare_infos(info, info_r, f"step {t}")


@pytest.mark.parametrize("pool_bytes", [1, 3 * 20_000, None])
def test_episode_pool_ring_reseeding_and_options_match_single_envs(monkeypatch, pool_bytes) -> None:
    """Episodes drawn ahead (a ring of 2, 5 or 8 pool rows per sub-env) stay each sub-env's
    own stream across a reset with options (it uses the episode drawn ahead), a reseed of
    some sub-envs only (the others keep their generators and episodes drawn ahead) and a
    plain reset."""
    import mei_envs.envs.early_exit_upload_vector as vector_module

    if pool_bytes is not None:
        monkeypatch.setattr(vector_module, "_POOL_BYTES", pool_bytes)
    n, config = 4, {"tokens": 12, "exit_prob": 0.6}
    vec = EarlyExitUploadVectorEnv(n, **config)
    assert vec._E == {1: 2, 60_000: 5, None: 8}[pool_bytes]
    ref = SyncVectorEnv(
        [lambda: gym.make(ENV_ID, **{**config, "info": "lean"})] * n,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    rng = np.random.default_rng(3)
    for seed in (7, [11, None, 13, None], None):
        obs, _ = vec.reset(seed=seed)
        obs_r, _ = ref.reset(seed=seed)
        np.testing.assert_array_equal(obs, obs_r)
        _run_both(vec, ref, rng, 40, n)
    exits = [1, 0] * 6
    obs, _ = vec.reset(options={"exit_sequence": exits})
    obs_r, _ = ref.reset(options={"exit_sequence": exits})
    np.testing.assert_array_equal(obs, obs_r)
    _run_both(vec, ref, rng, 40, n)
