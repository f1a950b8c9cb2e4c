"""EarlyExitUpload-v1: cost accounting, validation, DP oracle vs brute force and baselines."""

from __future__ import annotations

import copy
import itertools

import gymnasium as gym
import numpy as np
import pytest

from mei_envs.baselines.early_exit import solve_dp, tune_threshold
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.config import ConfigError
from mei_envs.envs.early_exit_upload import (
    EarlyExitUploadConfig,
    EarlyExitUploadEnv,
    exit_transition_matrix,
)

ENV_ID = "mei_envs/EarlyExitUpload-v1"


def _play(env: EarlyExitUploadEnv, actions_by_token, **reset_kw) -> tuple[float, list[dict]]:
    obs, info = env.reset(**reset_kw)
    total, infos, done = 0.0, [], False
    while not done:
        k = info["token_index"]
        # After the last token (all remaining forced) the env ignores the action.
        a = actions_by_token[k] if actions_by_token is not None and k < len(actions_by_token) else 0
        obs, rew, term, trunc, info = env.step(a)
        total += rew
        infos.append(info)
        done = term or trunc
    return total, infos


# ---- the exit process --------------------------------------------------------------------
def test_exit_chain_has_requested_stationary_and_correlation() -> None:
    P = exit_transition_matrix(0.79, 0.8)
    pi = np.array([0.21, 0.79])
    np.testing.assert_allclose(pi @ P, pi, atol=1e-12)
    assert P[1, 1] - P[0, 1] == pytest.approx(0.8)
    env = EarlyExitUploadEnv(tokens=4096)
    exits = env.model.sample_exits(np.random.default_rng(0)).astype(float)
    assert exits.mean() == pytest.approx(0.79, abs=0.04)
    assert np.corrcoef(exits[:-1], exits[1:])[0, 1] == pytest.approx(0.8, abs=0.05)


# ---- accounting ------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["eager", "lazy", "dp_oracle"])
def test_reward_is_the_sum_of_its_components(policy: str) -> None:
    env = gym.make(ENV_ID)
    res = run_episodes(ENV_ID, policy, episodes=5, seed=11)
    m = env.unwrapped.model
    cost = (
        res.metrics["latency_s"] / m.latency_ref_s
        + m.cfg.lambda_energy * res.metrics["energy_J"] / m.energy_ref_j
    )
    np.testing.assert_allclose(-res.returns, cost, rtol=1e-9)
    # Every token's hidden state reaches the server (flush_at_end=True by default).
    np.testing.assert_allclose(res.metrics["bytes_sent"], m.K * m.state_bits / 8)
    # The user waits at least the device compute of every token.
    assert np.all(res.metrics["latency_s"] >= m.t_dev_s.sum() - 1e-12)


