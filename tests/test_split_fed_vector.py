"""SplitFedAlloc-v0's native vector env against SyncVectorEnv(SAME_STEP) over the single env,
the lean info level, and the model's shared formulas against their sources."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import mei_envs.envs.split_fed_alloc_vector as vector_module
from mei_envs import training
from mei_envs.envs.split_fed_alloc import SplitFedAllocEnv
from mei_envs.envs.split_fed_alloc_vector import BLOCK_ROUNDS, SplitFedAllocVectorEnv
from mei_envs.split_fed import SplitFedModel, pairwise_sum
from tests.vector_checks import assert_same, step_both

ENV_ID = "mei_envs/SplitFedAlloc-v0"
LEAN_KEYS = tuple(SplitFedAllocEnv.metadata["info_metrics"])
EPISODE_KEYS = tuple(f"episode_{k}" for k in LEAN_KEYS)

# (config, seed, steps): both action modes, every scheme, both channel modes, presets; short
# budgets so every sub-env crosses several episode ends, and runs past BLOCK_ROUNDS rounds.
CASES = [
    ({"time_budget_s": 150.0}, 0, 90),
    ({"action_mode": "discrete", "time_budget_s": 120.0}, 3, 60),
    ({"preset": "many_devices_weak_server", "action_mode": "discrete", "max_rounds": 9}, 5, 40),
    ({"preset": "narrow_band", "lambda_energy": 1.0, "max_rounds": 30}, 7, 80),
    ({"scheme": "sl", "n_devices": 3, "time_budget_s": 200.0}, 11, 50),
    ({"scheme": "fl", "preset": "jetson_fleet", "max_rounds": 12}, 2, 40),
    (
        {"channel": "gauss_markov", "k_factor": 1.0, "speed_mps": 5.0, "max_rounds": 25},
        4,
        BLOCK_ROUNDS + 20,
    ),
    ({"preset": "jetson_fleet", "action_mode": "discrete", "max_rounds": 7}, 9, 30),
]


# The vector env's two paths: one lean single env per sub-env stepped in turn (what small
# batches get, up to SCALAR_MAX_ENVS sub-envs) and the batched numpy step.
PATHS = ("subs", "batched")


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every vector env the test builds takes this path, whatever its size."""
    limit = 1 << 20 if request.param == "subs" else 0
    monkeypatch.setattr(vector_module, "SCALAR_MAX_ENVS", limit)
    monkeypatch.setattr(vector_module, "SCALAR_MAX_ENVS_DISCRETE", limit)
    return request.param


def _actions(vec: gym.vector.VectorEnv, rng: np.random.Generator) -> np.ndarray:
    """Legal random actions: uniform boxes, or masked cut choices (discrete)."""
    if vec.single_env.config.action_mode == "continuous":
        return rng.uniform(-1.0, 1.0, vec.action_space.shape).astype(np.float32)
    masks = vec.action_masks()
    n_cuts, K = vec.single_env.n_cuts, vec.model.K
    rows = []
    for mask in masks:
        cut = rng.choice(np.flatnonzero(mask[:n_cuts]))
        rows.append([cut, rng.integers(K), rng.integers(3)])
    return np.asarray(rows, dtype=np.int64)


def _check_infos(
    got: dict, want: dict, keys: tuple[str, ...], where: str, close: bool = False
) -> None:
    """Same masks (a missing key = an all-False mask) and the same values under them
    (``close``: floats to rounding, see ``tests.vector_checks.assert_same``)."""
    for key in keys:
        none = np.zeros(len(want.get("_final_obs", got.get("_final_obs", [0] * 4))), bool)
        mask = want.get("_" + key, none)
        np.testing.assert_array_equal(got.get("_" + key, none), mask, err_msg=f"{where} _{key}")
        if not mask.any():
            continue
        assert_same(got[key][mask], want[key][mask], f"{where} {key}", close)
        # SyncVectorEnv's layout: an array of the dtype of the key's Python values
        assert got[key].dtype == want[key].dtype, f"{where} {key}: {got[key].dtype}"


