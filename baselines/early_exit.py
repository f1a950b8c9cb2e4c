"""Baselines and the dynamic-programming oracle for ``mei_envs/EarlyExitUpload-v0``.

Heuristics read only the observation and ``info``; the oracle reads the unwrapped env's
true state (token index, backlog, channel state, radio timer). All of them are registered in
:mod:`baselines.registry` and run by ``mei-envs evaluate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mei_envs.baselines.registry import register_policy
from mei_envs.envs.early_exit_upload import EarlyExitUploadEnv, EarlyExitUploadModel

ENV_ID = "mei_envs/EarlyExitUpload-v0"
# Seeds the tuners train on: disjoint from evaluation seeds (0.., the CLI default) and
# from the compare experiments' held-out seeds (100_000..).
TUNING_SEED = 2_000_000


def _unwrap(env: gym.Env) -> EarlyExitUploadEnv:
    inner = env.unwrapped
    if not isinstance(inner, EarlyExitUploadEnv):
        raise TypeError(f"expected an EarlyExitUpload env, got {type(inner).__name__}")
    return inner


def _fraction_action(env: EarlyExitUploadEnv, fraction: float) -> int:
    return int(env.config.upload_fractions.index(fraction))


# ---- dynamic programming ----------------------------------------------------------------
@dataclass
class DPSolution:
    """Finite-horizon DP over (token, exit, backlog, channel state, radio timer).

    ``value[k, e, b, c, r]`` is the expected cost from token ``k`` on, after observing the
    token's exit indicator ``e`` and channel state ``c``, with backlog ``b`` and radio timer
    ``r``. ``q[k, a, b, c, r]`` is the expected cost of action ``a`` at an exited token
    (``inf`` where the backlog is full and the upload is forced). ``initial_value`` is the
    expected cost of an episode (the negative of the expected return).
    """

    value: np.ndarray
    q: np.ndarray
    initial_value: float


def solve_dp(model: EarlyExitUploadModel) -> DPSolution:
    """Exact value iteration on the model's FSMC (exact for ``channel="fsmc"``)."""
    cfg = model.cfg
    K, B, M = model.K, model.limit, model.tail_steps
    C = model.fsmc.n_states
    A = len(cfg.upload_fractions)
    Pc = np.asarray(model.fsmc.transition, float)
    Pe = model.exit_P
    rate = model.state_rate_bps
    b = np.arange(B + 1)[:, None, None]
    ch = np.arange(C)[None, :, None]
    r = np.arange(M + 1)[None, None, :]
    rate_c = rate[ch]
    shape = (B + 1, C, M + 1)
    value = np.zeros((K, 2, B + 1, C, M + 1))
    q = np.full((K, A, B + 1, C, M + 1), np.inf)
    lam_e = cfg.lambda_energy / model.energy_ref_j

    def continuation(k: int, e: int, b_next: np.ndarray, r_next: np.ndarray) -> np.ndarray:
        if k == K - 1:
            if not cfg.flush_at_end:
                return np.zeros(shape)
            return lam_e * model.flush_energy(b_next, rate_c, r_next) * np.ones(shape)
        # W[c, b', r'] = sum_e' Pe[e, e'] sum_c' Pc[c, c'] V[k+1, e', b', c', r']
        w = np.einsum("f,cd,fbdr->cbr", Pe[e], Pc, value[k + 1])
        bb = np.broadcast_to(np.minimum(b_next, B), shape)  # b' > B is masked by the caller
        rr = np.broadcast_to(r_next, shape)
        cc = np.broadcast_to(ch, shape)
        return w[cc, bb, rr]

    for k in range(K - 1, -1, -1):
        # Not exited: the backlog and the token's own state are uploaded.
        n = b + 1
        lat, en, *_ = model.token_cost(k, b, n, rate_c, r, 0)
        cost = model.cost(lat, en)
        value[k, 0] = cost + continuation(k, 0, *model.transition(b, r, n))
        # Exited: choose among the upload fractions (forced full upload when b == B).
        best = np.full(shape, np.inf)
        for a in range(A):
            n = model.n_upload(a, b) + 0 * r
            lat, en, *_ = model.token_cost(k, b, n, rate_c, r, 1)
            b_next, r_next = model.transition(b, r, n)
            qa = model.cost(lat, en) + continuation(k, 1, b_next, r_next)
            qa = np.where(b_next > B, np.inf, qa) * np.ones(shape)
            qa[B] = np.inf
            q[k, a] = qa
            best = np.minimum(best, qa)
        # Full backlog: forced upload of everything.
        n_full = B + 1
        lat, en, *_ = model.token_cost(k, B, n_full, rate_c[0], r[0], 1)
        forced = model.cost(lat, en) + continuation(k, 1, *model.transition(b, r, b + 1))[B]
        best[B] = forced
        value[k, 1] = best

    r0 = M if cfg.initial_radio == "idle" else 0
    init = float(
        np.einsum("e,c,ec->", model.exit_stationary, model.fsmc.stationary, value[0, :, 0, :, r0])
    )
    return DPSolution(value, q, init)