def test_flush_disabled_leaves_backlog_unsent() -> None:
    env = EarlyExitUploadEnv(flush_at_end=False)
    exits = np.ones(env.model.K, dtype=int)
    _, infos = _play(env, [0] * env.model.K, seed=0, options={"exit_sequence": exits})
    sent = sum(i["bytes_sent"] for i in infos)
    # All tokens exit and we always wait: only backlog-limit uploads send anything.
    per_state = env.model.state_bits / 8
    assert sent == pytest.approx(per_state * (env.model.limit + 1) * (64 // 17))
    assert infos[-1]["backlog"] == 64 - 17 * (64 // 17)


def test_forced_upload_latency_matches_tables() -> None:
    """Token 0 exits (wait), token 1 does not: it uploads 2 states and waits for the server."""
    env = EarlyExitUploadEnv(tokens=2, snr_history=1, initial_radio="connected")
    m = env.model
    states = np.array([3, 3])
    obs, info = env.reset(seed=0, options={"exit_sequence": [1, 0], "channel_states": states})
    _, rew, term, _, info = env.step(0)
    rate = m.state_rate_bps[3]
    airtime = 2 * m.state_bits / rate
    expect_latency = m.t_dev_s[0] + m.t_dev_s[1] + airtime + m.t_srv_s[1, 2]
    assert term
    assert info["latency_s"] == pytest.approx(expect_latency, rel=1e-12)
    assert info["airtime_s"] == pytest.approx(airtime, rel=1e-12)
    assert info["forced_uploads"] == 1 and info["voluntary_uploads"] == 0
    tx = (m.radio.alpha_u_w_per_mbps * rate * 1e-6 + m.radio.beta_w) * airtime
    tail = m.radio.tail_power_w * (m.t_dev_s[0] + m.t_dev_s[1] + m.t_srv_s[1, 2])
    assert info["energy_J"] == pytest.approx(tx + tail, rel=1e-12)


def test_waking_from_sleep_costs_latency_and_energy() -> None:
    kw = dict(tokens=2, snr_history=1)
    exits, states = [0, 0], np.array([2, 2])
    idle = EarlyExitUploadEnv(initial_radio="idle", **kw)
    conn = EarlyExitUploadEnv(initial_radio="connected", **kw)
    # Both tokens are forced: reset runs them; the first step delivers their cost.
    opts = {"exit_sequence": exits, "channel_states": states}
    idle.reset(seed=0, options=opts)
    conn.reset(seed=0, options=opts)
    *_, term_idle, _, i_idle = idle.step(0)
    *_, term_conn, _, i_conn = conn.step(0)
    assert term_idle and term_conn
    cfg = idle.model.radio
    assert i_idle["wakeups"] == 1 and i_conn["wakeups"] == 0
    assert i_idle["latency_s"] - i_conn["latency_s"] == pytest.approx(cfg.wake_s)
    d_energy = i_idle["energy_J"] - i_conn["energy_J"]
    t0 = idle.model.t_dev_s[0]
    expect = cfg.wake_s * cfg.wake_power_w + (cfg.sleep_power_w - cfg.tail_power_w) * t0
    assert d_energy == pytest.approx(expect, rel=1e-9)


# ---- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("cut_layer", 0, "cut_layer"),
        ("cut_layer", 22, "cut_layer"),
        ("model", "gpt-5", "model"),
        ("device", "pixel_99", "device"),
        ("channel", "awgn", "channel"),
        ("exit_prob", 1.0, "exit_prob"),
        ("bandwidth_hz", -1.0, "bandwidth_hz"),
        ("upload_fractions", [0.5, 1.0], "upload_fractions"),
        ("hidden_precision", "fp8", "hidden_precision"),
        ("tokens", 2.5, "tokens"),
    ],
)
def test_bad_config_names_the_field(key: str, value, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        EarlyExitUploadConfig.from_dict({key: value})


@pytest.mark.parametrize("action", [2, -1, 0.5, "1", [0, 1], None])
def test_bad_action_raises_and_leaves_state_unchanged(action) -> None:
    env = EarlyExitUploadEnv()
    env.reset(seed=5)
    before = copy.deepcopy(env.__dict__)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    after = env.__dict__
    for key in ("_k", "_backlog", "_timer", "_done"):
        assert after[key] == before[key]
    assert after["_acc"] == before["_acc"]


def test_custom_architecture_file(tmp_path) -> None:
    import json

    from mei_envs.llm import catalog

    arch = catalog.get_architecture("tinyllama-1.1b").to_dict()
    arch.update(name="tiny-8", n_layers=8, published_params=None)
    path = tmp_path / "tiny8.json"
    path.write_text(json.dumps(arch))
    env = EarlyExitUploadEnv(model=str(path), cut_layer=2)
    ref = EarlyExitUploadEnv(cut_layer=2)
    # Same blocks on the device, fewer on the server: same device time, faster catch-up.
    np.testing.assert_allclose(env.model.t_dev_s, ref.model.t_dev_s)
    assert np.all(env.model.t_srv_s < ref.model.t_srv_s)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "n_layers": 2}))
    with pytest.raises(ConfigError, match="d_model"):
        EarlyExitUploadEnv(model=str(bad))