@pytest.mark.parametrize(("config", "seed", "steps"), CASES)
def test_vector_env_matches_sync_vector_env(config: dict, seed: int, steps: int, path) -> None:
    n = 4
    cfg = {**config, "info": "lean"}
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", config=cfg)
    assert isinstance(vec, SplitFedAllocVectorEnv)
    assert vec.scalar is (path == "subs")
    ref = SyncVectorEnv(
        [lambda: gym.make(ENV_ID, config=cfg)] * n, autoreset_mode=AutoresetMode.SAME_STEP
    )
    # The batched path computes with numpy arrays, the single envs with Python floats: on
    # CPUs where numpy's exp/power differ from the C library's (AVX-512) they agree to
    # rounding only (tests/vector_checks.py); the per-sub-env path steps single envs, exactly.
    close = not vec.scalar
    obs, info = vec.reset(seed=seed)
    obs_r, info_r = ref.reset(seed=seed)
    assert_same(obs, obs_r, "reset", close)
    assert info == {} and info_r == {}
    rng = np.random.default_rng(seed + 100)
    ends = 0
    for t in range(steps):
        if vec.single_env.config.action_mode == "discrete":
            want_masks = np.stack([e.unwrapped.action_masks() for e in ref.envs])
            np.testing.assert_array_equal(vec.action_masks(), want_masks)
        a = _actions(vec, rng)
        where = f"step {t}"
        obs, rew, term, trunc, info, info_r = step_both(vec, ref, a, where, close)
        _check_infos(info, info_r, LEAN_KEYS + EPISODE_KEYS, where, close)
        done = term | trunc
        assert ("_final_obs" in info) == done.any()
        if done.any():
            ends += int(done.sum())
            np.testing.assert_array_equal(info["_final_obs"], info_r["_final_obs"])
            for i in np.flatnonzero(done):
                assert_same(info["final_obs"][i], info_r["final_obs"][i], where, close)
            _check_infos(
                info["final_info"], info_r["final_info"], LEAN_KEYS + EPISODE_KEYS, where, close
            )
    assert ends >= n, "the case must cross episode ends"
    # an explicit reset mid-episode without a seed continues every generator as the single
    # envs do; then some sub-envs reseeded, the others continuing
    for reseed in (None, [seed + 50, None, None, seed + 51]):
        obs, info = vec.reset(seed=reseed)
        obs_r, info_r = ref.reset(seed=reseed)
        assert_same(obs, obs_r, f"reset({reseed})", close)
        assert info == info_r == {}
        for t in range(12):
            a = _actions(vec, rng)
            *_, info, info_r = step_both(vec, ref, a, f"after reset({reseed}), step {t}", close)
            _check_infos(info, info_r, LEAN_KEYS + EPISODE_KEYS, f"after reset, step {t}", close)


