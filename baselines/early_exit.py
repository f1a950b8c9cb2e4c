"""Baselines and the dynamic-programming oracle for ``mei_envs/EarlyExitUpload-v1``.

Heuristics read only the observation and ``info``; the oracle reads the unwrapped env's
true state (token index, backlog, channel state, radio timer). All of them are registered in
:mod:`baselines.registry` and run by ``mei-envs evaluate``.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mei_envs.baselines.registry import register_policy, unwrap_env
from mei_envs.envs.early_exit_upload import EarlyExitUploadEnv, EarlyExitUploadModel

ENV_ID = "mei_envs/EarlyExitUpload-v1"
# Seeds the tuners train on: disjoint from evaluation seeds (0.., the CLI default) and
# from the compare experiments' held-out seeds (100_000..).
TUNING_SEED = 2_000_000


def _unwrap(env: gym.Env) -> EarlyExitUploadEnv:
    return unwrap_env(env, EarlyExitUploadEnv)


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


# Memory the DP may allocate unless the caller allows more [GiB].
DP_MAX_MEMORY_GIB = 4.0


def dp_memory_bytes(model: EarlyExitUploadModel) -> float:
    """Memory of :func:`solve_dp`'s tables [bytes]: ``value`` and ``q`` (float64) over
    (token, exit or action, backlog, channel state, radio timer), plus one more table of
    per-token temporaries."""
    K, B, M = model.K, model.limit, model.tail_steps
    C = model.fsmc.n_states
    A = len(model.cfg.upload_fractions)
    per_token = (B + 1) * C * (M + 1)
    return 8.0 * per_token * (K * (2 + A) + 4 * (A + 2))


def check_dp_memory(model: EarlyExitUploadModel, max_gib: float = DP_MAX_MEMORY_GIB) -> None:
    """Raise a ``MemoryError`` naming the config fields if the DP would need more than
    ``max_gib`` GiB (checked before anything is allocated)."""
    need_gib = dp_memory_bytes(model) / 2**30
    if need_gib > max_gib:
        cfg = model.cfg
        states = "fsmc_states" if cfg.channel == "fsmc" else "dp_channel_states"
        raise MemoryError(
            f"dp_oracle: the DP over this config needs ~{need_gib:.1f} GiB (> {max_gib:g} GiB "
            f"allowed): tokens={cfg.tokens} x backlog_limit+1={cfg.backlog_limit + 1} x "
            f"{states}={model.fsmc.n_states} x radio timer states={model.tail_steps + 1} "
            f"(tail_s={model.radio.tail_s:g} s / token time {model.t_nominal_s:.3g} s) x "
            f"(2 + {len(cfg.upload_fractions)} upload_fractions) x 8 B; reduce one of these "
            "fields or pass a larger max_gib"
        )


def _mapped_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A zero float64 array on an anonymous memory map (for the DP's big tables).

    numpy advises the kernel to back large arrays with transparent huge pages; where the
    kernel then compacts memory on each fault (THP ``defrag=madvise``, as on the 2-vCPU VM
    of the benchmarks), writing the ~230 MB of the ``lte_phone`` preset's tables took ~1.4 s
    against ~0.4 s on ordinary pages. The values are the same either way.
    """
    n_bytes = 8 * int(np.prod(shape))
    if n_bytes == 0:
        return np.zeros(shape)
    return np.frombuffer(mmap.mmap(-1, n_bytes), dtype=np.float64).reshape(shape)