def test_step_after_end_and_before_reset_raise() -> None:
    env = EarlyExitUploadEnv(tokens=3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    _play(env, None, seed=0)
    with pytest.raises(RuntimeError, match="ended"):
        env.step(0)


def test_bad_reset_options_are_named() -> None:
    env = EarlyExitUploadEnv(tokens=4)
    with pytest.raises(ValueError, match="exit_sequence"):
        env.reset(seed=0, options={"exit_sequence": [1, 2, 0, 1]})
    with pytest.raises(ValueError, match="channel_states"):
        env.reset(seed=0, options={"channel_states": [0] * 3})
    with pytest.raises(ValueError, match="bogus"):
        env.reset(seed=0, options={"bogus": 1})


# ---- the DP oracle ---------------------------------------------------------------------------
TINY = dict(tokens=4, fsmc_states=2, snr_history=1, backlog_limit=2, prompt_tokens=16)


def _brute_force_value(env: EarlyExitUploadEnv) -> float:
    """Min over all history-dependent policies of the expected cost, by enumeration.

    Every (exit, channel) path of the K tokens is enumerated with its probability; for each
    path and every action sequence the episode's cost is obtained by *running the env* on
    that path. The best policy may use everything observed up to each decision, so the
    value is an expectimax over the tree of observed prefixes.
    """
    m = env.model
    K, A = m.K, env.action_space.n
    Pe, Pc = m.exit_P, np.asarray(m.fsmc.transition)
    pe0, pc0 = m.exit_stationary, np.asarray(m.fsmc.stationary)
    C = m.fsmc.n_states
    outcomes = [(e, c) for e in (0, 1) for c in range(C)]
    cache: dict = {}

    def cost(path, actions) -> float:
        key = (path, actions)
        if key not in cache:
            exits = [o[0] for o in path]
            states = np.array([o[1] for o in path])
            total, _ = _play(
                env,
                list(actions),
                seed=0,
                options={"exit_sequence": exits, "channel_states": states},
            )
            cache[key] = -total
        return cache[key]

    def best(prefix: tuple, actions: tuple) -> float:
        k = len(prefix) - 1
        e, c = prefix[-1]
        values = []
        for a in range(A):
            acts = actions + (a,)
            if k == K - 1:
                values.append(cost(prefix, acts))
            else:
                values.append(
                    sum(
                        Pe[e, e2] * Pc[c, c2] * best(prefix + ((e2, c2),), acts)
                        for e2, c2 in outcomes
                    )
                )
        return min(values)

    return sum(pe0[e] * pc0[c] * best(((e, c),), ()) for e, c in outcomes)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"initial_radio": "connected", "flush_at_end": False},
        {"upload_fractions": [0.0, 0.5, 1.0], "lambda_energy": 3.0},
        {"distance_m": 200.0, "tail_s": 0.03},
        {"radio_profile": "lte_huang2012"},
        {"radio_profile": "lte_huang2012", "initial_radio": "connected", "lambda_energy": 5.0},
        {"path_loss_model": "36814_macro", "distance_m": 600.0, "fsmc_rate": "bin_mean_snr"},
        {"path_loss_model": "38901_umi_los", "distance_m": 400.0},
        {"path_loss_model": "38901_uma_los", "distance_m": 1000.0, "carrier_hz": 28e9},
        {"path_loss_model": "38901_umi_nlos", "distance_m": 120.0},
    ],
)
def test_dp_equals_brute_force_on_tiny_instance(overrides: dict) -> None:
    env = EarlyExitUploadEnv(config=dict(TINY, **overrides))
    dp = solve_dp(env.model).initial_value
    bf = _brute_force_value(env)
    assert dp == pytest.approx(bf, abs=1e-9, rel=0)


def test_dp_policy_value_matches_simulation() -> None:
    env = EarlyExitUploadEnv()
    expected = solve_dp(env.model).initial_value
    res = run_episodes(ENV_ID, "dp_oracle", episodes=300, seed=500)
    se = res.returns.std(ddof=1) / np.sqrt(res.returns.size)
    assert abs(-res.returns.mean() - expected) < 4 * se


