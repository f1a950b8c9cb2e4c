"""A popularity oracle for ``mei_envs/EdgeLLMCache-v0``: ``trim_greedy``'s rule fed with the
request generator's *true* current popularity instead of an online estimate.

``trim_greedy`` values each cached model by its estimated request rate (a moving average of
past requests) and evicts the lowest value per byte its eviction frees. ``popularity_oracle``
keeps that rule and replaces the estimate by the probability with which the generator
(:class:`mei_envs.cache.ZipfDriftRequests`) draws each model *at the current request index*:
the Zipf probability of the model's current rank, after every rank swap up to and including
this request's. It reads no future request and no future swap, so it is what an online cache
could do if it knew the popularity exactly; the gap between it and ``trim_greedy`` bounds what
learning the popularity better can gain within that rule family, and the gap between it and
the offline oracles (``belady*``, ``rollout``, which read the future requests) is room no
popularity-based online rule of this kind reaches.

How the popularity is known: the env draws the whole episode's requests at ``reset`` from its
``np_random`` with ``generator.sample(rng, n)``. The policy wraps the env's generator in a
recorder that copies the random state before the draw, calls the real sampler (so the env's
requests are unchanged), and replays the same draws to rebuild the rank permutation after
each swap; the replayed requests must equal the sampled ones, or it raises (the sampler's
draw order changed). Trace replay and ``reset(options={"requests": ...})`` have no generator
popularity: the policy raises there.

Bypass rules (``bypass=``): ``"plan"`` (default, ``trim_greedy``'s): bypass when the victims
the greedy plan needs, in order until the missing bytes fit, are worth more than the
requested model; ``"per_byte"``: bypass when the requested model's value per missing byte is
below every legal candidate's value per freed byte; ``"never"``.

An online upper bound (:func:`online_hit_bound`): the cache content when request ``t``
arrives depends only on earlier requests, and request ``t`` is drawn from the current
popularity ``p_t`` independently of them, so for ANY policy that does not read future requests
``P(hit at t) = E[sum of p_t over the models complete in the cache] <= max_S p_t(S)``, the
most popularity a set ``S`` of models whose unique blocks fit in the capacity can hold (a
set-union knapsack, solved exactly with scipy's ``milp``/HiGHS). Averaged over the requests
it bounds the expected hit ratio of every online policy, MaskablePPO included, even one that
knows the popularity and its future drift. ``popularity_knapsack`` is an online policy that
aims at it: it keeps the current best set (A0-style, Coffman and Denning 1973 for unit sizes),
evicting models outside it and bypassing requests outside it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from mei_envs import cache
from mei_envs.baselines.edge_llm_cache import ENV_ID, TrimGreedyPolicy
from mei_envs.baselines.registry import register_policy

BYPASS_RULES = ("plan", "per_byte", "never")


def popularity_schedule(
    generator: cache.ZipfDriftRequests, rng: np.random.Generator, n_requests: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay ``generator.sample(rng, n_requests)``'s draws from ``rng`` (consumed).

    Returns ``(requests, swap_times, probs)``: the requests the sampler draws from this
    random state, the request indices at which the popularity changes (two ranks swap or,
    with ``phase_count > 1``, a regime starts; before that request is drawn), and
    ``probs[k, m]``, the probability of drawing model ``m`` after the first ``k`` changes
    (row 0: before any). The request at index ``t`` is drawn from row
    ``bisect_right(swap_times, t)``.
    """
    M, n = generator.n_models, int(n_requests)
    zipf = cache.zipf_probabilities(M, generator.exponent)
    perm = rng.permutation(M)  # perm[rank] = model
    ranks = np.minimum(np.searchsorted(generator.cdf, rng.random(n), side="right"), M - 1)
    if M > 1:
        events = np.flatnonzero(rng.random(n) < generator.drift_rate)
    else:
        events = np.empty(0, dtype=np.int64)
    a = rng.integers(0, M, size=events.size)
    b = (a + 1 + rng.integers(0, max(M - 1, 1), size=events.size)) % M
    if getattr(generator, "phase_count", 1) > 1:
        # The regimes' walk is the sampler's own (mei_envs.cache); the draws above and the
        # check of the requests against the sampler's are this replay's.
        requests, times, perms = generator.phased_schedule(rng, perm, ranks, events, a, b)
        probs = np.empty(perms.shape)
        np.put_along_axis(probs, perms, zipf[None, :], axis=1)
        return requests, times[1:], probs
    requests = np.empty(n, dtype=np.int64)
    probs = np.empty((events.size + 1, M))
    probs[0, perm] = zipf
    pos = np.empty(M, dtype=np.int64)
    pos[perm] = np.arange(M)
    start = 0
    for k, (t, ak, bk) in enumerate(zip(events.tolist(), a.tolist(), b.tolist(), strict=True)):
        requests[start:t] = perm[ranks[start:t]]
        ra, rb = pos[ak], pos[bk]
        perm[ra], perm[rb] = bk, ak
        pos[ak], pos[bk] = rb, ra
        probs[k + 1, perm] = zipf
        start = t
    requests[start:] = perm[ranks[start:]]
    return requests, events.astype(np.int64), probs