class DPOraclePolicy:
    """Acts greedily on the DP's Q-values at the env's true state (oracle)."""

    def __init__(self, env: gym.Env) -> None:
        self.env = _unwrap(env)
        self.solution = solve_dp(self.env.model)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        st = self.env.decision_state()
        if not st["decision"]:
            return 0  # terminal step: the action is ignored
        q = self.solution.q[st["token"], :, st["backlog"], st["channel_state"], st["radio_timer"]]
        return int(np.argmin(q))


# ---- heuristics ---------------------------------------------------------------------------
class _FixedFractionPolicy:
    """Always the action that uploads ``FRACTION`` of the backlog (with the current state)."""

    FRACTION = 1.0

    def __init__(self, env: gym.Env) -> None:
        self.action = _fraction_action(_unwrap(env), self.FRACTION)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        return self.action


class EagerPolicy(_FixedFractionPolicy):
    """Upload every hidden state at once (never hold a backlog)."""

    FRACTION = 1.0


class LazyPolicy(_FixedFractionPolicy):
    """Never upload voluntarily: only forced uploads (non-exited token, full backlog)."""

    FRACTION = 0.0


class SNRThresholdPolicy:
    """Upload the backlog when this token step's SNR [dB] is at least ``threshold_db``."""

    def __init__(self, env: gym.Env, threshold_db: float | None = None) -> None:
        inner = _unwrap(env)
        if threshold_db is None:
            threshold_db = tune_threshold(inner.config.to_dict(), "snr_threshold")
        self.threshold_db = float(threshold_db)
        self.up = _fraction_action(inner, 1.0)
        self.wait = _fraction_action(inner, 0.0)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        return self.up if info["snr_db"] >= self.threshold_db else self.wait


class BacklogThresholdPolicy:
    """Upload once ``threshold`` hidden states (backlog + the current one) are held."""

    def __init__(self, env: gym.Env, threshold: int | None = None) -> None:
        inner = _unwrap(env)
        if threshold is None:
            threshold = int(tune_threshold(inner.config.to_dict(), "backlog_threshold"))
        if isinstance(threshold, bool) or int(threshold) != threshold or threshold < 1:
            raise ValueError(f"backlog_threshold: threshold={threshold!r} must be an int >= 1")
        self.threshold = int(threshold)
        self.up = _fraction_action(inner, 1.0)
        self.wait = _fraction_action(inner, 0.0)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        return self.up if info["backlog"] + 1 >= self.threshold else self.wait


# ---- tuner ---------------------------------------------------------------------------------
def tune_threshold(
    env_config: Mapping[str, Any],
    kind: str,
    grid: Sequence[float] | None = None,
    *,
    episodes: int = 40,
    seed: int = TUNING_SEED,
) -> float:
    """Pick the threshold with the best mean return on training seeds ``seed, seed+1, ...``.

    Args:
        env_config: the scenario (as passed to ``gym.make(..., config=...)``).
        kind: ``"snr_threshold"`` (grid in dB) or ``"backlog_threshold"`` (grid of counts).
        grid: candidate thresholds; default: SNR quantiles of the channel model's states,
            or 1..backlog_limit+1.
        episodes: training episodes per candidate.
        seed: first training seed (keep it disjoint from evaluation seeds).
    """
    if kind not in ("snr_threshold", "backlog_threshold"):
        raise ValueError(f"tune_threshold: kind={kind!r} must be snr_threshold/backlog_threshold")
    env = EarlyExitUploadEnv(config=dict(env_config))
    if grid is None:
        if kind == "snr_threshold":
            snr_db = 10 * np.log10(env.model.fsmc.snr_linear)
            lo, hi = float(snr_db.min()) - 1.0, float(snr_db.max()) + 1.0
            grid = np.linspace(lo, hi, 25).tolist()
        else:
            grid = list(range(1, env.model.limit + 2))
    scores = []
    for thr in grid:
        pol = (
            SNRThresholdPolicy(env, float(thr))
            if kind == "snr_threshold"
            else BacklogThresholdPolicy(env, int(thr))
        )
        total = 0.0
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            done = False
            while not done:
                obs, rew, term, trunc, info = env.step(pol.act(obs, info))
                total += rew
                done = term or trunc
        scores.append(total / episodes)
    return float(grid[int(np.argmax(scores))])


register_policy(
    ENV_ID,
    "eager",
    EagerPolicy,
    kind="heuristic",
    description="upload every hidden state immediately",
)
register_policy(
    ENV_ID,
    "lazy",
    LazyPolicy,
    kind="heuristic",
    description="upload only when forced (non-exited token or full backlog)",
)
register_policy(
    ENV_ID,
    "snr_threshold",
    SNRThresholdPolicy,
    kind="heuristic",
    description="upload when SNR >= threshold_db (tuned on training seeds by default)",
)
register_policy(
    ENV_ID,
    "backlog_threshold",
    BacklogThresholdPolicy,
    kind="heuristic",
    description="upload when backlog+1 >= threshold (tuned on training seeds by default)",
)
register_policy(
    ENV_ID,
    "dp_oracle",
    DPOraclePolicy,
    kind="oracle",
    description="finite-horizon DP on the FSMC at the true state (exact in fsmc mode)",
)