def test_dp_oracle_beats_baselines_over_200_episodes() -> None:
    """Paired by seed: the oracle's cost is no worse than any baseline's and strictly
    better than eager's and lazy's (95% CI of the paired difference excludes 0)."""
    dp = run_episodes(ENV_ID, "dp_oracle", episodes=200, seed=0).returns
    for name in ("eager", "lazy", "snr_threshold", "backlog_threshold"):
        other = run_episodes(ENV_ID, name, episodes=200, seed=0).returns
        diff = dp - other  # returns: positive = oracle better
        half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
        assert diff.mean() + half > 0, f"dp_oracle worse than {name}"
        if name in ("eager", "lazy"):
            assert diff.mean() - half > 0, f"dp_oracle not strictly better than {name}"


def test_decision_is_not_degenerate_on_defaults() -> None:
    """The DP's action differs from eager's and from lazy's on a real share of states."""
    env = EarlyExitUploadEnv()
    sol = solve_dp(env.model)
    q = sol.q[:, :, : env.model.limit]  # decision states: backlog below the limit
    dp_upload = q[:, 1] < q[:, 0]
    share_upload = dp_upload.mean()
    assert 0.05 < share_upload < 0.95


def test_tuner_picks_the_best_grid_point() -> None:
    cfg = {"tokens": 16}
    grid = [-100.0, 100.0]  # always upload vs never upload
    thr = tune_threshold(cfg, "snr_threshold", grid, episodes=30)
    eager = run_episodes(ENV_ID, "eager", episodes=30, seed=2_000_000, env_config=cfg)
    lazy = run_episodes(ENV_ID, "lazy", episodes=30, seed=2_000_000, env_config=cfg)
    expect = -100.0 if eager.returns.mean() > lazy.returns.mean() else 100.0
    assert thr == expect


def test_gauss_markov_mode_runs_with_near_oracle() -> None:
    cfg = {"channel": "gauss_markov", "tokens": 32}
    dp = run_episodes(ENV_ID, "dp_oracle", episodes=40, seed=0, env_config=cfg).returns
    eager = run_episodes(ENV_ID, "eager", episodes=40, seed=0, env_config=cfg).returns
    assert np.all(np.isfinite(dp))
    assert dp.mean() > eager.mean()


def test_all_action_sequences_are_reachable_on_tiny() -> None:
    """Sanity for the brute force: different action sequences give different costs."""
    env = EarlyExitUploadEnv(config=TINY)
    exits, states = [1, 1, 1, 1], np.array([0, 1, 0, 1])
    costs = {
        acts: _play(
            env, list(acts), seed=0, options={"exit_sequence": exits, "channel_states": states}
        )[0]
        for acts in itertools.product(range(2), repeat=4)
    }
    assert len({round(v, 12) for v in costs.values()}) > 4


def test_transition_is_one_broadcastable_function():
    """The env and the DP share `EarlyExitUploadModel.transition`: ints and arrays agree."""
    m = EarlyExitUploadEnv().model
    M = m.tail_steps
    b = np.arange(m.limit + 1)[:, None, None]
    r = np.arange(M + 1)[None, :, None]
    n = np.arange(m.limit + 2)[None, None, :]
    bn, rn = m.transition(b, r, n)
    np.testing.assert_array_equal(bn, b + 1 - n)
    np.testing.assert_array_equal(rn, np.where(n > 0, 0, np.minimum(r + 1, M)))
    for bi, ri, ni in [(0, 0, 0), (3, M, 0), (3, M - 1, 0), (2, 1, 3)]:
        got = m.transition(bi, ri, ni)
        assert got == (bi + 1 - ni, 0 if ni > 0 else min(ri + 1, M))
        assert all(type(x) is int for x in got)


def test_dp_memory_guard_names_fields_before_allocating():
    from mei_envs.baselines.early_exit import dp_memory_bytes

    env = EarlyExitUploadEnv(config={"tokens": 4096, "backlog_limit": 1024, "fsmc_states": 64})
    need = dp_memory_bytes(env.model) / 2**30
    assert need > 30  # the issue's ~32 GiB case
    with pytest.raises(MemoryError, match=r"tokens=4096.*backlog_limit\+1=1025.*fsmc_states=64"):
        solve_dp(env.model)
    with pytest.raises(MemoryError, match=rf"~{need:.1f} GiB"):
        solve_dp(env.model)
    small = EarlyExitUploadEnv(config={"tokens": 4, "backlog_limit": 2, "fsmc_states": 2}).model
    sol = solve_dp(small)
    assert dp_memory_bytes(small) >= sol.value.nbytes + sol.q.nbytes