def best_static_set(
    catalog: cache.Catalog, capacity_bytes: float, popularity: np.ndarray
) -> tuple[float, np.ndarray]:
    """``max_S sum_{m in S} popularity[m]`` over model sets ``S`` whose unique blocks fit in
    ``capacity_bytes``, and the best ``S`` as a bool mask over models (scipy ``milp``).

    Variables: ``x[b]`` (block held, binary) and ``y[m]`` (model complete, in [0, 1]) with
    ``y[m] <= x[b]`` for each block ``b`` of ``m`` and ``sum bytes[b] x[b] <= capacity``.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    mem = catalog.membership
    M, B = mem.shape
    mm, bb = np.nonzero(mem)
    n_rows = mm.size
    rows = np.r_[np.arange(n_rows), np.arange(n_rows), np.full(B, n_rows)]
    cols = np.r_[B + mm, bb, np.arange(B)]
    vals = np.r_[np.ones(n_rows), -np.ones(n_rows), catalog.block_bytes]
    a = coo_matrix((vals, (rows, cols)), shape=(n_rows + 1, B + M)).tocsr()
    hi = np.r_[np.zeros(n_rows), capacity_bytes * (1 + 1e-12)]
    res = milp(
        np.r_[np.zeros(B), -np.asarray(popularity, dtype=float)],
        constraints=LinearConstraint(a, -np.inf, hi),
        integrality=np.r_[np.ones(B), np.zeros(M)],
        bounds=Bounds(0.0, 1.0),
        options={"disp": False, "mip_rel_gap": 1e-9},
    )
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"best_static_set: HiGHS did not solve the knapsack ({res.message})")
    held = res.x[:B] > 0.5
    chosen = ~(mem & ~held).any(axis=1)  # every block of the model held
    return float(popularity[chosen].sum()), chosen


def online_hit_bound(
    catalog: cache.Catalog,
    capacity_bytes: float,
    swap_times: np.ndarray,
    probs: np.ndarray,
    n_requests: int,
) -> float:
    """Upper bound on the expected hit ratio of any online policy over ``n_requests``
    requests drawn with the popularity schedule ``(swap_times, probs)`` (see the module
    docstring): the mean over requests of :func:`best_static_set`'s value."""
    bounds = np.r_[0, np.asarray(swap_times, dtype=np.int64), n_requests]
    lengths = np.diff(bounds)  # requests drawn from each row of probs
    memo: dict[bytes, float] = {}
    total = 0.0
    for row, n in zip(probs, lengths.tolist(), strict=True):
        if n == 0:
            continue
        key = row.tobytes()
        if key not in memo:
            memo[key] = best_static_set(catalog, capacity_bytes, row)[0]
        total += n * memo[key]
    return total / n_requests


class _RecordingGenerator:
    """Stands in for the env's request generator: samples with the real one and keeps the
    popularity schedule of the last draw (see :func:`popularity_schedule`)."""

    def __init__(self, inner: cache.ZipfDriftRequests) -> None:
        self.inner = inner
        self.last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:  # n_models, exponent, drift_rate, cdf
        if name == "inner":  # during unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.inner, name)

    def sample(self, rng: np.random.Generator, n_requests: int) -> np.ndarray:
        bit_gen = type(rng.bit_generator)()
        bit_gen.state = rng.bit_generator.state
        out = self.inner.sample(rng, n_requests)
        replay, swaps, probs = popularity_schedule(
            self.inner, np.random.Generator(bit_gen), n_requests
        )
        if not np.array_equal(replay, out):
            raise RuntimeError(
                "popularity_oracle: replaying ZipfDriftRequests.sample's draws gave other "
                "requests than the sampler; its draw order changed, update "
                "mei_envs.baselines.edge_llm_cache_popularity.popularity_schedule"
            )
        self.last = (out, swaps, probs)
        return out


