"""Native vector version of ``mei_envs/EarlyExitUpload-v1`` (issue 12).

``gym.make_vec("mei_envs/EarlyExitUpload-v1", num_envs=n,
vectorization_mode="vector_entry_point")`` steps ``n`` sub-envs with numpy arrays. The
contract (:mod:`mei_envs.vector`): SAME_STEP autoreset, sub-env ``i`` seeded ``seed + i``
reproduces the single env seeded ``seed + i`` step by step, across episodes; infos are the
single env's ``info="lean"`` keys (whatever the config's ``info`` says) in
``SyncVectorEnv``'s layout.

One copy of the dynamics: the single env, the DP oracle and this vector env all evaluate
:meth:`EarlyExitUploadModel.token_cost` (via ``token_cost_at``),
:meth:`EarlyExitUploadModel.transition`, ``n_upload`` (its table) and ``flush_energy``. In
fsmc mode the vector env evaluates token_cost once, at construction, over every (token,
backlog, action or forced upload, FSMC state, asleep) and a step gathers those rows (the
single env memoises the same function per state); in gauss_markov mode it evaluates it per
step on the episode's rates.

Episodes live in a pool of rows, several per sub-env (a ring): in fsmc mode up to 8 are
drawn ahead per sub-env from its own generator (one ``random`` call for all of a sub-env's
new episodes: the same stream as one call per episode), dropped when the sub-env is
reseeded, and worked out for all sub-envs at once when one of them runs out
(:meth:`EarlyExitUploadModel.episode_from_uniforms`'s comparisons, batched): exit chain,
channel path, confidences, and the per-episode tables a step gathers from (next exited
token, run costs, observations, the episode-dependent parts of the token table's row
indices, and where the episode's forced first tokens leave it). A reset then only points
the sub-env at its next row. In gauss_markov mode each reset draws with
:meth:`EarlyExitUploadModel.sample_episode`. The step itself draws nothing.

How a step stays batched: at a decision the agent's token is processed for every sub-env
at once; the forced tokens after it are (a) at most one from the state the decision left
(a non-exited token, or an exited one with a full backlog), then (b) a run of non-exited
tokens, each starting from backlog 0 with the radio in its tail (a forced upload empties
the backlog and restarts the tail). The costs of (b) depend on the episode only, so they are
tabulated per episode and added in token order with ``np.add.accumulate``: the same
floating-point sums, in the same order, as the single env's token-by-token loop, so rewards
and infos are bit-identical to it.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np

from mei_envs.envs.early_exit_upload import (
    EPISODE_KEYS,
    LEAN_KEYS,
    EarlyExitUploadEnv,
)
from mei_envs.vector import MeiVectorEnv, seed_list

# Up to this many sub-envs the vector env steps one single env (info="lean") per sub-env in
# turn (_step_subs): a batched numpy step costs tens of microseconds per call whatever the
# batch's size. CPU time per env-step, scalar / batched, same process (session 9,
# benchmarks/README.md): 1 sub-env 54 / 98 us, 2: 40 / 54, 4: 35 / 34, 8: 34 / 16 (load
# ~10, so about 3x an idle machine's). Rollouts are the same either way (sub-env i is the
# single env seeded seed + i).
SCALAR_MAX_ENVS = 3
# Rows of the token table (fsmc mode) beyond which costs are evaluated per step instead.
_MAX_TABLE_ROWS = 1 << 18
# Memory for the episode pool (episodes drawn ahead and their per-episode tables): at most
# 8 episodes per sub-env, at least 2 in fsmc mode (the current one and the next).
_POOL_BYTES = 64 << 20

# Columns of the step sums, in this order (the info keys map onto them by name): the first
# six are what a run of forced tokens from backlog 0 adds to (forced_uploads grows by 1.0 a
# token, exactly; wakeups, voluntary and limit uploads by 0: the radio is in its tail).
_LAT, _EN, _STALL, _SENT, _COMP, _FORCED, _VOL, _LIM, _WAKE = range(9)
_N_RUN = 6
_COL_OF_KEY = {
    "latency_s": _LAT,
    "energy_J": _EN,
    "stall_s": _STALL,
    "bytes_sent": _SENT,
    "compute_energy_J": _COMP,
    "forced_uploads": _FORCED,
    "voluntary_uploads": _VOL,
    "limit_uploads": _LIM,
    "wakeups": _WAKE,
}
if set(LEAN_KEYS) != set(_COL_OF_KEY):  # pragma: no cover - a guard for whoever edits
    raise ImportError(f"EarlyExitUploadVectorEnv: update its columns for {LEAN_KEYS}")
_INFO_COLS = tuple((key, _COL_OF_KEY[key]) for key in LEAN_KEYS)
_EPISODE_COLS = tuple(
    (ep_key, _COL_OF_KEY[key]) for key, ep_key in zip(LEAN_KEYS, EPISODE_KEYS, strict=True)
)
_N_COLS = len(_COL_OF_KEY)
_lean_values = operator.itemgetter(*LEAN_KEYS)
_episode_values = operator.itemgetter(*EPISODE_KEYS)
# Columns of the per-episode decision table (see EarlyExitUploadVectorEnv._prepare).
_DEC, _FIRST, _MULT, _FORCE, _CLEAR, _NEXT2 = range(6)


class EarlyExitUploadVectorEnv(MeiVectorEnv):
    """``num_envs`` EarlyExitUpload sub-envs stepped with numpy (see the module docstring).

    Args:
        num_envs: number of sub-envs.
        config: an :class:`EarlyExitUploadConfig` or a mapping (presets apply), as for the
            single env; ``**kwargs`` override fields.
        render_mode: must be None.

    ``action_masks()`` returns the ``(num_envs, n_actions)`` legal actions (all True).
    """

    single_env_class = EarlyExitUploadEnv

    def _setup(self, single: EarlyExitUploadEnv) -> None:
        m = self.model = single.model
        cfg = self.config
        n, K, H = self.num_envs, m.K, cfg.snr_history
        self._masks = np.ones((n, single.action_space.n), dtype=bool)
        self._masks.flags.writeable = False
        self._all = np.ones(n, dtype=bool)
        self._all.flags.writeable = False
        self._truncated = np.zeros(n, dtype=bool)
        self._truncated.flags.writeable = False
        # Few sub-envs: one single env each (see SCALAR_MAX_ENVS); the batched state below
        # is then not built.
        self.scalar = n <= SCALAR_MAX_ENVS
        self._step_obs: np.ndarray | None = None
        if self.scalar:
            lean = dataclasses.replace(cfg, info="lean")
            self.subs = [EarlyExitUploadEnv(lean) for _ in range(n)]
            self._fsmc = False  # no episode pool to drop at a reseed
            return
        N = K + H - 1
        self._H, self._K, self._N = H, K, N
        self._rows = np.arange(n)
        self._timer0 = m.tail_steps if cfg.initial_radio == "idle" else 0
        self._fsmc = m.channel.mode == "fsmc"
        # The radio timer after a token that uploads nothing / something, for every timer
        # value (EarlyExitUploadModel.transition, as the single env tabulates it), and per
        # (action, backlog) at a * (limit + 1) + b: the states a decision uploads
        # (n_up_table) and the offset of its row of timer transitions.
        timers = np.arange(m.tail_steps + 1)
        self._timer_after = np.concatenate([m.transition(0, timers, u)[1] for u in (0, 1)])
        self._n_up_flat = m.n_up_table.reshape(-1)
        self._up_off = (self._n_up_flat > 0) * (m.tail_steps + 1)
        # fsmc mode: the run costs of every (token, FSMC state), from the same token_cost
        # (the vector env gathers them per episode instead of evaluating it again).
        self._run_table: np.ndarray | None = None
        if self._fsmc:
            self._run_table = self._run_costs(
                np.arange(K)[:, None], np.asarray(m.state_rate_bps, float)[None, :]
            )
        self._build_token_table()
        # The episode pool: E rows per sub-env (its current episode and up to E - 1 drawn
        # ahead, a ring; fsmc mode) or 1 (gauss_markov: drawn at reset), each with the
        # episode's draws and its per-episode tables (see _prepare), Q entries per row for
        # the per-token (K + 1: index K is after the end) and per-slot (N) arrays.
        Q = max(K + 1, N)
        self._Q = Q
        # Bytes per episode: uniforms, exits, and per entry next exit, run index or costs,
        # decision table, observation row.
        per_episode = (2 * K + N) * 8 + K + Q * (8 + 48 + 48 + (H + 7) * 4) + 96
        E = int(np.clip(_POOL_BYTES // (n * per_episode), 2, 8)) if self._fsmc else 1
        P = n * E
        self._E = E
        self._u = np.empty((P, 2 * K + N)) if self._fsmc else None  # fsmc: the uniforms
        self._exits = np.zeros((P, K), dtype=bool)
        # Without a token table, each slot's link rate (the cost function reads it).
        self._rates = np.ones((P, N)) if self._table is None else None
        # Per token: the next exited token at or after it (K if none), and the _N_RUN costs
        # of a forced (non-exited) upload of one state from backlog 0 in the radio tail (what
        # every token after a run's first one pays; zeros at exited tokens and at K, where a
        # run stops): in fsmc mode the index of its (token, state) row in the run table
        # (``_run_flat``, a zero row last), in gauss_markov mode the costs themselves.
        self._next_exit = np.full(P * Q, K, dtype=np.int64)
        self._run_idx: np.ndarray | None = None
        self._run_cost: np.ndarray | None = None
        if self._run_table is not None:
            self._run_flat = np.concatenate(
                [self._run_table.reshape(-1, _N_RUN), np.zeros((1, _N_RUN))]
            )
            self._run_idx = np.full(P * Q, K * m.fsmc.n_states, dtype=np.int64)
        else:
            self._run_cost = np.zeros((P * Q, _N_RUN))
        if self._table is not None:
            # Per decision token k (see _prepare): _DEC, _FIRST, _MULT, _FORCE, _CLEAR,
            # _NEXT2 (one gather a step).
            self._dtab = np.zeros((P * Q, 6), dtype=np.int64)
            self._dtab.reshape(P, Q, 6)[:, max(K - 2, 0) : K, _NEXT2] = K
            self._dec_rows = self._decision_rows()
            self._start_acc = np.zeros((P, _N_COLS))
            self._start_k = np.zeros(P, dtype=np.int64)
            self._start_timer = np.zeros(P, dtype=np.int64)
        # Observations (the single env's _obs): per episode a table of its observation at
        # every token (and after the end), all but the backlog and radio columns, filled
        # when it is drawn; a step takes its rows and fills those two from per-value tables
        # (b / limit and 1 - timer / tail_steps).
        self._obs_tab = np.zeros((P * Q, H + 7), dtype=np.float32)
        self._obs_rows = self._obs_tab.reshape(P, Q, H + 7)
        # Token k's SNR window: slots k + H - 1 down to k (the last token's after the end).
        kk = np.minimum(np.arange(K + 1), K - 1)
        self._win = kk[:, None] + (H - 1 - np.arange(H))[None, :]
        self._tok_cols = np.zeros((K + 1, H + 7), dtype=np.float32)
        self._tok_cols[:, H + 1] = single._left_obs
        self._tok_cols[:, H + 2] = single._ctx_obs
        self._backlog_col = np.arange(m.limit + 1) / m.limit
        self._radio_col = 1.0 - np.arange(m.tail_steps + 1) / m.tail_steps
        # Sub-env state: its episode's pool row (and row * Q), ring position and episodes
        # drawn ahead, token, backlog, radio timer.
        self._row = np.arange(n) * E
        self._rq = self._row * Q
        self._cur = np.full(n, E - 1)
        self._avail = np.zeros(n, dtype=np.int64)
        self._k = np.zeros(n, dtype=np.int64)
        self._b = np.zeros(n, dtype=np.int64)
        self._timer = np.zeros(n, dtype=np.int64)
        self._pending = np.zeros(n, dtype=bool)  # ended at reset: one more step delivers it
        # Sums of the step in progress (the costs of forced tokens before the first decision
        # after a reset; otherwise the shared zeros).
        self._zero_acc = np.zeros((n, _N_COLS))
        self._zero_acc.flags.writeable = False
        self._acc = self._zero_acc
        self._episode = np.zeros((n, _N_COLS))

    def _build_token_table(self) -> None:
        """fsmc mode: the step-sum rows (``_N_COLS`` columns) of every token a step can
        process, from token_cost over the FSMC states, so a step gathers them instead of
        evaluating the cost function: decisions ``(token, backlog, action, state, asleep)``,
        backlog-limit uploads ``(token, state, asleep)``, non-exited tokens ``(token,
        backlog, state, asleep)``, then a row of zeros. The timer enters a token's cost only
        through asleep (tests/test_early_exit_fastpath.py), so it is evaluated at timer 0
        and at tail_steps. The token after a decision is looked up by its backlog ``b``
        whatever it is: an exited token's block has zeros below the limit (no token
        forced) and the limit upload at ``b = limit``; after the last token, the flush
        block (``flush_energy`` of ``b`` states at the last token's FSMC state; zeros for
        ``b = 0``), or two zero rows without ``flush_at_end``. None (costs evaluated per
        step) in gauss_markov mode or when the table would exceed ``_MAX_TABLE_ROWS``."""
        m = self.model
        K, B, M = m.K, m.limit, m.tail_steps
        C, A = m.fsmc.n_states, len(m.cfg.upload_fractions)
        self._table = None
        n_rows = 2 * (B + 1) * C * (K * (A + 2) + 1) + 2
        if m.channel.mode != "fsmc" or n_rows > _MAX_TABLE_ROWS:
            return
        rate = np.asarray(m.state_rate_bps, float)
        timer = np.array([0, M])
        bits = m.state_bits / 8.0

        def rows(k, b, n, c, t, exited, voluntary, forced, lim):
            lat, en, stall, _, wake = m.token_cost(k, b, n, rate[c], timer[t], exited)
            shape = np.broadcast_shapes(np.shape(lat), np.shape(n), np.shape(k))
            out = np.empty((*shape, _N_COLS))
            out[..., _LAT], out[..., _EN], out[..., _STALL] = lat, en, stall
            out[..., _SENT] = n * bits
            out[..., _FORCED] = forced
            out[..., _VOL] = (n > 0) if voluntary else 0.0
            out[..., _LIM] = lim
            out[..., _WAKE] = wake
            out[..., _COMP] = m.device_energy_j[k]
            return out.reshape(-1, _N_COLS)

        kk = np.arange(K)
        bb, cc, tt = np.arange(B + 1), np.arange(C), np.arange(2)
        k5, b5 = kk[:, None, None, None, None], bb[None, :, None, None, None]
        a5 = np.arange(A)[None, None, :, None, None]
        n5 = m.n_up_table[a5, b5]
        dec = rows(k5, b5, n5, cc[:, None], tt, 1, True, 0.0, 0.0)
        k3 = kk[:, None, None]
        lim = np.zeros((K, C, B + 1, 2, _N_COLS))
        lim[:, :, B] = rows(k3, B, B + 1, cc[None, :, None], tt, 1, False, 0.0, 1.0).reshape(
            K, C, 2, _N_COLS
        )
        k4, b4 = kk[:, None, None, None], bb[None, :, None, None]
        nex = rows(k4, b4, b4 + 1, cc[:, None], tt, 0, False, 1.0, 0.0)
        flush = np.zeros((C, B + 1, 2, _N_COLS))
        if m.cfg.flush_at_end:
            fb, fc, ft = bb[None, :, None], cc[:, None, None], tt[None, None, :]
            flush[..., _EN] = m.flush_energy(fb, rate[fc], timer[ft])
            flush[..., _SENT] = fb * m.state_bits / 8.0
            flush[..., _WAKE] = timer[ft] >= M
            flush[:, 0] = 0.0  # nothing left to flush
        self._table = np.concatenate(
            [dec, lim.reshape(-1, _N_COLS), nex, flush.reshape(-1, _N_COLS), np.zeros((2, _N_COLS))]
        )
        self._off_lim = dec.shape[0]
        self._off_nex = self._off_lim + K * C * (B + 1) * 2
        self._off_flush = self._off_nex + nex.shape[0]
        self._off_zero = self._off_flush + C * (B + 1) * 2
        # A decision's row: ((((k (B+1) + b) A + a) C + c) 2 + asleep = dec_base[k] +
        # dec_off[a (B+1) + b] + asleep, with dec_base[k] = 2 (k (B+1) A C + c_k) per episode.
        a2, b2 = np.meshgrid(np.arange(A), bb, indexing="ij")
        self._dec_off = (2 * C * (b2 * A + a2)).reshape(-1)

    def _decision_rows(self) -> np.ndarray:
        """The first five ``_dtab`` columns of a decision token ``k`` for every ``(k,
        e_{k+1}, c_k, c_{k+1})`` (exit indicator of the next token, FSMC states of this one
        and the next), row ``((k 2 + e) C + c) C + c'``: its row base ``2 (k (B+1) A C +
        c)``; the next token's block base and backlog stride (a non-exited token's ``off_nex
        + 2 ((k+1) (B+1) C + c')`` and ``2 C``, an exited one's ``off_lim + 2 (B+1) ((k+1) C +
        c')`` and 2; after the last token the flush's ``off_flush + 2 (B+1) c`` and 2, or the
        zero rows); the backlog from which it is forced (0 if it does not exit, the limit if
        it does, never after the end) and from which it leaves backlog 0 (the same, but 0
        after the last token with ``flush_at_end``)."""
        m, K = self.model, self._K
        B, C, A = m.limit, m.fsmc.n_states, self.single_action_space.n
        k = np.arange(K)[:, None, None, None]
        e = np.arange(2)[None, :, None, None]
        c = np.arange(C)[None, None, :, None]
        c1 = np.arange(C)[None, None, None, :]
        out = np.empty((K, 2, C, C, 5), dtype=np.int64)
        out[..., _DEC] = 2 * (k * ((B + 1) * A * C) + c)
        out[..., _FIRST] = np.where(
            e == 1,
            self._off_lim + 2 * (B + 1) * ((k + 1) * C + c1),
            self._off_nex + 2 * ((k + 1) * ((B + 1) * C) + c1),
        )
        out[..., _MULT] = np.where(e == 1, 2, 2 * C)
        out[..., _FORCE] = out[..., _CLEAR] = np.where(e == 1, B, 0)
        last = out[K - 1]
        if m.cfg.flush_at_end:
            last[..., _FIRST] = self._off_flush + 2 * (B + 1) * c[0]
            last[..., _MULT] = 2
            last[..., _CLEAR] = 0
        else:
            last[..., _FIRST], last[..., _MULT], last[..., _CLEAR] = self._off_zero, 0, B + 1
        last[..., _FORCE] = B + 1
        return out.reshape(-1, 5)

    def _seed(self, seed: Any) -> None:
        super()._seed(seed)
        if self._fsmc:  # episodes drawn from the old generators are dropped
            for i, s in enumerate(seed_list(seed, self.num_envs)):
                if s is not None:
                    self._avail[i] = 0

    def _run_costs(self, tok: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """The first ``_N_RUN`` columns of a forced (non-exited) upload of one state from
        backlog 0 with the radio in its tail, at tokens ``tok`` and rates ``rate``
        (broadcast), stacked on a last axis."""
        m = self.model
        lat, en, stall, _, wake = m.token_cost(tok, 0, 1, rate, 0, 0)
        if np.any(wake):  # pragma: no cover - timer 0 < tail_steps: never asleep
            raise RuntimeError("EarlyExitUploadVectorEnv: a run token woke the radio")
        lat = np.asarray(lat, float)
        out = np.empty((*lat.shape, _N_RUN))
        out[..., _LAT], out[..., _EN], out[..., _STALL] = lat, en, stall
        out[..., _SENT] = 1 * m.state_bits / 8.0
        out[..., _COMP] = np.broadcast_to(m.device_energy_j[tok], lat.shape)
        out[..., _FORCED] = 1.0
        return out

    def action_masks(self) -> np.ndarray:
        """Legal actions of every sub-env, ``(num_envs, n_actions)`` (a cached read-only
        array: every action is legal at every decision)."""
        return self._masks

    # ---- the episode pool --------------------------------------------------------------
    def _refill(self) -> None:
        """fsmc mode: fill every sub-env's free pool rows with episodes drawn ahead from its
        own generator, in ring order (one ``random`` call per sub-env for all its new
        episodes: the same stream as one call per episode), and work them out together
        (:meth:`_derive`)."""
        E, K, N = self._E, self._K, self._N
        free = E - 1 - self._avail
        subs = np.flatnonzero(free > 0)
        if not subs.size:
            return
        counts = free[subs]
        first = self._cur[subs] + 1 + self._avail[subs]
        # Ring positions of each sub-env's free slots, in draw order.
        offs = np.arange(int(counts.max()))
        slot = (first[:, None] + offs) % E
        slot = slot[offs[None, :] < counts[:, None]]
        rows = np.repeat(subs * E, counts) + slot
        u = np.concatenate(
            [self.rngs[i].random((c, 2 * K + N)) for i, c in zip(subs, counts, strict=True)]
        )
        self._u[rows] = u
        self._avail[subs] += counts
        self._derive(rows, u)

    def _derive(self, rows: np.ndarray, u: np.ndarray) -> None:
        """fsmc mode: the episodes of pool ``rows`` from their uniforms ``u`` (the same
        comparisons as :meth:`EarlyExitUploadModel.episode_from_uniforms`, batched), then
        their tables (:meth:`_prepare`)."""
        m, K, H, N = self.model, self._K, self._H, self._N
        exits = m._exit_chain(u[:, :K])
        lo = m.cfg.exit_threshold
        uc = u[:, K + N :]
        states = m.fsmc_paths(u[:, K : K + N])
        self._prepare(
            rows,
            exits,
            np.where(exits, lo + uc * (1.0 - lo), uc * lo),
            m._state_rate_arr[states],
            m._state_obs_arr[states],
            states[:, H - 1 :],
        )

    def _prepare(
        self,
        rows: np.ndarray,
        ex: np.ndarray,
        conf: np.ndarray,
        rates: np.ndarray,
        snr_obs: np.ndarray,
        ch: np.ndarray | None,
    ) -> None:
        """The per-episode tables of pool ``rows`` from their episodes (per token: exit
        indicators ``ex``, confidences ``conf``, FSMC states ``ch`` (fsmc mode); per slot:
        link ``rates``, SNR observations ``snr_obs``): next exits, run costs, observation
        columns, and with the token table, per decision token ``k``
        (``_dtab``) what depends on the episode only: its row's base ``2 (k (B+1) A C +
        c_k)`` (plus ``dec_off[a (B+1) + b] + asleep``); the token after it: its block's
        base and backlog stride (row ``_FIRST + _MULT b + asleep``: a non-exited token's
        ``off_nex + 2 (k (B+1) C + c) + 2 C b``, an exited one's ``off_lim + 2 (B+1) (k C
        + c) + 2 b``, the flush's ``off_flush + 2 (B+1) c_{K-1} + 2 b``), the backlog from
        which it is forced (``_FORCE``: 0 if it does not exit, the limit if it does, never
        after the end) or leaves backlog 0 (``_CLEAR``: the same, and 0 after the end
        with ``flush_at_end``), the next exited token after it (``_NEXT2``); and the sums
        and state where the episode's forced first tokens leave it
        (:meth:`_start_rows`)."""
        m, K, H, Q = self.model, self._K, self._H, self._Q
        self._exits[rows] = ex
        if self._rates is not None:
            self._rates[rows] = rates
        kk = np.arange(K)
        pos = np.where(ex, kk, K)
        nxt = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]
        self._next_exit.reshape(-1, Q)[rows, :K] = nxt
        if self._run_idx is not None:
            # A run stops at an exited token: it adds nothing (the zero row).
            C = m.fsmc.n_states
            self._run_idx.reshape(-1, Q)[rows, :K] = np.where(ex, K * C, kk * C + ch)
        else:
            run = self._run_costs(kk, rates[:, H - 1 :])
            run[ex] = 0.0
            self._run_cost.reshape(-1, Q, _N_RUN)[rows, :K] = run
        t = np.empty((rows.size, K + 1, H + 7), dtype=np.float32)
        # (Columns H and H + 5, backlog and radio, are filled by the step.)
        t[:, :, H + 1 : H + 3] = self._tok_cols[:, H + 1 : H + 3]
        t[:, :, :H] = snr_obs[:, self._win]
        t[:, :K, H + 3] = ex
        t[:, :K, H + 4] = conf
        t[:, K, H + 3 : H + 5] = 0.0
        t[:, :, H + 6] = np.minimum(rates[:, self._win[:, 0]] / m.mean_rate_bps, 1.0)
        self._obs_rows[rows, : K + 1] = t
        if self._table is None:
            return
        # The decision table's first five columns depend on (k, e_{k+1}, c_k, c_{k+1}):
        # one gather from _dec_rows (after the last token, on c_k only).
        C = m.fsmc.n_states
        code = kk * (2 * C * C) + ch * C
        code[:, :-1] += ex[:, 1:] * (C * C) + ch[:, 1:]
        dt = self._dtab.reshape(-1, Q, 6)
        dt[rows, :K, :5] = self._dec_rows.take(code, axis=0)
        dt[rows, : K - 2, _NEXT2] = nxt[:, 2:]  # k + 2 < K (the rest: K, set once)
        self._start_rows(rows, ex[:, 0], ch[:, 0])

    def _start_rows(self, rows: np.ndarray, exit0: np.ndarray, ch0: np.ndarray) -> None:
        """Token table path: where each new episode of pool ``rows`` stands at its first
        decision (what :meth:`_advance` does with no action): token 0 exits (a decision at
        once, nothing processed), or token 0's forced upload of one state from backlog 0
        at the initial radio timer, then the run of non-exited tokens after it (backlog 0,
        radio tail restarted: transition(0, t, 1))."""
        m = self.model
        acc = np.zeros((rows.size, _N_COLS))
        k0 = np.zeros(rows.size, dtype=np.int64)
        t0 = np.full(rows.size, self._timer0, dtype=np.int64)
        f = np.flatnonzero(~exit0)
        if f.size:
            r = rows[f]
            first = self._off_nex + 2 * ch0[f] + int(self._timer0 >= m.tail_steps)
            a0 = self._table.take(first, axis=0)
            rq = r * self._Q
            one = np.ones(f.size, dtype=np.int64)
            stop = self._next_exit.take(rq + 1)
            self._runs(rq, one, stop, a0)
            k0[f] = stop
            acc[f] = a0
            t0[f] = 0
        self._start_acc[rows] = acc
        self._start_k[rows] = k0
        self._start_timer[rows] = t0

    # ---- reset -------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if self.scalar:
            return self._reset_subs(mask, options)
        m, K, H, E = self.model, self._K, self._H, self._E
        opts = self.single_env._check_options(options) if options else {}
        idx = np.flatnonzero(mask)
        if opts:
            rows = np.empty(idx.size, dtype=np.int64)
            eps = []
            for j, i in enumerate(idx):
                slot = (self._cur[i] + 1) % E
                row = i * E + slot
                if self._fsmc and self._avail[i] > 0:
                    # The generator already drew this episode's uniforms (drawn ahead).
                    ep = m.episode_from_uniforms(self._u[row], **opts)
                    self._avail[i] -= 1
                else:
                    ep = m.sample_episode(self.rngs[i], **opts)
                self._cur[i] = slot
                rows[j] = row
                eps.append(ep)
            ch = None
            if self._fsmc:
                ch = np.array([ep.states[H - 1 :] for ep in eps]).reshape(idx.size, K)
            self._prepare(
                rows,
                np.array([ep.exits for ep in eps], dtype=bool).reshape(idx.size, K),
                np.array([ep.conf for ep in eps]).reshape(idx.size, K),
                np.array([ep.rates for ep in eps]).reshape(idx.size, self._N),
                np.array([ep.snr_obs for ep in eps], dtype=np.float32).reshape(idx.size, -1),
                ch,
            )
        elif self._fsmc:
            if not self._avail[idx].all():
                self._refill()
            cur = self._cur[idx] + 1
            cur[cur == E] = 0
            self._cur[idx] = cur
            self._avail[idx] -= 1
            rows = idx * E + cur
        else:
            rows = idx  # one pool row per sub-env
            eps = m.sample_episodes([self.rngs[i] for i in idx])
            self._prepare(rows, eps["exits"], eps["conf"], eps["rates"], eps["snr_obs"], None)
        self._row[idx] = rows
        rq = rows * self._Q
        self._rq[idx] = rq
        self._b[idx] = 0
        self._episode[idx] = 0.0
        if self._acc is self._zero_acc:
            self._acc = np.zeros_like(self._zero_acc)
        if self._table is not None:
            start_k = self._start_k.take(rows)
            timer = self._start_timer.take(rows)
            self._k[idx] = start_k
            self._timer[idx] = timer
            self._acc[idx] = self._start_acc.take(rows, axis=0)
            self._pending[idx] = start_k == K
            obs_idx = self._observe_at(rq + start_k, 0, timer)
        else:
            self._k[idx] = 0
            self._timer[idx] = self._timer0
            self._acc[idx] = 0.0
            # Sub-envs whose first token does not exit start with forced tokens (backlog 0
            # is below the limit, so an exited first token is a decision).
            forced_start = idx[~self._exits[rows, 0]]
            if forced_start.size:
                self._advance(forced_start, None)
            self._pending[idx] = self._k[idx] == K
            obs_idx = self._observe(idx)
        obs = self._step_obs  # within an autoreset: the step's observation, reset rows redone
        self._step_obs = None
        if obs is None:
            return self._observe(None), {}
        obs[idx] = obs_idx
        return obs, {}

    # ---- step --------------------------------------------------------------------------
    def _step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = np.asarray(actions)
        n_actions = self.single_action_space.n
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu":
            raise ValueError(
                f"actions={actions!r}: must be {self.num_envs} integers in [0, {n_actions - 1}]"
            )
        if a.min() < 0 or a.max() >= n_actions:
            raise ValueError(f"actions={actions!r}: every action must be in [0, {n_actions - 1}]")
        if self.scalar:
            return self._step_subs(a.tolist())
        a = a.astype(np.int64, copy=False)  # index arithmetic without small-int overflow
        if self._pending.any():  # ended at reset: this step only delivers their costs
            live = np.flatnonzero(~self._pending)
            self._pending[:] = False
            if live.size:
                self._advance(live, a[live])
        else:
            self._advance(None, a)
        acc = self._acc
        self._acc = self._zero_acc
        self._episode += acc
        lc, ec = self.model.cost_terms(acc[:, _LAT], acc[:, _EN])
        reward = -(lc + ec)
        terminated = self._k == self._K
        obs = self._observe(None)
        if not terminated.any():
            infos: dict[str, Any] = {}
            for key, c in _INFO_COLS:
                infos[key], infos["_" + key] = acc[:, c], self._all
            return obs, reward, terminated, self._truncated.copy(), infos
        # SAME_STEP autoreset (MeiVectorEnv._autoreset's layout, written out for this env's
        # fixed keys: lean keys on every sub-env, episode totals where it ended; no
        # truncation, empty reset infos).
        # The `_key` masks: one read-only array per pattern, shared by the keys (as
        # self._all is on steps with no episode end).
        done = terminated.copy()
        done.flags.writeable = False
        tot = self._episode.copy()
        live = ~done
        live.flags.writeable = False
        nobody = self._truncated
        final_info: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for key, c in _INFO_COLS:
            final_info[key], final_info["_" + key] = acc[:, c], done
            out[key], out["_" + key] = acc[:, c], live
        for key, c in _EPISODE_COLS:
            final_info[key], final_info["_" + key] = tot[:, c], done
            out[key], out["_" + key] = tot[:, c], nobody
        final_obs = np.empty(self.num_envs, dtype=object)  # None but where it ended
        ended = np.flatnonzero(done)
        for i, o in zip(ended.tolist(), obs[ended], strict=True):
            final_obs[i] = o  # rows of one new array: no data shared with `obs`
        self._step_obs = obs
        obs, _ = self._reset_envs(done)
        self._step_obs = None
        out["final_obs"], out["_final_obs"] = final_obs, done
        out["final_info"], out["_final_info"] = final_info, done
        return obs, reward, terminated, self._truncated.copy(), out

    # ---- few sub-envs: one single env each ------------------------------------------------
    def _reset_subs(
        self, mask: np.ndarray, options: dict[str, Any] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`_reset_envs` on the single envs: sub-env ``i`` draws its episode from
        ``self.rngs[i]`` in the single env's own ``reset`` (options checked first, so a bad
        one moves no sub-env)."""
        if options:
            self.single_env._check_options(options)
        obs = self._step_obs
        self._step_obs = None
        if obs is None:  # reset(): every sub-env (else the others' observations stay)
            obs = np.empty((self.num_envs, *self.single_observation_space.shape), np.float32)
            if not mask.all():
                obs[:] = [sub._obs() for sub in self.subs]
        for i in np.flatnonzero(mask).tolist():
            sub = self.subs[i]
            sub._np_random = self.rngs[i]
            obs[i] = sub._reset(options)[0]
        return obs, {}

    def _step_subs(self, acts: list[int]) -> tuple[np.ndarray, ...]:
        """:meth:`_step` on the single envs (actions checked by the caller): step each in
        turn, reset those that ended (SAME_STEP) and lay the infos out as the batched path
        does."""
        n = self.num_envs
        obs = np.empty((n, *self.single_observation_space.shape), dtype=np.float32)
        rew, term, rows, ended = [], [], [], []
        for i, (sub, a) in enumerate(zip(self.subs, acts, strict=True)):
            obs[i], r, done, _, info = sub.step(a)
            rew.append(r)
            term.append(done)
            rows.append(_lean_values(info))
            if done:
                ended.append((i, _episode_values(info)))
        values = np.array(rows).T  # (key, sub-env): a new array
        terminated = np.array(term)
        infos: dict[str, Any] = {}
        if not ended:
            for key, v in zip(LEAN_KEYS, values, strict=True):
                infos[key], infos["_" + key] = v, self._all
            return obs, np.array(rew), terminated, self._truncated.copy(), infos
        # SAME_STEP autoreset, in the batched path's layout.
        done = terminated.copy()
        done.flags.writeable = False
        live = ~done
        live.flags.writeable = False
        tot = np.zeros((len(EPISODE_KEYS), n))
        for i, totals in ended:
            tot[:, i] = totals
        final_info: dict[str, Any] = {}
        for key, v in zip(LEAN_KEYS, values, strict=True):
            final_info[key], final_info["_" + key] = v, done
            infos[key], infos["_" + key] = v, live
        for key, v in zip(EPISODE_KEYS, tot, strict=True):
            final_info[key], final_info["_" + key] = v, done
            infos[key], infos["_" + key] = v, self._truncated
        final_obs = np.empty(n, dtype=object)  # None but where it ended
        for i, _ in ended:
            final_obs[i] = obs[i].copy()
        self._step_obs = obs
        obs, _ = self._reset_subs(done, None)
        infos["final_obs"], infos["_final_obs"] = final_obs, done
        infos["final_info"], infos["_final_info"] = final_info, done
        return obs, np.array(rew), terminated, self._truncated.copy(), infos

    # ---- internals ---------------------------------------------------------------------
    def _state(self, idx: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Token, backlog, timer, ``row * Q`` and step sums of the sub-envs ``idx``
        (None: all of them, without copies)."""
        if idx is None:
            return self._k, self._b, self._timer, self._rq, self._acc
        return self._k[idx], self._b[idx], self._timer[idx], self._rq[idx], self._acc[idx]

    def _set_state(self, idx: np.ndarray | None, k: Any, b: Any, timer: Any, acc: Any) -> None:
        if idx is None:
            self._k, self._b, self._timer, self._acc = k, b, timer, acc
            return
        self._k[idx], self._b[idx], self._timer[idx] = k, b, timer
        if self._acc is self._zero_acc:
            self._acc = np.zeros_like(self._zero_acc)
        self._acc[idx] = acc

    def _advance(self, idx: np.ndarray | None, actions: np.ndarray | None) -> None:
        """Move the sub-envs ``idx`` (None: all; none of them ended) to their next decision
        or the end: the decision token (``actions`` of ``idx``; None at reset: no
        decision), at most one forced token from the state it leaves, then a run of
        non-exited tokens (costs from the per-episode table), adding the costs to the step
        sums in token order (the single env's sums, bit for bit)."""
        if self._table is None:
            self._advance_costs(idx, actions)
            return
        limit, M = self.model.limit, self.model.tail_steps
        k, b, timer, rq, acc = self._state(idx)
        # The decision token: the states it uploads, the backlog and radio timer after it.
        ab = actions * (limit + 1) + b
        n_decision = self._n_up_flat.take(ab)
        b1 = b - n_decision + 1
        t1 = self._timer_after.take(self._up_off.take(ab) + timer)
        d = self._dtab.take(rq + k, axis=0)
        # The token after it: forced (non-exited, or exited with a full backlog) or not
        # (its block's zeros); after the last token, the flush of the backlog left (energy
        # only) or zeros.
        forced = b1 >= d[:, _FORCE]
        first = d[:, _FIRST] + d[:, _MULT] * b1
        first += t1 >= M
        dec = d[:, _DEC] + self._dec_off.take(ab)
        dec += timer >= M
        rows = self._table.take(dec, axis=0)
        total = rows if acc is self._zero_acc else acc + rows
        total += self._table.take(first, axis=0)
        # A forced token uploads the backlog and itself: backlog 0, radio tail restarted
        # (transition(b1, t1, b1 + 1)); the run after it (if any) keeps them so. A flush
        # empties the backlog.
        b2 = np.where(b1 >= d[:, _CLEAR], 0, b1)
        t2 = np.where(forced, 0, t1)
        k1 = k + 1
        k2 = k1 + forced
        stop = np.where(forced, d[:, _NEXT2], k1)
        self._runs(rq, k2, stop, total)
        self._set_state(idx, stop, b2, t2, total)

    def _runs(self, rq: np.ndarray, k2: np.ndarray, stop: np.ndarray, total: np.ndarray) -> None:
        """Add to the step sums ``total`` (in place) the runs of non-exited tokens from token
        ``k2`` to ``stop`` (the next exited token, or K; the episodes' pool rows ``rq /
        Q``), from backlog 0 with the radio in its tail (costs from the per-episode
        table), in token order with one ``np.add.accumulate``."""
        ran = stop > k2
        if not ran.any():
            return
        sel = np.flatnonzero(ran)
        start, end = k2[sel], stop[sel]
        steps = np.arange(int((end - start).max()))
        # Positions past a run's end read its stop token's zeros (adding 0.0 changes nothing).
        pos = np.minimum(start[:, None] + steps, end[:, None]) + rq[sel, None]
        if self._run_idx is not None:
            costs = self._run_flat.take(self._run_idx.take(pos), axis=0)
        else:
            costs = self._run_cost.take(pos, axis=0)
        sums = np.concatenate([total[sel, None, :_N_RUN], costs], axis=1)
        total[sel, :_N_RUN] = np.add.accumulate(sums, axis=1)[:, -1]

    def _advance_costs(self, idx: np.ndarray | None, actions: np.ndarray | None) -> None:
        """:meth:`_advance` without a token table (gauss_markov mode, or a table too big):
        the decision token's and the forced token's costs from token_cost."""
        m, K, limit = self.model, self._K, self.model.limit
        k, b, timer, rq, acc = self._state(idx)
        rows = self._row if idx is None else self._row[idx]
        parts = [acc[:, None, :]]
        # The token that may be forced: the one after the decision, or the current one.
        if actions is not None:
            n_decision = self._n_up_flat.take(actions * (limit + 1) + b)
            # transition(b, timer, n): the backlog gains the token's state and loses n; the
            # timer from its table.
            b1 = b + 1 - n_decision
            t1 = self._timer_after.take((n_decision > 0) * (m.tail_steps + 1) + timer)
            k1 = k + 1
        else:
            n_decision = None
            b1, t1, k1 = b, timer, k
        k1c = np.minimum(k1, K - 1)
        exited1 = self._exits[rows, k1c]
        forced = (k1 < K) & (~exited1 | (b1 >= limit))
        n1 = np.where(forced, b1 + 1, 0)
        # The backlog left after the last token is flushed (energy only).
        flush = None
        if n_decision is not None and m.cfg.flush_at_end:
            flush = (k1 == K) & (b1 > 0)
            if not flush.any():
                flush = None
        self._cost_parts(rows, parts, k, b, timer, n_decision, b1, t1, k1c, n1, flush)
        if flush is not None:
            b1 = np.where(flush, 0, b1)
        # transition(b1, t1, b1 + 1) where a token is forced: backlog 0, radio tail restarted.
        b2, t2 = np.where(forced, 0, b1), np.where(forced, 0, t1)
        # The step sums in token order (the single env's running sums, bit for bit).
        total = parts[0][:, 0]
        for part in parts[1:]:
            for j in range(part.shape[1]):
                total = total + part[:, j]
        k2 = k1 + forced
        stop = self._next_exit.take(rq + k2)
        self._runs(rq, k2, stop, total)
        self._set_state(idx, stop, b2, t2, total)

    def _cost_parts(
        self,
        rows: np.ndarray,
        parts: list[np.ndarray],
        k: np.ndarray,
        b: np.ndarray,
        timer: np.ndarray,
        n_decision: np.ndarray | None,
        b1: np.ndarray,
        t1: np.ndarray,
        k1c: np.ndarray,
        n1: np.ndarray,
        flush: np.ndarray | None,
    ) -> None:
        """Without a token table: the step-sum rows of the decision token, the flush and
        the forced token, from token_cost (both tokens in one evaluation), appended to
        ``parts`` (``rows``: the sub-envs' pool rows)."""
        m, H = self.model, self._H
        rates = self._rates[rows]
        sub = np.arange(rows.size)
        ex1 = self._exits[rows, k1c].astype(np.int64)
        if n_decision is not None:
            kk = np.concatenate([k, k1c])
            lat, en, stall, _, wake = m.token_cost(
                kk,
                np.concatenate([b, b1]),
                np.concatenate([n_decision, n1]),
                rates[np.concatenate([sub, sub]), kk + H - 1],
                np.concatenate([timer, t1]),
                np.concatenate([np.ones_like(ex1), ex1]),
            )
            dec = np.zeros((rows.size, 2, _N_COLS))
            dec[:, 0, _LAT], dec[:, 0, _EN], dec[:, 0, _STALL] = (
                lat[: rows.size],
                en[: rows.size],
                stall[: rows.size],
            )
            dec[:, 0, _SENT] = n_decision * m.state_bits / 8.0
            dec[:, 0, _VOL] = n_decision > 0
            dec[:, 0, _WAKE] = wake[: rows.size]
            dec[:, 0, _COMP] = m.device_energy_j[k]
            if flush is not None:
                rate0 = rates[sub, k + H - 1]
                dec[:, 1, _EN] = np.where(flush, m.flush_energy(b1, rate0, t1), 0.0)
                dec[:, 1, _SENT] = np.where(flush, b1 * m.state_bits / 8.0, 0.0)
                dec[:, 1, _WAKE] = flush & (t1 >= m.tail_steps)
            parts.append(dec)
            lat, en, stall, wake = (
                lat[rows.size :],
                en[rows.size :],
                stall[rows.size :],
                wake[rows.size :],
            )
        else:
            lat, en, stall, _, wake = m.token_cost(k1c, b1, n1, rates[sub, k1c + H - 1], t1, ex1)
        first = np.zeros((rows.size, 1, _N_COLS))
        first[:, 0, _LAT], first[:, 0, _EN], first[:, 0, _STALL] = lat, en, stall
        first[:, 0, _SENT] = n1 * m.state_bits / 8.0
        first[:, 0, _FORCED] = 1 - ex1
        first[:, 0, _LIM] = ex1
        first[:, 0, _WAKE] = wake
        first[:, 0, _COMP] = m.device_energy_j[k1c]
        first[n1 == 0] = 0.0  # no forced token
        parts.append(first)

    def _observe(self, idx: np.ndarray | None) -> np.ndarray:
        """Observations of the sub-envs ``idx`` (None: all; the single env's ``_obs``,
        batched)."""
        if idx is None:
            return self._observe_at(self._rq + self._k, self._b, self._timer)
        return self._observe_at(self._rq[idx] + self._k[idx], self._b[idx], self._timer[idx])

    def _observe_at(self, pos: np.ndarray, b: np.ndarray, timer: np.ndarray) -> np.ndarray:
        """Observations at flat token positions ``pos`` (row * Q + token), backlogs ``b``
        and radio timers ``timer``."""
        H = self._H
        obs = self._obs_tab.take(pos, axis=0)
        obs[:, H] = self._backlog_col.take(b)
        obs[:, H + 5] = self._radio_col.take(timer)
        return obs
