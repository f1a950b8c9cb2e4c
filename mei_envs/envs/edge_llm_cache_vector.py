"""Native vector version of ``mei_envs/EdgeLLMCache-v0`` (``vector_entry_point``).

``gym.make_vec("mei_envs/EdgeLLMCache-v0", num_envs=n, vectorization_mode="vector_entry_point")``
follows the contract of :mod:`mei_envs.vector` (SAME_STEP autoreset, sub-env ``i`` seeded
``seed + i`` reproduces the single env seeded ``seed + i`` step by step, ``action_masks()`` of
shape ``(n, M + 1)``).

How it is batched: the state of all ``n`` caches lives in ``(n, ...)`` arrays and every
transition calls the broadcastable domain functions of :mod:`mei_envs.cache`
(:func:`~mei_envs.cache.held_quantities`, :func:`~mei_envs.cache.freed_bytes`,
:func:`~mei_envs.cache.eviction_drop`, :func:`~mei_envs.cache.fetch_delay_s`): the products
that :meth:`mei_envs.cache.CacheState.check` holds the single env's block-by-block cache state
to (bit for bit; the property tests call it on every step). A step applies
the n actions at once, then fast-forwards: each iteration serves the current request of every
sub-env still fast-forwarding (hits, admissions, bypasses) with numpy over those rows, until
each has reached its next decision or its episode's end. Episode draws (request sequences)
loop over the sub-envs that reset, each from its own generator, through the single env's own
``_draw_requests``. With the sizes of a generated catalog (exact binary fractions) every
quantity is bit-identical to the single env's; a custom catalog whose sizes are arbitrary
floats may differ in the last bit of byte sums (the batched products add in another order).

With at most :data:`SCALAR_MAX_ENVS` sub-envs (the training sizes) the batch is not worth
its numpy overhead: the vector env then holds one single env (``info="lean"``) per sub-env
and steps them in turn (``_step_subs``), so sub-env ``i`` IS the single env, drawing from
``self.rngs[i]``; the batched state above is unused. Both paths give the same observations,
rewards and infos (``tests/test_edge_llm_cache_perf.py`` checks each against
``SyncVectorEnv``).

Infos carry the lean keys (the single env's ``info="lean"``, whatever the config's ``info``
says): the four episode-so-far ratios and the per-step sums of
``EdgeLLMCacheEnv.metadata["info_metrics"]``, plus ``episode_<key>`` in ``final_info`` on the
steps that end an episode, laid out as ``SyncVectorEnv`` lays them out. ``reset(options=...)``
is not supported (replaying a sequence is a single-env feature).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import numpy as np

from mei_envs import cache
from mei_envs.envs.edge_llm_cache import (
    _ACC_KEYS,
    _TOTAL_KEYS,
    LEAN_LAST_KEYS,
    LEAN_SUM_KEYS,
    N_GLOBAL_FEATURES,
    EdgeLLMCacheEnv,
    _time_lookup,
    _time_tables,
)
from mei_envs.vector import MeiVectorEnv, VectorStep

_A = {k: i for i, k in enumerate(_ACC_KEYS)}
_TT = {k: i for i, k in enumerate(_TOTAL_KEYS)}
_SUM_COLS = [_A[k] for k in LEAN_SUM_KEYS]
_TOT_COLS = [_A[k] for k in _TOTAL_KEYS]  # acc columns that the episode totals also add
_LEAN_KEYS = (*LEAN_LAST_KEYS, *LEAN_SUM_KEYS)
_EPISODE_KEYS = tuple(f"episode_{k}" for k in _LEAN_KEYS)
_LEAN_MASKS = tuple("_" + k for k in _LEAN_KEYS)
_EPISODE_MASKS = tuple("_" + k for k in _EPISODE_KEYS)
_lean_values = operator.itemgetter(*_LEAN_KEYS)  # a lean info's values, in that order
_episode_values = operator.itemgetter(*_EPISODE_KEYS)

#: Up to this many sub-envs the vector env steps one single env per sub-env instead of the
#: batched numpy path: each batched call costs microseconds of numpy overhead whatever the
#: batch's size, and a step fast-forwards over several requests (an iteration each), so the
#: batch only pays with many sub-envs. CPU us per env-step (session 8, default config, legal
#: random actions; benchmarks/README.md, session-8 section): batched 517 / 262 / 192 / 146 /
#: 71 / 25 at 1 / 4 / 8 / 16 / 64 / 256 sub-envs, one single env each ~70-96 at every n;
#: instructions per env-step at 4 envs 749k batched, 246k per sub-env.
SCALAR_MAX_ENVS = 32


@functools.lru_cache(maxsize=8)
def _python_pow_table(T: int, decay: tuple[float, ...]) -> np.ndarray | None:
    """``tab[s, k] = decay[s] ** k`` by Python's float power (k <= T), the operation
    :meth:`mei_envs.cache.RequestStats.record` uses, so look-ups give its bits."""
    if T > 1 << 17:
        return None
    tab = np.array([[d**k for k in range(T + 1)] for d in decay])
    tab.flags.writeable = False
    return tab


class EdgeLLMCacheVectorEnv(MeiVectorEnv):
    """``num_envs`` EdgeLLMCache-v0 caches stepped together (see the module docstring)."""

    single_env_class = EdgeLLMCacheEnv

    def _setup(self, single: EdgeLLMCacheEnv) -> None:
        cfg, cat = single.config, single.catalog
        n, M, B = self.num_envs, single.n_models, cat.n_blocks
        # Few sub-envs: one single env (lean info) per sub-env, stepped in turn (see
        # SCALAR_MAX_ENVS); the batched state below is then unused.
        # obs_regime_features: the batched path has no per-regime rows, so every size uses
        # the single envs (which compute them).
        self.scalar = n <= SCALAR_MAX_ENVS or bool(cfg.obs_regime_features)
        self.subs = [EdgeLLMCacheEnv(cfg, info="lean") for _ in range(n)] if self.scalar else []
        S = len(single.stats.decay)
        self.catalog, self.n_models, self.n_features = cat, M, single.n_features
        self.raise_on_invalid = cfg.invalid_action == "raise"
        self.T = cfg.requests_per_episode
        self.cap = single.capacity_bytes
        self.cap_tol = single.capacity_bytes * (1 + 1e-12)
        self.size = cat.model_bytes
        self.delivery_s = np.asarray(single._delivery_s)
        self.too_large = np.asarray(single._too_large, dtype=bool)
        self.decay = np.asarray(single.stats.decay)
        self.one_minus = np.asarray(single.stats._one_minus)
        self.tables = _time_tables(self.T, tuple(single.stats.decay))
        decay = tuple(single.stats.decay)
        self.lookup = _time_lookup(self.T, decay) if self.tables is not None else None
        self.ema_off = 2 * self.T + 4 + self.T * np.arange(S)  # where decay s's powers start
        self.py_pow = _python_pow_table(self.T, tuple(single.stats.decay))
        self.static_rows = single._static_rows.copy()
        # What serving a hit adds to the sums, per model (missing = 0 in _serve's formulas:
        # fetch 0 s, deadline met, bytes hit = model bytes; x + 0.0 and x - 0.0 are x).
        zero = np.zeros(M)
        self.hit_inc = self._increments(np.arange(M), zero)
        self.hit_inc.flags.writeable = False
        self._rows = np.arange(n)
        # State, one row per sub-env.
        self.held = np.zeros((n, B), dtype=bool)
        self.cached = np.zeros((n, M), dtype=bool)
        self.refcount = np.zeros((n, B))
        self.missing = np.tile(cat.model_bytes, (n, 1))
        self.used = np.zeros(n)
        self.marks = np.full((n, 2, M), -1, dtype=np.int64)  # last request, cached since
        self.count = np.zeros((n, M), dtype=np.int64)
        # The averages below two rows of ones (the single env's RequestStats layout), so
        # the observation scales [1, 1, averages] by its looked-up factors in one product.
        self.padded = np.ones((n, 2 + S, M))
        self.ema = self.padded[:, 2:]
        self.ema[:] = 0.0
        self.ema_t = np.zeros((n, M), dtype=np.int64)
        self.seen = np.zeros((n, M))  # 1.0 once requested
        self.t = np.zeros(n, dtype=np.int64)
        self.pending = np.full(n, -1, dtype=np.int64)
        self.freed = np.zeros((n, M))
        self.mask = np.zeros((n, M + 1), dtype=bool)
        self.mask[:, M] = True
        self.done = np.ones(n, dtype=bool)
        self.final_pending = np.zeros(n, dtype=bool)
        # This step's sums and the episode's totals side by side: one addition serves both.
        self.sums = np.zeros((n, len(_ACC_KEYS) + len(_TOTAL_KEYS)))
        self.acc = self.sums[:, : len(_ACC_KEYS)]
        self.tot = self.sums[:, len(_ACC_KEYS) :]
        self.ep_sums = np.zeros((n, len(LEAN_SUM_KEYS)))
        self.requests = np.zeros((n, self.T), dtype=np.int64)

    # ---- domain transitions on rows ----------------------------------------------------
    def _refresh(self, r: np.ndarray) -> np.ndarray:
        cached, missing, refcount, used = cache.held_quantities(self.catalog, self.held[r])
        new = cached > self.cached[r]
        self.cached[r], self.missing[r], self.refcount[r], self.used[r] = (
            cached,
            missing,
            refcount,
            used,
        )
        return new

    def _increments(self, j: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """``(k, len(_ACC_KEYS) + len(_TOTAL_KEYS))``: what serving requests ``j`` with
        ``missing`` bytes fetched adds to each sum and total (the single env's ``_serve``)."""
        single = self.single_env
        size = self.size[j]
        hit = missing <= 0.0
        fetch_s = cache.fetch_delay_s(missing, single._rtt, single._rate)
        inc = np.zeros((j.size, len(_ACC_KEYS)))
        inc[:, _A["requests"]] = 1.0
        inc[:, _A["hits"]] = hit
        inc[:, _A["bytes_requested"]] = size
        inc[:, _A["bytes_hit"]] = size - missing
        inc[:, _A["backhaul_bytes"]] = missing
        inc[:, _A["latency_s"]] = fetch_s + self.delivery_s[j]
        inc[:, _A["deadline_met"]] = fetch_s <= single._deadline
        mode = single._reward_mode
        if mode == 0:
            inc[:, _A["reward"]] = hit
        elif mode == 1:
            inc[:, _A["reward"]] = (size - missing) / single.bytes_ref
        else:  # x + (-v) == x - v in IEEE arithmetic
            inc[:, _A["reward"]] = -(fetch_s / single.latency_ref_s)
        return np.concatenate([inc, inc[:, _TOT_COLS]], axis=1)

    def _serve(self, r: np.ndarray, j: np.ndarray, missing: np.ndarray | None) -> None:
        """Account requests ``j`` of rows ``r`` served with ``missing`` bytes fetched (None:
        hits). Each row's sums get one addition per request, as in the single env."""
        if r.size == 0:
            return
        inc = self.hit_inc[j] if missing is None else self._increments(j, missing)
        self.sums[r] += inc
        self.t[r] += 1

    def _bypass(self, r: np.ndarray, j: np.ndarray) -> None:
        if r.size == 0:
            return
        self.acc[r, _A["bypasses"]] += 1.0
        self._serve(r, j, self.missing[r, j])
        orphan = self.refcount[r] == 0
        orphan &= self.held[r]
        some = orphan.any(axis=1)
        if some.any():
            ro = r[some]
            self.held[ro] ^= orphan[some]
            self._refresh(ro)
        self.pending[r] = -1

    def _admit(self, r: np.ndarray, j: np.ndarray, missing: np.ndarray) -> None:
        if r.size == 0:
            return
        self.held[r] |= self.catalog.membership[j]
        new = self._refresh(r)
        since = self.marks[r, 1]
        since[new] = np.broadcast_to(self.t[r][:, None], new.shape)[new]
        self.marks[r, 1] = since
        self._serve(r, j, missing)
        self.pending[r] = -1

    def _decide(self, r: np.ndarray, j: np.ndarray) -> None:
        """Misses of models ``j`` in rows ``r``: admit, bypass or make them pending."""
        if r.size == 0:
            return
        missing = self.missing[r, j]
        big = self.too_large[j]
        if big.any():
            self._bypass(r[big], j[big])
            r, j, missing = r[~big], j[~big], missing[~big]
        fits = self.used[r] + missing <= self.cap_tol
        self._admit(r[fits], j[fits], missing[fits])
        r, j = r[~fits], j[~fits]
        if r.size == 0:
            return
        freed = cache.freed_bytes(self.catalog, self.cached[r], self.refcount[r], j)
        legal = freed > 0.0
        choice = legal.any(axis=1)
        self._bypass(r[~choice], j[~choice])
        rc = r[choice]
        self.pending[rc] = j[choice]
        self.freed[rc] = freed[choice]
        self.mask[rc, : self.n_models] = legal[choice]

    def _record(self, r: np.ndarray, j: np.ndarray) -> None:
        t = self.t[r]
        gap = t - self.ema_t[r, j]
        if self.py_pow is not None:
            factor = self.py_pow[:, gap].T  # (k, S)
        else:
            factor = np.array([[d**g for d in self.single_env.stats.decay] for g in gap.tolist()])
        self.ema[r, :, j] = self.ema[r, :, j] * factor + self.one_minus
        self.ema_t[r, j] = t
        self.marks[r, 0, j] = t
        self.count[r, j] += 1
        self.seen[r, j] = 1.0

    def _advance(self, r: np.ndarray) -> None:
        """Serve requests of rows ``r`` until each needs a decision or its episode ends."""
        M = self.n_models
        self.freed[r] = 0.0
        self.mask[r, :M] = False
        T = self.T
        active = r[self.t[r] < T]
        while active.size:
            j = self.requests[active, self.t[active]]
            self._record(active, j)
            hit = self.cached[active, j]
            if hit.all():
                self._serve(active, j, None)
            else:
                self._serve(active[hit], j[hit], None)
                self._decide(active[~hit], j[~hit])
            active = active[(self.t[active] < T) & (self.pending[active] < 0)]
        ended = r[(self.t[r] >= T) & (self.pending[r] < 0)]
        self.done[ended] = True

    # ---- reset -------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(
                f"reset options {sorted(options)}: the vector env takes none (replay a "
                "request sequence with the single env)"
            )
        if self.scalar:
            return self._reset_subs(mask)
        r = np.flatnonzero(mask)
        single = self.single_env
        for i in r.tolist():
            single._np_random = self.rngs[i]  # sub-env i's own generator
            self.requests[i] = single._draw_requests(None)
        M = self.n_models
        self.held[r] = False
        self.cached[r] = False
        self.refcount[r] = 0.0
        self.missing[r] = self.catalog.model_bytes
        self.used[r] = 0.0
        self.marks[r] = -1
        self.count[r] = 0
        self.ema[r] = 0.0
        self.ema_t[r] = 0
        self.seen[r] = 0.0
        self.t[r] = 0
        self.pending[r] = -1
        self.mask[r, :M] = False
        self.done[r] = False
        self.sums[r] = 0.0
        self.ep_sums[r] = 0.0
        self._advance(r)
        self.final_pending[r] = self.done[r]
        infos: dict[str, Any] = {}
        ratios = self._ratios()
        for k in LEAN_LAST_KEYS:
            infos[k], infos["_" + k] = ratios[k], mask.copy()
        for k, col in zip(LEAN_SUM_KEYS, _SUM_COLS, strict=True):
            infos[k], infos["_" + k] = self.acc[:, col].copy(), mask.copy()
        return self._obs(), infos

    # ---- step --------------------------------------------------------------------------
    def _step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n, M = self.num_envs, self.n_models
        acts = np.asarray(actions)
        if acts.shape != (n,) or acts.dtype.kind not in "iu":
            raise ValueError(
                f"actions={actions!r}: must be {n} integers in [0, {M}] (one per sub-env)"
            )
        if self.scalar:
            return self._step_subs(acts.tolist())
        out = (acts < 0) | (acts > M)
        if out.any():
            self._raise_out_of_range(acts.tolist())
        deciding = ~self.final_pending
        illegal = deciding & ~self.mask[self._rows, acts]
        if illegal.any():
            if self.raise_on_invalid:
                self._raise_masked(int(np.flatnonzero(illegal)[0]), int(acts[illegal][0]))
            self.acc[illegal, _A["invalid_actions"]] += 1.0
            acts = np.where(illegal, M, acts)
        self.final_pending[:] = False
        j = self.pending
        byp = np.flatnonzero(deciding & (acts == M))
        ev = np.flatnonzero(deciding & (acts < M))
        self._bypass(byp, j[byp])
        if ev.size:
            jv, a = j[ev], acts[ev]
            self.held[ev] ^= cache.eviction_drop(self.catalog, self.refcount[ev], a, jv)
            self._refresh(ev)
            self.acc[ev, _A["evictions"]] += 1.0
            since = self.marks[ev, 1]
            since[~self.cached[ev]] = -1
            self.marks[ev, 1] = since
            self.pending[ev] = -1
            self._decide(ev, jv)
        moved = np.flatnonzero(deciding & (self.pending < 0))
        self._advance(moved)
        # Infos and rewards (the single env's info="lean").
        term = self.done.copy()
        self.ep_sums += self.acc[:, _SUM_COLS]
        rew = self.acc[:, _A["reward"]].copy()
        ratios = self._ratios()
        everyone = np.ones(n, dtype=bool)
        infos: dict[str, Any] = {}
        for k in LEAN_LAST_KEYS:
            infos[k], infos["_" + k] = ratios[k], everyone
        for k, col in zip(LEAN_SUM_KEYS, _SUM_COLS, strict=True):
            infos[k], infos["_" + k] = self.acc[:, col].copy(), everyone
        if term.any():
            for k in LEAN_LAST_KEYS:
                infos["episode_" + k], infos["_episode_" + k] = ratios[k], term
            for c, k in enumerate(LEAN_SUM_KEYS):
                infos["episode_" + k], infos["_episode_" + k] = self.ep_sums[:, c].copy(), term
        self.acc[:] = 0.0
        obs = self._obs()
        trunc = np.zeros(n, dtype=bool)
        obs, infos = self._autoreset(obs, term, trunc, infos)
        for k in _EPISODE_KEYS if term.any() else ():  # only in final_info (SyncVectorEnv)
            del infos[k], infos["_" + k]
        return obs, rew, term, trunc, infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, M + 1)`` legal actions of every sub-env (a copy)."""
        if self.scalar:
            return np.stack([s._mask for s in self.subs])
        return self.mask.copy()

    # ---- few sub-envs: one single env each -----------------------------------------------
    def _reset_subs(self, mask: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`_reset_envs` on the single envs: sub-env ``i`` draws its episode from
        ``self.rngs[i]`` in the single env's own ``reset``."""
        subs, rows = self.subs, np.flatnonzero(mask).tolist()
        obs = self._sub_obs()
        vals = np.zeros((len(_LEAN_KEYS), self.num_envs))
        for i in rows:
            sub = subs[i]
            sub._np_random = self.rngs[i]
            obs[i], info = sub._reset(None)
            vals[:, i] = _lean_values(info)
        infos: dict[str, Any] = {}
        for c, k in enumerate(_LEAN_KEYS):
            infos[k], infos["_" + k] = vals[c], mask.copy()
        return obs, infos

    def _raise_out_of_range(self, acts: list[int]) -> None:
        M = self.n_models
        i = next(i for i, a in enumerate(acts) if not 0 <= a <= M)
        raise ValueError(f"actions[{i}]={acts[i]}: must be in [0, {M}]")

    def _raise_masked(self, i: int, a: int) -> None:
        legal = np.flatnonzero(self.action_masks()[i]).tolist()
        raise ValueError(
            f"actions[{i}]={a}: evicting model {a} ({self.catalog.names[a]!r}) is masked; "
            f"legal actions: {legal}"
        )

    def _step_subs(self, acts: list[int]) -> VectorStep:
        """:meth:`_step` on the single envs: validate every action first (a ValueError before
        any sub-env moves), step each, and lay the batch's infos out as the batched path
        does. A masked action under ``invalid_action="bypass"`` is counted and bypassed by
        the single env itself."""
        n, M, subs = self.num_envs, self.n_models, self.subs
        if not all(0 <= a <= M for a in acts):
            self._raise_out_of_range(acts)
        if self.raise_on_invalid:
            for i, (sub, a) in enumerate(zip(subs, acts, strict=True)):
                if a != M and not sub._final_pending and not sub._mask[a]:
                    self._raise_masked(i, a)
        obs = np.empty((n, *self.single_observation_space.shape), dtype=np.float32)
        rew, term, rows, ended = [], [], [], []
        for i, (sub, a) in enumerate(zip(subs, acts, strict=True)):
            obs[i], r, done, _, info = sub.step(a)
            rew.append(r)
            term.append(done)
            rows.append(_lean_values(info))
            if done:
                ended.append((i, _episode_values(info)))
        everyone = np.ones(n, dtype=bool)
        infos: dict[str, Any] = {}
        for k, mk, v in zip(_LEAN_KEYS, _LEAN_MASKS, np.array(rows).T, strict=True):
            infos[k], infos[mk] = v, everyone
        term_a, trunc = np.array(term), np.zeros(n, dtype=bool)
        if ended:
            episode = np.zeros((len(_EPISODE_KEYS), n))
            for i, values in ended:
                episode[:, i] = values
            for k, mk, v in zip(_EPISODE_KEYS, _EPISODE_MASKS, episode, strict=True):
                infos[k], infos[mk] = v, term_a
            obs, infos = self._autoreset(obs, term_a, trunc, infos)
            for k, mk in zip(_EPISODE_KEYS, _EPISODE_MASKS, strict=True):
                del infos[k], infos[mk]  # only in final_info (SyncVectorEnv)
        return obs, np.array(rew), term_a, trunc, infos

    def _sub_obs(self) -> np.ndarray:
        """The single envs' current observations, stacked (a new array)."""
        return np.stack([s._ob for s in self.subs])

    # ---- observations and info ---------------------------------------------------------
    def _ratios(self) -> dict[str, np.ndarray]:
        tot = self.tot
        n = np.maximum(tot[:, _TT["requests"]], 1.0)
        return {
            "hit_ratio": tot[:, _TT["hits"]] / n,
            "byte_hit_ratio": tot[:, _TT["bytes_hit"]]
            / np.maximum(tot[:, _TT["bytes_requested"]], 1e-300),
            "mean_latency_s": tot[:, _TT["latency_s"]] / n,
            "deadline_satisfaction": tot[:, _TT["deadline_met"]] / n,
        }

    def _obs(self) -> np.ndarray:
        """The single env's observation, for every sub-env (same float64 values, then
        float32)."""
        n, M, F, T = self.num_envs, self.n_models, self.n_features, self.T
        inv_cap = self.single_env._inv_cap
        out = np.empty((n, F * M + N_GLOBAL_FEATURES + self.single_env.n_clock), dtype=np.float32)
        w = out[:, : F * M].reshape(n, F, M)  # a view: rows are cast as they are written
        w[:, 0] = self.cached
        w[:, 1] = 0.0
        dec = np.flatnonzero(self.pending >= 0)
        w[dec, 1, self.pending[dec]] = 1.0
        w[:, 2] = self.static_rows[0]
        w[:, 5] = self.static_rows[1]
        # freed <= used <= capacity * (1 + 1e-12): its clip at 1 never changes a float32.
        w[:, 3] = self.freed * inv_cap
        w[:, 4] = np.minimum(self.missing * inv_cap, 1.0)
        w[:, 6] = self.mask[:, :M]
        t = self.t
        te = np.minimum(t, T - 1)
        if self.lookup is not None:
            # The single env's look-up: marks -1 ("never", "not cached") index the zeros
            # the formula gives, and each average's factor decay ** (te - last update).
            S = self.ema.shape[1]
            idx = np.empty((n, 2 + S, M), dtype=np.int64)
            marks = np.where(self.marks < 0, -(T + 3), self.marks)
            np.subtract(t[:, None, None], marks, out=idx[:, :2])
            np.subtract(
                (te[:, None] + self.ema_off)[:, :, None], self.ema_t[:, None, :], out=idx[:, 2:]
            )
            looked = self.lookup.take(idx, mode="wrap")
            np.multiply(looked, self.padded, out=looked)
            w[:, 7:] = looked
        else:
            rec = np.log1p(np.maximum(t[:, None, None] - self.marks, 0))
            rec *= -1.0 / math.log1p(T)
            rec += 1.0
            rec[self.marks < 0] = 0.0
            w[:, 7:9] = rec
            decay = self.decay[None, :, None]
            w[:, 9:] = self.ema * decay ** (te[:, None, None] - self.ema_t[:, None, :])
        cap = self.cap
        used = self.used
        need = np.zeros(n)
        need[dec] = used[dec] + self.missing[dec, self.pending[dec]] - cap
        out[:, F * M] = np.minimum(np.maximum((cap - used) / cap, 0.0), 1.0)
        out[:, F * M + 1] = np.minimum(np.maximum(need / cap, 0.0), 1.0)
        out[:, F * M + 2] = t / T
        if self.single_env.n_clock:
            clock = self.single_env.clock_features
            out[:, F * M + N_GLOBAL_FEATURES :] = [clock(ti) for ti in t.tolist()]
        return out