@pytest.mark.parametrize(
    "config",
    [
        {"speed_mps": 5.0},
        {"device": "raspberry_pi_4"},
        {"model": "llama-2-7b", "cut_layer": 8},
        {"speed_mps": 150.0, "device": "raspberry_pi_4", "model": "llama-2-13b", "cut_layer": 20},
        {"speed_mps": 0.0, "channel": "gauss_markov", "k_factor": 5.0},
        {"speed_mps": 1e-6, "fsmc_states": 64},
    ],
    ids=["fast_user", "slow_device", "big_model", "bessel_large_x", "static_rician", "static"],
)
def test_issue9_regimes_build_and_step(config):
    """Negative/near-zero Jakes correlation (fast users, slow token periods), huge Bessel
    arguments and static channels all build, reset and step (they crashed in v0)."""
    env = EarlyExitUploadEnv(config=config)
    obs, info = env.reset(seed=0)
    for _ in range(5):
        obs, reward, term, trunc, info = env.step(1)
        assert np.isfinite(reward) and np.all(np.isfinite(obs))
        if term:
            break
    assert -1.0 <= env.model.rho <= 1.0


def _policy_value_by_enumeration(env: EarlyExitUploadEnv, policy) -> float:
    """Expected cost of a fixed policy: every (exit, channel) path, weighted, run in the env."""
    m = env.model
    Pe, Pc = m.exit_P, np.asarray(m.fsmc.transition)
    C = m.fsmc.n_states
    total = 0.0
    for path in itertools.product([(e, c) for e in (0, 1) for c in range(C)], repeat=m.K):
        prob = m.exit_stationary[path[0][0]] * m.fsmc.stationary[path[0][1]]
        for (e0, c0), (e1, c1) in itertools.pairwise(path):
            prob *= Pe[e0, e1] * Pc[c0, c1]
        obs, info = env.reset(
            seed=0,
            options={"exit_sequence": [p[0] for p in path], "channel_states": [p[1] for p in path]},
        )
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, info = env.step(policy.act(obs, info))
            ret += r
            done = term or trunc
        total += prob * -ret
    return total


@pytest.mark.parametrize(("kind", "threshold"), [("snr_threshold", 8.0), ("backlog_threshold", 2)])
def test_exact_policy_evaluation_equals_enumeration(kind: str, threshold: float) -> None:
    from mei_envs.baselines.early_exit import BacklogThresholdPolicy, SNRThresholdPolicy

    env = EarlyExitUploadEnv(config=dict(TINY, lambda_energy=2.0))
    cls = SNRThresholdPolicy if kind == "snr_threshold" else BacklogThresholdPolicy
    pol = cls(env, threshold)
    exact = solve_dp(env.model, policy=pol.action_table(env.model)).initial_value
    assert exact == pytest.approx(_policy_value_by_enumeration(env, pol), abs=1e-9, rel=0)
    assert exact >= solve_dp(env.model).initial_value - 1e-12