def _bad_batches(mode: str) -> list[np.ndarray]:
    """Invalid action batches of 3 sub-envs: wrong in every row, or only in the last (every
    row before it valid, so a path that stepped sub-envs before checking the rest would
    move them)."""
    if mode == "continuous":
        ok = np.zeros((3, 7))
        last_high, last_nan = ok.copy(), ok.copy()
        last_high[2, 0], last_nan[2, 4] = 1.5, np.nan
        return [np.full((3, 7), 1.5), np.full((3, 7), np.nan), last_high, last_nan, ok[:2]]
    ok = np.zeros((3, 3), dtype=np.int64)
    last = ok.copy()
    last[2] = [0, 0, 3]  # rule index out of range
    negative = ok.copy()
    negative[2, 1] = -1
    return [np.array([[99, 0, 0]] * 3), np.zeros((3, 3), dtype=float), last, negative, ok[:, :2]]


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_bad_actions_raise_and_leave_the_batch_unchanged(mode: str, path: str) -> None:
    vec = SplitFedAllocVectorEnv(3, action_mode=mode, time_budget_s=200.0)
    twin = SplitFedAllocVectorEnv(3, action_mode=mode, time_budget_s=200.0)
    rng = np.random.default_rng(1)
    for env in (vec, twin):
        env.reset(seed=0)
    for _ in range(25):  # mid-episode, past a fading block's first rounds
        a = _actions(vec, rng)
        vec.step(a)
        obs, *_ = twin.step(a)

    def state() -> list:
        if path == "batched":
            return [vec._loss.copy(), vec._time.copy(), vec._round.copy(), vec._block_pos.copy()]
        return [
            (s._loss, s._time, s._round, s._blk_pos, s._cut_j, s.np_random.bit_generator.state)
            for s in vec.subs
        ]

    before = state()
    for bad in _bad_batches(mode):
        with pytest.raises(ValueError, match="actions"):
            vec.step(bad)
        after = state()
        if path == "batched":
            for x, y in zip(after, before, strict=True):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(vec._obs(), obs)
        else:
            assert after == before
    # and the env goes on exactly as its twin that never saw them
    for t in range(BLOCK_ROUNDS):
        a = _actions(vec, rng)
        out, out_t = vec.step(a), twin.step(a)
        for x, y in zip(out[:4], out_t[:4], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"step {t}")
        _check_infos(out[4], out_t[4], LEAN_KEYS, f"step {t}")


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"preset": "few_devices"},
        {"preset": "many_devices_weak_server"},
        {"preset": "few_devices", "action_mode": "discrete"},
    ],
    ids=["default", "few_devices", "many_devices", "discrete"],
)
def test_small_batches_step_one_lean_single_env_per_sub_env(config: dict) -> None:
    """Up to scalar_max_envs(config) sub-envs, one single env per sub-env (info="lean",
    whatever the config's level); from one more on, the batched path (no single envs)."""
    single = SplitFedAllocEnv(config=config)
    cfg = single.config
    limit = vector_module.scalar_max_envs(cfg)
    # the mode's measured threshold at 5 devices, fewer sub-envs with more devices
    at_5 = (
        vector_module.SCALAR_MAX_ENVS_DISCRETE
        if cfg.action_mode == "discrete"
        else vector_module.SCALAR_MAX_ENVS
    )
    assert vector_module.scalar_max_envs(dataclasses.replace(cfg, n_devices=5)) == at_5
    more = dataclasses.replace(cfg, n_devices=cfg.n_devices + 20)
    assert 1 <= vector_module.scalar_max_envs(more) < limit
    for n, scalar in ((1, True), (limit, True), (limit + 1, False)):
        vec = gym.make_vec(
            ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", config=config
        )
        assert vec.scalar is scalar
        assert len(vec.subs) == (n if scalar else 0)
        assert all(type(s) is SplitFedAllocEnv for s in vec.subs)
        assert all(s.config == dataclasses.replace(cfg, info="lean") for s in vec.subs)
        assert vec.config == cfg and cfg.info == "full"
        # sub-env i is the single env seeded seed + i (the sub-envs share no generator)
        obs, _ = vec.reset(seed=7)
        want, masks = [], []
        for i in range(n):
            want.append(single.reset(seed=7 + i)[0])
            masks.append(single.action_masks())
        np.testing.assert_array_equal(obs, np.stack(want))
        np.testing.assert_array_equal(vec.action_masks(), np.stack(masks))


def test_lean_info_keys_and_episode_totals() -> None:
    full = SplitFedAllocEnv(time_budget_s=100.0)
    lean = SplitFedAllocEnv(time_budget_s=100.0, info="lean")
    full.reset(seed=1)
    assert lean.reset(seed=1)[1] == {}
    rounds, t_sum, cuts, clipped = 0, 0.0, [], 0
    rng = np.random.default_rng(0)
    done = False
    while not done:
        a = rng.uniform(-1, 1, full.action_space.shape).astype(np.float32)
        o_f, r_f, term, trunc, i_f = full.step(a)
        o_l, r_l, term_l, trunc_l, i_l = lean.step(a)
        np.testing.assert_array_equal(o_f, o_l)
        assert (r_f, term, trunc) == (r_l, term_l, trunc_l)
        done = term or trunc
        rounds += 1
        t_sum += i_f["round_time_s"]
        cuts.append(i_f["cut"])
        clipped += i_f["cut_clipped"]
        for key in LEAN_KEYS:
            assert i_l[key] == i_f[key], key
        assert set(i_l) == set(LEAN_KEYS) | (set(EPISODE_KEYS) if done else set())
    assert i_l["episode_rounds"] == rounds
    assert i_l["episode_round_time_s"] == pytest.approx(t_sum, rel=1e-12)
    assert i_l["episode_cut"] == pytest.approx(np.mean(cuts), rel=1e-12)
    assert i_l["episode_cut_clipped"] == clipped
    assert i_l["episode_loss"] == i_f["loss"]
    assert "action_mask" in i_f and "action_mask" not in i_l


def test_info_level_is_validated() -> None:
    from mei_envs.config import ConfigError

    with pytest.raises(ConfigError, match="info"):
        SplitFedAllocEnv(info="verbose")