def solve_dp(
    model: EarlyExitUploadModel,
    *,
    policy: np.ndarray | None = None,
    max_gib: float = DP_MAX_MEMORY_GIB,
) -> DPSolution:
    """Exact value iteration on the model's FSMC (exact for ``channel="fsmc"``).

    With ``policy`` (integer actions broadcastable to ``(backlog_limit + 1, n_states,
    tail_steps + 1)``, the action taken at an exited token in each (backlog, channel state,
    radio timer)), the same recursion evaluates that fixed policy exactly instead of
    optimising: ``initial_value`` is then the policy's expected episode cost.

    Raises:
        MemoryError: before allocating, if the tables would exceed ``max_gib`` GiB (the
            message names the config fields that set their size).
    """
    check_dp_memory(model, max_gib)
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
    value = _mapped_zeros((K, 2, B + 1, C, M + 1))
    q = _mapped_zeros((K, A, B + 1, C, M + 1))  # every q[k, a] is written below
    lam_e = cfg.lambda_energy / model.energy_ref_j
    if policy is not None:
        policy = np.broadcast_to(np.asarray(policy, dtype=np.int64), shape)
        if policy.min() < 0 or policy.max() >= A:
            raise ValueError(f"policy: actions must be in [0, {A - 1}]")
    # A token's cost depends on the radio timer only through asleep = (timer >= M)
    # (tests/test_early_exit_fastpath.py checks it), so it is evaluated at one awake timer
    # and the asleep one, ``(..., 2)``, and added to the timer axis in two slices: the same
    # numbers as evaluating it at every timer, at 2 / (M + 1) of the work (M is ~800 with
    # an LTE tail).
    r_class = np.array([0, M])[None, None, :]

    def step_cost(k: int, backlog: Any, n: Any, exited: int) -> np.ndarray:
        lat, en, *_ = model.token_cost(k, backlog, n, rate_c, r_class, exited)
        return model.cost(lat, en)

    def add_cost(cost2: np.ndarray, cont: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[..., r] = cost2[..., asleep(r)] + cont[..., r]``."""
        np.add(cost2[..., :1], cont[..., :M], out=out[..., :M])
        np.add(cost2[..., 1:], cont[..., M:], out=out[..., M:])
        return out

    w_cache: dict[tuple[int, int], np.ndarray] = {}

    def continuation(k: int, e: int, b_next: Any, r_next: np.ndarray) -> np.ndarray:
        """Expected cost from token k + 1 on after exit state ``e`` at token k, moving to
        backlog ``b_next`` and timer ``r_next`` (broadcastable to ``(B + 1, C, M + 1)``)."""
        if k == K - 1:
            if not cfg.flush_at_end:
                return np.zeros(shape)
            return lam_e * model.flush_energy(b_next, rate_c, r_next)
        # W[c, b', r'] = sum_e' Pe[e, e'] sum_c' Pc[c, c'] V[k+1, e', b', c', r'], once per
        # (token, exit state): every action's continuation at that token reads the same W.
        w = w_cache.get((k, e))
        if w is None:
            w = w_cache[k, e] = np.einsum("f,cd,fbdr->cbr", Pe[e], Pc, value[k + 1])
        return w[ch, np.minimum(b_next, B), r_next]  # b' > B is masked by the caller

    for k in range(K - 1, -1, -1):
        w_cache.clear()  # only token k's continuations are needed from here on
        # Not exited: the backlog and the token's own state are uploaded.
        n = b + 1
        cont = continuation(k, 0, *model.transition(b, r, n))
        add_cost(step_cost(k, b, n, 0), cont, value[k, 0])
        # Exited: choose among the upload fractions (forced full upload when b == B; an
        # action that would leave more than B states is masked there too).
        best = value[k, 1]
        for a in range(A):
            n = model.n_upload(a, b)
            cont = continuation(k, 1, *model.transition(b, r, n))
            qa = add_cost(step_cost(k, b, n, 1), cont, q[k, a])
            qa[B] = np.inf
            if a == 0:
                best[...] = qa
            elif policy is None:
                np.minimum(best, qa, out=best)
            else:
                np.copyto(best, qa, where=policy == a)
        # Full backlog: forced upload of everything.
        cont = np.broadcast_to(continuation(k, 1, *model.transition(B, r, B + 1)), shape)[B]
        add_cost(step_cost(k, B, B + 1, 1)[0], cont, best[B])

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


class _ThresholdPolicy:
    """Upload the whole backlog when a statistic reaches ``threshold``, else wait."""

    KIND = ""

    def __init__(self, env: gym.Env, threshold: float | None = None) -> None:
        inner = _unwrap(env)
        if threshold is None:
            threshold = tune_threshold(inner.config.to_dict(), self.KIND)
        self.threshold = self._check(threshold)
        self.up = _fraction_action(inner, 1.0)
        self.wait = _fraction_action(inner, 0.0)

    def _check(self, threshold: float) -> float:
        return float(threshold)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        return self.up if self.statistic(info) >= self.threshold else self.wait

    def statistic(self, info: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def action_table(self, model: EarlyExitUploadModel) -> np.ndarray:
        """The policy's action at each DP state (backlog, FSMC state, radio timer) in fsmc
        mode, where ``info`` holds the state's own SNR: for :func:`solve_dp`."""
        raise NotImplementedError


class SNRThresholdPolicy(_ThresholdPolicy):
    """Upload the backlog when this token step's SNR [dB] is at least ``threshold_db``."""

    KIND = "snr_threshold"

    def __init__(self, env: gym.Env, threshold_db: float | None = None) -> None:
        super().__init__(env, threshold_db)

    @property
    def threshold_db(self) -> float:
        return self.threshold

    def statistic(self, info: Mapping[str, Any]) -> float:
        return info["snr_db"]

    def action_table(self, model: EarlyExitUploadModel) -> np.ndarray:
        snr_db = 10.0 * np.log10(np.maximum(model.fsmc.snr_linear, 1e-30))
        return np.where(snr_db >= self.threshold, self.up, self.wait)[None, :, None]


class BacklogThresholdPolicy(_ThresholdPolicy):
    """Upload once ``threshold`` hidden states (backlog + the current one) are held."""

    KIND = "backlog_threshold"

    def _check(self, threshold: float) -> float:
        if isinstance(threshold, bool) or int(threshold) != threshold or threshold < 1:
            raise ValueError(f"backlog_threshold: threshold={threshold!r} must be an int >= 1")
        return int(threshold)

    def statistic(self, info: Mapping[str, Any]) -> float:
        return info["backlog"] + 1

    def action_table(self, model: EarlyExitUploadModel) -> np.ndarray:
        b = np.arange(model.limit + 1)
        return np.where(b + 1 >= self.threshold, self.up, self.wait)[:, None, None]


# ---- tuner ---------------------------------------------------------------------------------
TUNING_EPISODES = 1000  # Monte Carlo episodes per grid point where exact evaluation is not used


def threshold_grid(env: EarlyExitUploadEnv, kind: str) -> list[float]:
    """Default candidates: 25 SNRs [dB] spanning the channel model's states (one below the
    lowest, so eager is on the grid, one above the highest, so lazy is), or every backlog
    count 1..backlog_limit+1 (1 = eager, backlog_limit+1 = lazy)."""
    if kind == "snr_threshold":
        snr_db = 10 * np.log10(np.maximum(env.model.fsmc.snr_linear, 1e-30))
        lo, hi = float(snr_db.min()) - 1.0, float(snr_db.max()) + 1.0
        return np.linspace(lo, hi, 25).tolist()
    return list(range(1, env.model.limit + 2))


def evaluate_thresholds(
    env_config: Mapping[str, Any],
    kind: str,
    grid: Sequence[float],
    *,
    episodes: int = TUNING_EPISODES,
    seed: int = TUNING_SEED,
    exact: bool | None = None,
) -> np.ndarray:
    """Expected return of each threshold in ``grid``.

    ``exact`` (default: in ``fsmc`` mode) evaluates each policy exactly by the DP's own
    recursion over the same state space (:func:`solve_dp` with a fixed policy: no noise).
    Otherwise every candidate runs the SAME ``episodes`` seeds ``seed, seed+1, ...``
    (common random numbers: exit and channel paths are drawn at reset, so candidates differ
    only through their actions) and the mean return is reported.
    """
    if kind not in ("snr_threshold", "backlog_threshold"):
        raise ValueError(f"tune_threshold: kind={kind!r} must be snr_threshold/backlog_threshold")
    env = EarlyExitUploadEnv(config=dict(env_config))
    cls = SNRThresholdPolicy if kind == "snr_threshold" else BacklogThresholdPolicy
    if exact is None:
        exact = env.config.channel == "fsmc"
    scores = []
    for thr in grid:
        pol = cls(env, thr)
        if exact:
            scores.append(-solve_dp(env.model, policy=pol.action_table(env.model)).initial_value)
            continue
        total = 0.0
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            done = False
            while not done:
                obs, rew, term, trunc, info = env.step(pol.act(obs, info))
                total += rew
                done = term or trunc
        scores.append(total / episodes)
    return np.asarray(scores)


def tune_threshold(
    env_config: Mapping[str, Any],
    kind: str,
    grid: Sequence[float] | None = None,
    *,
    episodes: int = TUNING_EPISODES,
    seed: int = TUNING_SEED,
    exact: bool | None = None,
) -> float:
    """The threshold with the best expected return (see :func:`evaluate_thresholds`): exact
    in ``fsmc`` mode; common random numbers over ``episodes`` training seeds (disjoint from
    evaluation seeds) otherwise.

    Args:
        env_config: the scenario (as passed to ``gym.make(..., config=...)``).
        kind: ``"snr_threshold"`` (grid in dB) or ``"backlog_threshold"`` (grid of counts).
        grid: candidate thresholds; default :func:`threshold_grid`.
        episodes: Monte Carlo episodes per candidate (not used when exact).
        seed: first training seed.
        exact: force exact policy evaluation (True) or Monte Carlo (False).
    """
    if grid is None:
        grid = threshold_grid(EarlyExitUploadEnv(config=dict(env_config)), kind)
    scores = evaluate_thresholds(env_config, kind, grid, episodes=episodes, seed=seed, exact=exact)
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