def test_fsmc_airtime_of_a_16_state_backlog_matches_continuous_rayleigh() -> None:
    """Issue 8: with airtime-preserving state rates, the expected airtime of a 16-state
    backlog under the chain is within 2% of the continuous Rayleigh process with the same
    link-adaptation bounds (the bin-mean-SNR rates of v0 were 16% optimistic)."""
    from mei_envs import wireless

    def airtimes(extra: dict) -> tuple[float, float]:
        m = EarlyExitUploadEnv(config=extra).model
        bits = 16 * m.state_bits
        chain = float(np.dot(m.fsmc.stationary, bits / m.state_rate_bps))
        # Continuous: E[bits / rate(mean * x)], x ~ Exp(1), by a fine midpoint rule in
        # probability (independent of the chain's bins).
        u = (np.arange(2_000_000) + 0.5) / 2_000_000
        snr = -np.log1p(-u) * m.mean_snr
        cont = float(np.mean(bits / wireless.link_rate_bps(1e6, snr)))
        return chain, cont

    chain, cont = airtimes({})
    assert abs(chain / cont - 1) < 0.02
    legacy = {"path_loss_model": "36814_macro", "distance_m": 600.0, "fsmc_rate": "bin_mean_snr"}
    chain_v0, cont_v0 = airtimes(legacy)
    assert chain_v0 == pytest.approx(0.320, abs=0.001)  # the issue's figures
    assert cont_v0 == pytest.approx(0.380, abs=0.001)
    chain_v1, _ = airtimes({**legacy, "fsmc_rate": "airtime"})
    assert abs(chain_v1 / cont_v0 - 1) < 0.02


def test_lazy_has_no_voluntary_uploads() -> None:
    res = run_episodes(ENV_ID, "lazy", episodes=5, seed=0)
    assert res.metrics["voluntary_uploads"].sum() == 0
    assert res.metrics["limit_uploads"].sum() > 0


@pytest.mark.parametrize("preset", list(EarlyExitUploadEnv.config_class.PRESETS))
def test_presets_build_and_step(preset: str) -> None:
    env = gym.make(ENV_ID, preset=preset)
    cfg = env.unwrapped.config
    for key, value in cfg.PRESETS[preset].items():
        assert getattr(cfg, key) == value
    obs, info = env.reset(seed=0)
    obs, reward, *_ = env.step(1)
    assert np.isfinite(reward)


@pytest.mark.parametrize("kind", ["snr_threshold", "backlog_threshold"])
def test_tuned_threshold_never_loses_to_a_grid_point_fsmc(kind: str) -> None:
    """fsmc mode: tuning is exact (policy evaluation), so the tuned threshold's exact value is
    the best of its grid, eager and lazy included."""
    from mei_envs.baselines.early_exit import evaluate_thresholds, threshold_grid

    cfg = {"tokens": 16, "lambda_energy": 4.0}
    env = EarlyExitUploadEnv(config=cfg)
    grid = threshold_grid(env, kind)
    scores = evaluate_thresholds(cfg, kind, grid)
    thr = tune_threshold(cfg, kind)
    assert scores[grid.index(thr)] == scores.max()
    # The grid holds eager and lazy: their exact values are among the scores.
    eager = -solve_dp(env.model, policy=np.int64(1)).initial_value
    lazy = -solve_dp(env.model, policy=np.int64(0)).initial_value
    assert scores.max() >= max(eager, lazy)
    assert np.isclose(scores, eager).any() and np.isclose(scores, lazy).any()


def test_tuned_backlog_threshold_never_loses_on_held_out_seeds_gauss_markov() -> None:
    """Issue 8's case: gauss_markov, lambda_energy=4 (v0's 40-episode tuner picked a
    threshold 4% worse than lazy). Costs are heavy-tailed here (a long backlog sent in a deep
    fade): the paired per-episode SD between thresholds is ~235, so the tuner uses common
    random numbers over 1000 training episodes. On 1000 held-out episodes the tuned
    threshold is not worse than any of these grid points (lazy and eager included): each
    paired 95% CI of (tuned - other) reaches 0 or above."""
    cfg = {"channel": "gauss_markov", "lambda_energy": 4.0, "tokens": 32}
    thr = int(tune_threshold(cfg, "backlog_threshold"))

    def held_out(threshold: int) -> np.ndarray:
        return run_episodes(
            ENV_ID,
            "backlog_threshold",
            episodes=1000,
            seed=100_000,
            env_config=cfg,
            policy_params={"threshold": threshold},
        ).returns

    tuned = held_out(thr)
    for other in (1, 6, 12, 17):  # 1 = eager, 17 = backlog_limit + 1 = lazy
        d = tuned - held_out(other)
        assert d.mean() + 1.96 * d.std(ddof=1) / np.sqrt(d.size) >= 0, (thr, other)