class PopularityOracle(TrimGreedyPolicy):
    """``trim_greedy``'s rule with the generator's true current popularity as the rate."""

    def __init__(self, env: gym.Env, bypass: str = "plan") -> None:
        super().__init__(env)
        if bypass not in BYPASS_RULES:
            raise ValueError(f"popularity_oracle: bypass={bypass!r}: must be one of {BYPASS_RULES}")
        self.bypass_rule = bypass
        gen = self.env.generator
        if not isinstance(gen, _RecordingGenerator):
            gen = _RecordingGenerator(gen)
            self.env.generator = gen
        self.recorder = gen

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        last = self.recorder.last
        if last is None or self.env.requests is not last[0]:
            raise ValueError(
                "popularity_oracle: this episode's requests were not drawn by the env's "
                "generator (a trace file or reset(options={'requests': ...})); the true "
                "popularity is known only for generated requests"
            )
        _, self.swap_times, self.probs = last
        self._swaps = self.swap_times.tolist()

    def popularity(self, t: int) -> np.ndarray:
        """Probability of each model being the request at index ``t`` (swaps up to ``t``)."""
        return self.probs[bisect.bisect_right(self._swaps, t)]

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        ema = s["ema"].copy()
        ema[self.k] = self.popularity(int(s["t"]))
        s = {**s, "ema": ema}
        if self.bypass_rule == "plan":
            return super().choose(s, legal)
        value = ema[self.k] * s["model_bytes"] if self.by_bytes else ema[self.k]
        per_byte = value[legal] / s["freed_bytes"][legal]
        k = int(np.argmin(per_byte))
        j = s["model"]
        if self.bypass_rule == "per_byte" and value[j] / s["missing_bytes"][j] < per_byte[k]:
            return self.bypass
        return int(legal[k])


class PopularityKnapsack(PopularityOracle):
    """Keep the best static set for the current true popularity (:func:`best_static_set`;
    popularity times model bytes when the reward counts bytes or latency):
    evict the cached model outside it with the least popularity per freed byte; bypass a
    request outside it. If every legal victim is in the set (sharing can leave bytes only
    they free), fall back to ``popularity_oracle``'s rule."""

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        super().reset(obs, info)
        self._sets: dict[int, np.ndarray] = {}

    def target(self, t: int) -> np.ndarray:
        k = bisect.bisect_right(self._swaps, t)
        if k not in self._sets:
            env = self.env
            value = self.probs[k] * env.catalog.model_bytes if self.by_bytes else self.probs[k]
            self._sets[k] = best_static_set(env.catalog, env.capacity_bytes, value)[1]
        return self._sets[k]

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        t = int(s["t"])
        keep = self.target(t)
        if not keep[s["model"]]:
            return self.bypass
        out = legal[~keep[legal]]
        if out.size == 0:
            return super().choose(s, legal)
        per_byte = self.popularity(t)[out] / s["freed_bytes"][out]
        return int(out[np.argmin(per_byte)])


class EstimatedKnapsack(TrimGreedyPolicy):
    """Online: ``popularity_knapsack``'s rule with ``trim_greedy``'s estimated popularity
    (the moving average of past requests, middle half-life), the best set recomputed every
    ``refresh`` requests. Reads nothing but the decision state."""

    def __init__(self, env: gym.Env, half_life_index: int | None = None, refresh: int = 50) -> None:
        super().__init__(env, half_life_index)
        if isinstance(refresh, bool) or not isinstance(refresh, (int, np.integer)) or refresh < 1:
            raise ValueError(f"knapsack_greedy: refresh={refresh!r}: must be an integer >= 1")
        self.refresh = int(refresh)

    def reset(self, obs: Any, info: Mapping[str, Any]) -> None:
        self._since = -(10**18)
        self._keep: np.ndarray | None = None

    def keep_set(self) -> np.ndarray | None:
        """The models of the best set it last computed (a bool copy; None before the first
        decision of the episode). ``mei_envs.agents.hint`` shows it to agents."""
        return None if self._keep is None else self._keep.copy()

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        t, rate = int(s["t"]), s["ema"][self.k]
        if self._keep is None or t - self._since >= self.refresh:
            env = self.env
            value = rate * env.catalog.model_bytes if self.by_bytes else rate
            self._keep = best_static_set(env.catalog, env.capacity_bytes, value)[1]
            self._since = t
        keep = self._keep
        if not keep[s["model"]]:
            return self.bypass
        out = legal[~keep[legal]]
        if out.size == 0:
            return super().choose(s, legal)
        return int(out[np.argmin(rate[out] / s["freed_bytes"][out])])


register_policy(
    ENV_ID,
    "knapsack_greedy",
    EstimatedKnapsack,
    kind="heuristic",
    description="keep the best set for the estimated popularity (a knapsack, refreshed "
    "every 50 requests); online",
)

register_policy(
    ENV_ID,
    "popularity_knapsack",
    PopularityKnapsack,
    kind="oracle",
    description="keep the best set for the generator's true current popularity "
    "(a knapsack; reads the drift state, not future requests)",
)

register_policy(
    ENV_ID,
    "popularity_oracle",
    PopularityOracle,
    kind="oracle",
    description="trim_greedy's rule with the generator's true current popularity "
    "(reads the drift state, not future requests)",
)
