"""Heuristics and offline oracles for ``mei_envs/EdgeLLMCache-v0``.

Every policy acts only at the env's decision points (a miss that needs space) and picks a
legal action: evict a cached model that frees bytes, or bypass. Online heuristics read
:meth:`EdgeLLMCacheEnv.decision_state` (past requests and the cache contents, what a real
cache knows); offline oracles also read the episode's request sequence
(:attr:`EdgeLLMCacheEnv.requests`). All sizes, freed and missing bytes come from the domain
model :mod:`mei_envs.cache` through the env.

Oracles:

* ``belady``: evicts the candidate whose next request is furthest in the future; the
  requested model is a candidate too (choosing it = bypass). Sharing enters only through
  which evictions are legal. Optimal for unit-size models without sharing (Belady 1966).
* ``belady_shared`` (session 6): the best-set rule with sizes and sharing. Each model is
  valued by its true future requests in a window (the request at ``t + d`` weighs
  ``0.99 ** (d - 1)`` for ``d`` in 1..400; the set is re-solved every 10 requests; times its
  bytes when the reward counts bytes or latency); the keep set is the best set for those
  values whose unique blocks fit in the capacity (a set-union knapsack, scipy ``milp``). A
  request outside the set is bypassed; otherwise the legal cached model outside the set
  with the least value per freed byte is evicted (ties: the furthest next request), and
  ``belady_bytes``'s rule decides when every legal victim is in the set. A heuristic, not
  an optimum (see :class:`BeladySharedPolicy`).
* ``belady_bytes`` (named ``belady_shared`` up to session 5): each candidate scores
  ``(next request - now) x bytes``, where bytes are what evicting it frees now (shared blocks
  that other cached models use are not freed, and blocks the request needs are kept), or
  the requested model's missing bytes for the bypass; the largest score goes (a model never
  requested again counts as next requested at ``2T``). A heuristic, not an optimum.
* ``offline_opt``: the exact optimum of the env's own action semantics (forced admission when
  a miss fits, evict-or-bypass at decisions, the configured reward): an exhaustive search
  over the env's ``step`` from snapshots, memoised on (request index, blocks held). Only for
  tiny instances (``max_states``).
* :func:`offline_bound`: an integer program over which blocks are held at each request
  (scipy ``milp``/HiGHS). It is a *relaxation* of the env's semantics (any subset of held and
  requested blocks may be kept, eviction at any time, admission never forced), so its value
  is an upper bound on the best return; tests check it against ``offline_opt``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from mei_envs.baselines.registry import register_policy, unwrap_env
from mei_envs.envs.edge_llm_cache import EdgeLLMCacheEnv

ENV_ID = "mei_envs/EdgeLLMCache-v0"
# belady_shared's window (requests), discount per request and re-solve period (requests),
# chosen on validation episodes seeded 200000.. (edge_llm_cache_note.md, section 1).
BELADY_SHARED_WINDOW = 400
BELADY_SHARED_GAMMA = 0.99
BELADY_SHARED_REFRESH = 10


def _unwrap(env: gym.Env) -> EdgeLLMCacheEnv:
    return unwrap_env(env, EdgeLLMCacheEnv)


class _CachePolicy:
    """Shared plumbing: at a decision, evict the legal model with the lowest ``score``."""

    def __init__(self, env: gym.Env) -> None:
        self.env = _unwrap(env)
        self.bypass = self.env.bypass_action

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        s = self.env.decision_state()
        if not s["decision"]:
            return self.bypass  # terminal step: the action is ignored
        legal = np.flatnonzero(s["freed_bytes"] > 0.0)
        return self.choose(s, legal)

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        score = self.score(s)[legal]
        return int(legal[np.argmin(score)])  # first minimum: lowest model id on ties

    def score(self, s: dict[str, Any]) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


# ---- online heuristics --------------------------------------------------------------------
class RandomPolicy(_CachePolicy):
    """Uniform over the legal actions (evictions and bypass)."""

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        super().__init__(env)
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        legal = np.flatnonzero(self.env.action_masks())
        return int(self.rng.choice(legal))


class FIFOPolicy(_CachePolicy):
    """Evict the model cached longest ago (never bypass)."""

    def score(self, s: dict[str, Any]) -> np.ndarray:
        return s["cached_since"].astype(float)


class LRUPolicy(_CachePolicy):
    """Evict the least recently requested model (never bypass)."""

    def score(self, s: dict[str, Any]) -> np.ndarray:
        return s["last_request"].astype(float)


class LFUPolicy(_CachePolicy):
    """Evict the model requested least often this episode; ties by recency (never bypass)."""

    def score(self, s: dict[str, Any]) -> np.ndarray:
        # count is an integer; the recency term in [0, 1) only breaks ties.
        return s["count"] + (s["last_request"] + 1) / (s["t"] + 2)


class GDSFPolicy(_CachePolicy):
    """Greedy-Dual-Size-Frequency (Cherkasova 1998): ``H = L + frequency / size`` set at a
    model's last access (request or admission); evict the lowest ``H`` and raise the
    inflation ``L`` to it. Size is the model's whole size (sharing-unaware, as published);
    never bypasses."""

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        self.times: list[int] = [-1]
        self.levels: list[float] = [0.0]

    def _level_at(self, t: int) -> float:
        return self.levels[bisect.bisect_right(self.times, t) - 1]

    def score(self, s: dict[str, Any]) -> np.ndarray:
        access = np.maximum(s["last_request"], s["cached_since"])
        lv = np.array([self._level_at(int(t)) for t in access])
        return lv + s["count"] / s["model_bytes"]

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        h = self.score(s)[legal]
        k = int(np.argmin(h))
        self.times.append(int(s["t"]))
        self.levels.append(max(float(h[k]), self.levels[-1]))
        return int(legal[k])


class TrimGreedyPolicy(_CachePolicy):
    """Sharing-aware greedy: value each cached model by its estimated request rate (a moving
    average, the middle half-life; times its bytes when the reward counts bytes or latency)
    and evict the lowest value per byte its eviction frees. Bypass when the victims the
    greedy plan needs (in that order, until the missing bytes fit) are worth more than the
    requested model."""

    def __init__(self, env: gym.Env, half_life_index: int | None = None) -> None:
        super().__init__(env)
        n = len(self.env.config.half_lives)
        self.k = n // 2 if half_life_index is None else int(half_life_index)
        if not 0 <= self.k < n:
            raise ValueError(
                f"trim_greedy: half_life_index={half_life_index!r}: must be in [0, {n})"
            )
        self.by_bytes = self.env.config.reward != "hits"

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        rate = s["ema"][self.k]
        value = rate * s["model_bytes"] if self.by_bytes else rate
        freed = s["freed_bytes"][legal]
        per_byte = value[legal] / freed
        order = np.argsort(per_byte, kind="stable")
        covered = np.cumsum(freed[order]) >= s["needed_bytes"] * (1 - 1e-12)
        n_victims = int(np.argmax(covered)) + 1 if covered.any() else len(order)
        if value[legal][order[:n_victims]].sum() > value[s["model"]]:
            return self.bypass
        return int(legal[order[0]])


# ---- offline oracles ----------------------------------------------------------------------
class _FuturePolicy(_CachePolicy):
    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        req = self.env.requests
        M, T = self.env.n_models, len(req)
        self.T = T
        # Request indices grouped by model (time order within a model) under the sort key
        # model * (2T + 1) + index, so one search finds every model's next request.
        order = np.argsort(req, kind="stable")
        self._times = order
        self._keys = req[order] * (2 * T + 1) + order
        self._ends = np.cumsum(np.bincount(req, minlength=M))  # each model's group end
        self._query = np.arange(M, dtype=np.int64) * (2 * T + 1)

    def next_request(self, t: int) -> np.ndarray:
        """Per model, the index of its next request after ``t`` (``2T`` if none)."""
        k = np.searchsorted(self._keys, self._query + t, side="right")
        found = k < self._ends  # the model's group holds an index after t
        out = np.full(len(self._ends), 2 * self.T, dtype=np.int64)
        out[found] = self._times[k[found]]
        return out


class BeladyPolicy(_FuturePolicy):
    """Evict the candidate (legal evictions and the requested model) requested furthest in
    the future; choosing the requested model bypasses it."""

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        nxt = self.next_request(s["t"])
        cands = np.append(legal, s["model"])
        k = int(np.argmax(nxt[cands]))  # first maximum: evictions before the bypass
        return self.bypass if k == len(legal) else int(cands[k])


class BeladyBytesPolicy(_FuturePolicy):
    """Largest ``(next request - now) x bytes`` goes: freed bytes for a cached model,
    missing bytes for the requested one (then bypass). Registered as ``belady_bytes``; it
    was ``belady_shared`` up to session 5."""

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        t, j = s["t"], s["model"]
        dist = (self.next_request(t) - t).astype(float)
        score = np.append(dist[legal] * s["freed_bytes"][legal], dist[j] * s["missing_bytes"][j])
        k = int(np.argmax(score))
        return self.bypass if k == len(legal) else int(legal[k])


class BeladySharedPolicy(BeladyBytesPolicy):
    """Offline best-set rule: keep the set of models that is worth most for the true future
    requests, sharing and sizes accounted for.

    At a decision at request index ``t``, with anchor ``a = t - t % refresh``, each model's
    value is its discounted count of true future requests in the window ``(a, a + window]``
    (weight ``gamma ** (s - a - 1)`` for the request at index ``s``; the window is cut at the
    episode's end, never read past it), times its bytes when the reward counts bytes or
    latency. The keep set is the best set for those values whose unique blocks fit in the
    capacity (the set-union knapsack of
    :func:`mei_envs.baselines.edge_llm_cache_popularity.best_static_set`, scipy ``milp``),
    restricted to models of positive value; it is solved once per anchor (``refresh``
    requests) and memoised, so the rule is a function of the state and ``t``. Then:
    bypass when the requested model is outside the set; else evict the legal cached model
    outside the set with the least value per byte its eviction frees (ties: the furthest
    next request); if every legal victim is in the set, fall back to ``belady_bytes``'s
    rule. ``window``, ``gamma`` and ``refresh`` were chosen on validation episodes (seeds
    200000..; ``experiments/figures/edge_llm_cache_note.md``, section 1).
    """

    def __init__(
        self,
        env: gym.Env,
        window: int = BELADY_SHARED_WINDOW,
        gamma: float = BELADY_SHARED_GAMMA,
        refresh: int = BELADY_SHARED_REFRESH,
    ) -> None:
        super().__init__(env)
        for name, v in (("window", window), ("refresh", refresh)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"belady_shared: {name}={v!r}: must be an integer >= 1")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"belady_shared: gamma={gamma!r}: must be a number in (0, 1]")
        self.window, self.gamma, self.refresh = int(window), float(gamma), int(refresh)
        self.by_bytes = self.env.config.reward != "hits"
        self.weights = self.gamma ** np.arange(self.window)
        self.solves = 0
        self.fallbacks = 0

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        super().reset(obs, info)
        self._req = self.env.requests
        self._sets: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def values(self, t: int) -> np.ndarray:
        """Each model's value at request index ``t``: weighted true requests in
        ``(a, a + window]`` with ``a = t - t % refresh`` (cut at the episode's end)."""
        a = t - t % self.refresh
        seg = self._req[a + 1 : min(a + 1 + self.window, self.T)]
        v = np.bincount(seg, weights=self.weights[: seg.size], minlength=self.env.n_models)
        return v * self.env.catalog.model_bytes if self.by_bytes else v

    def keep_set(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(values, keep)`` at request index ``t``: the values and the best set for them."""
        a = t - t % self.refresh
        if a not in self._sets:
            from mei_envs.baselines.edge_llm_cache_popularity import best_static_set

            v = self.values(t)
            env = self.env
            _, chosen = best_static_set(env.catalog, env.capacity_bytes, v)
            self._sets[a] = (v, chosen & (v > 0))
            self.solves += 1
        return self._sets[a]

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        t = int(s["t"])
        v, keep = self.keep_set(t)
        if not keep[s["model"]]:
            return self.bypass
        out = legal[~keep[legal]]
        if out.size == 0:
            self.fallbacks += 1
            return super().choose(s, legal)
        per_byte = v[out] / s["freed_bytes"][out]
        order = np.lexsort((-self.next_request(t)[out], per_byte))
        return int(out[order[0]])


class OfflineOptPolicy(_CachePolicy):
    """Exact optimum of the env's semantics by exhaustive, memoised search over its own
    ``step`` (see the module docstring). Raises ValueError beyond ``max_states``."""

    def __init__(self, env: gym.Env, max_states: int = 200_000) -> None:
        super().__init__(env)
        self.max_states = int(max_states)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        self.value, self.best = solve_offline(self.env, max_states=self.max_states)

    def act(self, obs: Any, info: Mapping[str, Any]) -> int:
        if self.env._pending < 0:
            return self.bypass
        return self.best[_key(self.env)]


def _key(env: EdgeLLMCacheEnv) -> tuple[int, bytes]:
    return env._t, env.state.held.tobytes()


def solve_offline(
    env: gym.Env, *, max_states: int = 200_000
) -> tuple[float, dict[tuple[int, bytes], int]]:
    """Best total reward from the env's current state to the episode's end, and the best
    action at every decision state reached, by exhaustive search over the env's ``step``.

    The env is restored to its current state afterwards. Rewards already accumulated since
    the last step (the fast-forward of ``reset``) are included, so the value equals the
    return of an optimal policy from here.
    """
    inner = _unwrap(env)
    root = inner.snapshot()
    memo: dict[tuple[int, bytes], float] = {}
    best: dict[tuple[int, bytes], int] = {}
    pending_reward = float(inner._acc["reward"])

    def value_from(snap: tuple) -> float:
        # Value of the future after ``snap`` (a decision state; its accumulated reward is
        # delivered by the next step and counted by the caller).
        inner.restore(snap)
        key = _key(inner)
        if key in memo:
            return memo[key]
        if len(memo) >= max_states:
            raise ValueError(
                f"offline_opt: more than max_states={max_states} decision states; use a "
                "tiny instance (few models, short request sequence) or raise max_states"
            )
        mask = inner.action_masks()
        top, arg = -np.inf, inner.bypass_action
        for a in np.flatnonzero(mask).tolist():
            inner.restore(snap)
            inner._acc = dict.fromkeys(inner._acc, 0.0)
            _, r, term, _, _ = inner.step(a)
            v = float(r) + (0.0 if term else value_from(inner.snapshot()))
            if v > top + 1e-12:
                top, arg = v, a
        memo[key], best[key] = top, arg
        return top

    try:
        if inner._pending < 0:
            total = pending_reward
        else:
            total = pending_reward + value_from(root)
    except RecursionError:
        raise ValueError(
            f"offline_opt: the search is deeper than Python's recursion limit "
            f"({len(inner.requests)} requests in the episode); use a tiny instance (few models, "
            "a short request sequence)"
        ) from None
    finally:
        inner.restore(root)
    return total, best


def offline_bound(
    env: gym.Env, *, time_limit_s: float = 60.0, integral: bool = True
) -> dict[str, float]:
    """Upper bound on the episode return (from reset) by the block-level integer program.

    Variables ``h[b, t]``: block ``b`` held when request ``t`` arrives (``h[., 0] = 0``,
    empty cache); ``h[b, t+1] <= h[b, t] + [b in request t]``; bytes held <= capacity; a
    hit ``z[t] <= h[b, t]`` for the request's blocks. Objective: the env's reward. Solved
    with scipy's ``milp`` (HiGHS); with ``integral=False`` the LP relaxation (a weaker
    bound). Returns ``bound`` (HiGHS' dual bound when stopped early), ``value`` (the best
    integer solution found) and ``status``.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    inner = _unwrap(env)
    cat, cfg = inner.catalog, inner.config
    req = inner.requests
    T, B = len(req), cat.n_blocks
    mem = cat.membership
    sizes = cat.block_bytes
    # Variable layout: h[b, t] for t in 1..T-1 (h at t=0 is the empty cache), then z[t].
    n_h = B * max(T - 1, 0)

    def h_index(b: int, t: int) -> int:
        return (t - 1) * B + b

    n = n_h + T
    c = np.zeros(n)
    const = 0.0
    mode = cfg.reward
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0

    def add(entries: list[tuple[int, float]], lb: float, ub: float) -> None:
        nonlocal r
        for col, v in entries:
            rows.append(r)
            cols.append(col)
            vals.append(v)
        lo.append(lb)
        hi.append(ub)
        r += 1

    for t in range(T):
        blocks = np.flatnonzero(mem[req[t]])
        z = n_h + t
        for b in blocks.tolist():
            if t == 0:
                add([(z, 1.0)], -np.inf, 0.0)  # empty cache: no hit
            else:
                add([(z, 1.0), (h_index(b, t), -1.0)], -np.inf, 0.0)
        if mode == "hits":
            c[z] = -1.0
        elif mode == "bytes":
            for b in blocks.tolist():
                if t > 0:
                    c[h_index(b, t)] -= sizes[b] / inner.bytes_ref
        else:
            # reward = -(rtt [miss] + 8 * missing / rate) / ref
            ref = inner.latency_ref_s
            const -= (inner._rtt + 8.0 * sizes[blocks].sum() / inner._rate) / ref
            c[z] -= inner._rtt / ref
            for b in blocks.tolist():
                if t > 0:
                    c[h_index(b, t)] -= 8.0 * sizes[b] / inner._rate / ref
    for t in range(1, T):
        add([(h_index(b, t), float(sizes[b])) for b in range(B)], -np.inf, inner.capacity_bytes)
        in_req = mem[req[t - 1]]
        for b in range(B):
            if t == 1:
                if not in_req[b]:
                    add([(h_index(b, t), 1.0)], -np.inf, 0.0)
            elif not in_req[b]:
                add([(h_index(b, t), 1.0), (h_index(b, t - 1), -1.0)], -np.inf, 0.0)
    a = coo_matrix((vals, (rows, cols)), shape=(r, n)).tocsr()
    res = milp(
        c,
        constraints=LinearConstraint(a, lo, hi),
        integrality=np.r_[np.full(n_h, int(integral)), np.zeros(T)],
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": float(time_limit_s), "disp": False},
    )
    if res.x is None:
        raise RuntimeError(f"offline_bound: HiGHS returned no solution ({res.message})")
    value = -float(res.fun) + const
    dual = getattr(res, "mip_dual_bound", None)
    bound = -float(dual) + const if integral and dual is not None else value
    return {"bound": max(bound, value), "value": value, "status": float(res.status)}


# ---- registration -------------------------------------------------------------------------
for _name, _factory, _kind, _desc in (
    ("random", RandomPolicy, "heuristic", "uniform over legal evictions and bypass"),
    ("fifo", FIFOPolicy, "heuristic", "evict the model cached longest ago"),
    ("lru", LRUPolicy, "heuristic", "evict the least recently requested model"),
    ("lfu", LFUPolicy, "heuristic", "evict the least frequently requested model"),
    ("gdsf", GDSFPolicy, "heuristic", "greedy-dual size frequency (whole-model sizes)"),
    (
        "trim_greedy",
        TrimGreedyPolicy,
        "heuristic",
        "sharing-aware: lowest estimated popularity per byte freed; bypass if not worth it",
    ),
    ("belady", BeladyPolicy, "oracle", "furthest next request (reads the future requests)"),
    (
        "belady_bytes",
        BeladyBytesPolicy,
        "oracle",
        "largest (time to next request) x bytes freed (reads the future requests; the "
        "belady_shared of sessions 1-5)",
    ),
    (
        "belady_shared",
        BeladySharedPolicy,
        "oracle",
        "keep the best set (a knapsack) for the true future requests (next 400, discount "
        "0.99); evict outside it, least value per freed byte; bypass requests outside it",
    ),
    (
        "offline_opt",
        OfflineOptPolicy,
        "oracle",
        "exact offline optimum by exhaustive search (tiny instances only)",
    ),
):
    register_policy(ENV_ID, _name, _factory, kind=_kind, description=_desc)