@pytest.mark.parametrize("preset", ["default", "attention_only", "jetson_fleet"])
def test_advance_loss_tables_match_training_advance(preset: str) -> None:
    env = SplitFedAllocEnv(preset=preset)
    m: SplitFedModel = env.model
    rng = np.random.default_rng(0)
    loss = rng.uniform(m.target_loss - 0.05, m.initial_loss + 0.05, 200)
    j = rng.integers(0, m.L, 200)
    k = rng.integers(0, m.K, 200)
    want = training.advance(
        m.progress,
        loss,
        m.round_tokens,
        m.ranks[k],
        m.target_class,
        batch_tokens=m.batch_tokens,
        interval=m.interval,
        noniid=m.cfg.noniid,
        device_share=m.device_share[j],
    )
    np.testing.assert_array_equal(m.next_loss(loss, j, k), want)
    floats = [m.next_loss(float(x), int(a), int(b)) for x, a, b in zip(loss, j, k, strict=True)]
    # Python floats' ** is the C library's pow, numpy arrays' may be numpy's own (AVX-512):
    # equal to rounding (tests/vector_checks.py), bit for bit elsewhere.
    assert_same(floats, want, "float path", close=True)


def test_pairwise_sum_is_numpy_sum() -> None:
    rng = np.random.default_rng(3)
    for n in [*range(1, 40), 64, 127, 128, 129, 200, 300]:
        for _ in range(20):
            a = rng.random(n) * 10.0 ** rng.uniform(-6, 6, n)
            assert pairwise_sum(a.tolist()) == a.sum(), n
            # signed terms (cancellation shows the order of additions) and zeros (numpy's sum
            # of all negative zeros is +0.0, pairwise_sum's -0.0: equal as numbers)
            b = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
            b[rng.random(n) < 0.2] = -0.0
            assert pairwise_sum(b.tolist()) == b.sum(), n


def test_actions_within_the_tolerance_are_clipped_to_the_box(path: str) -> None:
    """Entries in (1, 1 + 1e-6] act as 1 (float32 round-off of agents), in both envs."""
    a = np.array([1.0, -1.0, 1.0, 0.3, -0.2, 0.9, 1.0], dtype=np.float64)
    nudged = a.copy()
    nudged[[0, 2, 6]] += 5e-7
    nudged[1] -= 5e-7
    results = []
    for act in (a, nudged):
        env = SplitFedAllocEnv()
        env.reset(seed=4)
        obs, rew, *_ = env.step(act)
        vec = SplitFedAllocVectorEnv(2)
        vec.reset(seed=4)
        obs_v, rew_v, *_ = vec.step(np.stack([act, act]))
        np.testing.assert_array_equal(obs_v[0], obs)
        assert rew_v[0] == rew
        results.append((obs, rew))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_observations_are_new_arrays(path: str) -> None:
    """A step's observation is the caller's: later steps and resets do not write into it."""
    vec = SplitFedAllocVectorEnv(3, time_budget_s=60.0)
    first, _ = vec.reset(seed=0)
    kept = [first.copy()]
    outs = [first]
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs = vec.step(_actions(vec, rng))[0]
        outs.append(obs)
        kept.append(obs.copy())
    for x, y in zip(outs, kept, strict=True):
        np.testing.assert_array_equal(x, y)


def test_row_sum_and_row_max_are_numpy_reductions() -> None:
    """The vector env's column-wise row sum and max give numpy's sum(-1) and max(-1) bit for
    bit (mixed signs and magnitudes, 1 to 20 columns)."""
    from mei_envs.envs.split_fed_alloc_vector import _row_max, _row_sum

    rng = np.random.default_rng(5)
    for n in range(1, 21):
        for _ in range(20):
            a = rng.standard_normal((32, n)) * 10.0 ** rng.uniform(-8, 8, (32, n))
            np.testing.assert_array_equal(_row_sum(a), a.sum(-1), err_msg=str(n))
            np.testing.assert_array_equal(_row_max(a), a.max(-1), err_msg=str(n))


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_sb3_rollouts_on_both_paths_equal_dummy_vec_env(mode: str, path: str) -> None:
    """PPO through the SB3 adapter over either path collects what it collects through
    DummyVecEnv over single envs (buffers, episodes, trained parameters)."""
    from mei_envs.agents.envs import make_vec_env
    from tests.test_sb3_vector import SHORT_CONFIGS, assert_same_training, collect, dummy

    cfg = {**SHORT_CONFIGS[ENV_ID], "action_mode": mode}
    metrics = SplitFedAllocEnv.metadata["info_metrics"]
    native = make_vec_env(ENV_ID, 3, env_config=cfg, info_metrics=metrics, vec_env="native")
    assert native.venv.unwrapped.scalar is (path == "subs")
    assert_same_training(collect(native), collect(dummy(ENV_ID, 3, cfg)))
