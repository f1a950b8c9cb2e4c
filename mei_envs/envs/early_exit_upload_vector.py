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
step on the episode's rates. Episodes come from each sub-env's own generator in the single
env's order: in fsmc mode up to 8 are drawn ahead per sub-env (one ``random`` call for them
all: the same stream) and worked out together (:meth:`EarlyExitUploadModel.
episode_from_uniforms`'s comparisons, batched), dropped when the sub-env is reseeded; in
gauss_markov mode by :meth:`EarlyExitUploadModel.sample_episode` at reset. The step itself
draws nothing.

How a step stays batched: at a decision the agent's token is processed for every sub-env
at once; the forced tokens after it are (a) at most one from the state the decision left
(a non-exited token, or an exited one with a full backlog), then (b) a run of non-exited
tokens, each starting from backlog 0 with the radio in its tail (a forced upload empties
the backlog and restarts the tail). The costs of (b) depend on the episode only, so they are
computed once per episode (``token_cost`` over all its tokens) and added in token order with
``np.add.accumulate``: the same floating-point sums, in the same order, as the single env's
token-by-token loop, so rewards and infos are bit-identical to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mei_envs.envs.early_exit_upload import (
    EPISODE_KEYS,
    LEAN_KEYS,
    EarlyExitUploadEnv,
)
from mei_envs.vector import MeiVectorEnv, seed_list

# Rows of the token table (fsmc mode) beyond which costs are evaluated per step instead.
_MAX_TABLE_ROWS = 1 << 18
# fsmc mode: memory for episodes drawn ahead (at most 8 per sub-env, at least 1).
_PREFETCH_BYTES = 32 << 20
# Memory for the per-episode observation tables (beyond it, observations are assembled
# column by column each step).
_OBS_TABLE_BYTES = 64 << 20

# Columns of the per-step sums (LEAN_KEYS order).
_LAT, _EN, _STALL, _SENT, _FORCED, _VOL, _LIM, _WAKE, _COMP = range(len(LEAN_KEYS))
# The columns a run of forced tokens from backlog 0 adds to (forced_uploads grows by 1.0 a
# token, exactly; wakeups, voluntary and limit uploads by 0: the radio is in its tail).
_RUN_COLS = [_LAT, _EN, _STALL, _SENT, _COMP]
if LEAN_KEYS != (
    "latency_s",
    "energy_J",
    "stall_s",
    "bytes_sent",
    "forced_uploads",
    "voluntary_uploads",
    "limit_uploads",
    "wakeups",
    "compute_energy_J",
):  # pragma: no cover - a guard for whoever edits the env's info_metrics
    raise ImportError(f"EarlyExitUploadVectorEnv: update its columns for {LEAN_KEYS}")


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
        N = K + H - 1
        self._H, self._K = H, K
        self._rows = np.arange(n)
        self._window = H - 1 - np.arange(H)  # slot offsets of the SNR observation, newest first
        self._left_obs = np.array(single._left_obs)
        self._ctx_obs = np.array(single._ctx_obs)
        self._t_dev_pad = np.append(m.t_dev_s, 0.0)
        self._timer0 = m.tail_steps if cfg.initial_radio == "idle" else 0
        # Per sub-env: the episode's draws, and per token the costs of a forced upload from
        # backlog 0 in the radio tail (what every token after a run's first one pays).
        self._exits = np.zeros((n, K), dtype=bool)
        self._conf = np.zeros((n, K))
        self._rates = np.ones((n, N))
        self._snr_obs = np.zeros((n, N), dtype=np.float32)
        self._next_exit = np.full((n, K + 1), K, dtype=np.int64)
        self._run_cost = np.zeros((n, K + 1, len(_RUN_COLS)))
        # fsmc mode: the run costs of every (token, FSMC state), from the same token_cost
        # (the vector env gathers them per episode instead of evaluating it again).
        self._run_table: np.ndarray | None = None
        if m.channel.mode == "fsmc":
            self._run_table = self._run_costs(
                np.arange(K)[:, None], np.asarray(m.state_rate_bps, float)[None, :]
            )
        self._step_obs: np.ndarray | None = None
        self._ch = np.zeros((n, K), dtype=np.intp)  # fsmc: each token's channel state
        # The radio timer after a token that uploads nothing / something, for every timer
        # value (EarlyExitUploadModel.transition, as the single env tabulates it), and the
        # states a decision uploads, flat: n_up_table[a, b] at a * (limit + 1) + b.
        timers = np.arange(m.tail_steps + 1)
        self._timer_after = np.concatenate([m.transition(0, timers, u)[1] for u in (0, 1)])
        self._n_up_flat = m.n_up_table.reshape(-1)
        self._row_k = np.arange(n) * K  # flat offsets of the sub-envs' token rows
        self._build_token_table()
        # fsmc mode: episodes drawn ahead, ``_n_ahead`` per sub-env (see _prefetch); None in
        # gauss_markov mode (its draws are not uniforms only).
        self._head: np.ndarray | None = None
        if m.channel.mode == "fsmc":
            D = 2 * K + N
            self._n_ahead = int(np.clip(_PREFETCH_BYTES // (n * (D + K + N) * 8), 1, 8))
            E = self._n_ahead
            self._u_ahead = np.empty((n, E, D))
            self._ex_ahead = np.empty((n, E, K), dtype=bool)
            self._conf_ahead = np.empty((n, E, K))
            self._st_ahead = np.empty((n, E, N), dtype=np.intp)
            self._head = np.full(n, E)  # next unused episode per sub-env (E: none left)
        # State.
        self._k = np.zeros(n, dtype=np.int64)
        self._b = np.zeros(n, dtype=np.int64)
        self._timer = np.zeros(n, dtype=np.int64)
        self._pending = np.zeros(n, dtype=bool)  # ended at reset: one more step delivers it
        self._acc = np.zeros((n, len(LEAN_KEYS)))  # sums of the step in progress
        self._episode = np.zeros((n, len(LEAN_KEYS)))
        self._masks = np.ones((n, single.action_space.n), dtype=bool)
        self._masks.flags.writeable = False
        self._all = np.ones(n, dtype=bool)
        self._all.flags.writeable = False
        # Observations: per sub-env a table of its episode's observation at every token
        # (and after the end), all but the backlog and radio columns, filled at reset; a
        # step takes its rows and fills those two from per-value tables (the single env's
        # b / limit and 1 - timer / tail_steps). None if it would exceed _OBS_TABLE_BYTES.
        self._backlog_col = np.arange(m.limit + 1) / m.limit
        self._radio_col = 1.0 - np.arange(m.tail_steps + 1) / m.tail_steps
        self._obs_tab: np.ndarray | None = None
        if n * (K + 1) * (H + 7) * 4 <= _OBS_TABLE_BYTES:
            self._obs_tab = np.zeros((n * (K + 1), H + 7), dtype=np.float32)
            self._row_k1 = np.arange(n) * (K + 1)
            # Token k's SNR window: slots k + H - 1 down to k (the last token's after the end).
            kk = np.minimum(np.arange(K + 1), K - 1)
            self._win = kk[:, None] + self._window[None, :]
            self._tok_cols = np.zeros((K + 1, H + 7), dtype=np.float32)
            self._tok_cols[:, H + 1] = self._left_obs
            self._tok_cols[:, H + 2] = self._ctx_obs

    def _build_token_table(self) -> None:
        """fsmc mode: the step-sum rows (``LEAN_KEYS`` columns) of every token a step can
        process, from token_cost over the FSMC states, so a step gathers them instead of
        evaluating the cost function: decisions ``(token, backlog, action, state, asleep)``,
        backlog-limit uploads ``(token, state, asleep)``, non-exited tokens ``(token,
        backlog, state, asleep)``, then a row of zeros. The timer enters a token's cost only
        through asleep (tests/test_early_exit_fastpath.py), so it is evaluated at timer 0
        and at tail_steps. None (costs evaluated per step) in gauss_markov mode or when the
        table would exceed ``_MAX_TABLE_ROWS``."""
        m = self.model
        K, B, M = m.K, m.limit, m.tail_steps
        C, A = m.fsmc.n_states, len(m.cfg.upload_fractions)
        self._table = None
        n_rows = K * (B + 1) * C * 2 * (A + 1) + K * C * 2 + 1
        if m.channel.mode != "fsmc" or n_rows > _MAX_TABLE_ROWS:
            return
        rate = np.asarray(m.state_rate_bps, float)
        timer = np.array([0, M])
        bits = m.state_bits / 8.0

        def rows(k, b, n, c, t, exited, voluntary, forced, lim):
            lat, en, stall, _, wake = m.token_cost(k, b, n, rate[c], timer[t], exited)
            shape = np.broadcast_shapes(np.shape(lat), np.shape(n), np.shape(k))
            out = np.empty((*shape, len(LEAN_KEYS)))
            out[..., _LAT], out[..., _EN], out[..., _STALL] = lat, en, stall
            out[..., _SENT] = n * bits
            out[..., _FORCED] = forced
            out[..., _VOL] = (n > 0) if voluntary else 0.0
            out[..., _LIM] = lim
            out[..., _WAKE] = wake
            out[..., _COMP] = m.device_energy_j[k]
            return out.reshape(-1, len(LEAN_KEYS))

        kk = np.arange(K)
        bb, cc, tt = np.arange(B + 1), np.arange(C), np.arange(2)
        k5, b5 = kk[:, None, None, None, None], bb[None, :, None, None, None]
        a5 = np.arange(A)[None, None, :, None, None]
        n5 = m.n_up_table[a5, b5]
        dec = rows(k5, b5, n5, cc[:, None], tt, 1, True, 0.0, 0.0)
        k3 = kk[:, None, None]
        lim = rows(k3, B, B + 1, cc[None, :, None], tt, 1, False, 0.0, 1.0)
        k4, b4 = kk[:, None, None, None], bb[None, :, None, None]
        nex = rows(k4, b4, b4 + 1, cc[:, None], tt, 0, False, 1.0, 0.0)
        self._table = np.concatenate([dec, lim, nex, np.zeros((1, len(LEAN_KEYS)))])
        n = self.num_envs
        self._base_dec = np.zeros(n * K, dtype=np.int64)
        self._base_nex = np.zeros(n * K, dtype=np.int64)
        self._base_lim = np.zeros(n * K, dtype=np.int64)
        self._off_lim = dec.shape[0]
        self._off_nex = self._off_lim + lim.shape[0]
        self._zero_row = self._table.shape[0] - 1

    def _fill_row_bases(self, idx: np.ndarray, states: np.ndarray) -> None:
        """Token table path: per token of the new episodes of ``idx`` (channel ``states``),
        the parts of its table rows' indices that depend on the episode only: decision
        ``(((k (B+1) + b) A + a) C + c) 2 + asleep = base_dec + 2 C (b A + a) + asleep``,
        non-exited ``off_nex + base_nex + 2 C b + asleep`` and limit ``off_lim + base_lim +
        asleep`` (integers: the same indices)."""
        m = self.model
        K, B, C = self._K, m.limit, m.fsmc.n_states
        A = self.single_action_space.n
        kk = np.arange(K)
        rows = (self._row_k[idx][:, None] + kk).reshape(-1)
        st = states.reshape(-1, K)
        self._base_dec[rows] = (2 * (kk * ((B + 1) * A * C) + st)).reshape(-1)
        self._base_nex[rows] = (self._off_nex + 2 * (kk * ((B + 1) * C) + st)).reshape(-1)
        self._base_lim[rows] = (self._off_lim + 2 * (kk * C + st)).reshape(-1)

    def _seed(self, seed: Any) -> None:
        super()._seed(seed)
        if self._head is not None:  # episodes drawn from the old generators are dropped
            for i, s in enumerate(seed_list(seed, self.num_envs)):
                if s is not None:
                    self._head[i] = self._n_ahead

    def _prefetch(self) -> None:
        """fsmc mode: top every sub-env up to ``_n_ahead`` episodes drawn ahead from its own
        generator, in order (one ``random`` call per sub-env for all its new episodes: the
        same stream as one call per episode), and work out their exit chains, channel paths
        and confidences for all of them at once (the same comparisons as
        :meth:`EarlyExitUploadModel.episode_from_uniforms`)."""
        m, K, E = self.model, self._K, self._n_ahead
        N = K + self._H - 1
        left = E - self._head
        src = np.minimum(self._head[:, None] + np.arange(E), E - 1)
        for buf in (self._u_ahead, self._ex_ahead, self._conf_ahead, self._st_ahead):
            buf[:] = np.take_along_axis(buf, src[:, :, None], axis=1)
        for i in np.flatnonzero(left < E):
            self.rngs[i].random(out=self._u_ahead[i, left[i] :])
        new = np.arange(E)[None, :] >= left[:, None]
        u = self._u_ahead[new]
        exits = m._exit_chain(u[:, :K])
        lo = m.cfg.exit_threshold
        uc = u[:, K + N :]
        self._ex_ahead[new] = exits
        self._conf_ahead[new] = np.where(exits, lo + uc * (1.0 - lo), uc * lo)
        self._st_ahead[new] = m.fsmc_paths(u[:, K : K + N])
        self._head[:] = 0

    def _run_costs(self, tok: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """The ``_RUN_COLS`` of a forced (non-exited) upload of one state from backlog 0 with
        the radio in its tail, at tokens ``tok`` and rates ``rate`` (broadcast), stacked on
        a last axis."""
        m = self.model
        lat, en, stall, _, wake = m.token_cost(tok, 0, 1, rate, 0, 0)
        if np.any(wake):  # pragma: no cover - timer 0 < tail_steps: never asleep
            raise RuntimeError("EarlyExitUploadVectorEnv: a run token woke the radio")
        lat = np.asarray(lat, float)
        out = np.empty((*lat.shape, len(_RUN_COLS)))
        out[..., 0], out[..., 1], out[..., 2] = lat, en, stall
        out[..., 3] = 1 * m.state_bits / 8.0
        out[..., 4] = np.broadcast_to(m.device_energy_j[tok], lat.shape)
        return out

    def action_masks(self) -> np.ndarray:
        """Legal actions of every sub-env, ``(num_envs, n_actions)`` (a cached read-only
        array: every action is legal at every decision)."""
        return self._masks

    # ---- reset -------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        m, K, H = self.model, self._K, self._H
        opts = self.single_env._check_options(options) if options else {}
        idx = np.flatnonzero(mask)
        states = np.empty((idx.size, K), dtype=np.intp)  # fsmc: the tokens' channel states
        if opts:
            for row, i in enumerate(idx):
                if self._head is not None and self._head[i] < self._n_ahead:
                    # The generator already drew this episode's uniforms (prefetched).
                    ep = m.episode_from_uniforms(self._u_ahead[i, self._head[i]], **opts)
                    self._head[i] += 1
                else:
                    ep = m.sample_episode(self.rngs[i], **opts)
                self._exits[i] = ep.exits
                self._conf[i] = ep.conf
                self._rates[i] = ep.rates
                self._snr_obs[i] = ep.snr_obs
                states[row] = ep.states[H - 1 :]
        elif self._head is not None:
            if (self._head[idx] == self._n_ahead).any():
                self._prefetch()
            slot = self._head[idx]
            self._head[idx] += 1
            self._exits[idx] = self._ex_ahead[idx, slot]
            self._conf[idx] = self._conf_ahead[idx, slot]
            slots = self._st_ahead[idx, slot]
            self._rates[idx] = m._state_rate_arr[slots]
            self._snr_obs[idx] = m._state_obs_arr[slots]
            states = slots[:, H - 1 :]
        else:
            eps = m.sample_episodes([self.rngs[i] for i in idx])
            self._exits[idx] = eps["exits"]
            self._conf[idx] = eps["conf"]
            self._rates[idx] = eps["rates"]
            self._snr_obs[idx] = eps["snr_obs"]
        self._ch[idx] = states
        if self._table is not None:
            self._fill_row_bases(idx, states)
        ex = self._exits[idx]
        # Next exited token at or after each token (K if none).
        pos = np.where(ex, np.arange(K), K)
        self._next_exit[idx, :K] = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]
        # A forced (non-exited) upload of one state from backlog 0, radio in its tail.
        if self._run_table is not None:
            self._run_cost[idx, :K] = self._run_table[np.arange(K), states]
        else:
            self._run_cost[idx, :K] = self._run_costs(np.arange(K), self._rates[idx, H - 1 :])
        if self._obs_tab is not None:
            self._fill_obs_table(idx)
        self._k[idx] = 0
        self._b[idx] = 0
        self._timer[idx] = self._timer0
        self._acc[idx] = 0.0
        self._episode[idx] = 0.0
        # Sub-envs whose first token does not exit start with forced tokens (backlog 0 is
        # below the limit, so an exited first token is a decision).
        forced_start = idx[~self._exits[idx, 0]]
        if forced_start.size:
            if self._table is not None:
                self._start_forced(forced_start)
            else:
                self._advance(forced_start, None)
        self._pending[idx] = self._k[idx] == K
        obs = self._step_obs  # within an autoreset: the step's observation, reset rows redone
        self._step_obs = None
        if obs is None or idx.size == self.num_envs:
            return self._observe(self._rows), {}
        obs[idx] = self._observe(idx)
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
        m = self.model
        if self._pending.any():  # ended at reset: this step only delivers their costs
            live = np.flatnonzero(~self._pending)
            self._pending[:] = False
            if live.size:
                self._advance(live, a[live])
        else:
            self._advance(self._rows, a)
        acc = self._acc
        self._acc = np.zeros_like(acc)
        self._episode += acc
        lc, ec = m.cost_terms(acc[:, _LAT], acc[:, _EN])
        reward = -(lc + ec)
        terminated = self._k == self._K
        infos: dict[str, Any] = {}
        for c, key in enumerate(LEAN_KEYS):
            infos[key], infos["_" + key] = acc[:, c], self._all
        truncated = np.zeros(self.num_envs, dtype=bool)
        obs = self._observe(self._rows)
        if not terminated.any():
            return obs, reward, terminated, truncated, infos
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
        nobody = np.zeros(self.num_envs, dtype=bool)
        nobody.flags.writeable = False
        final_info: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for c, key in enumerate(LEAN_KEYS):
            final_info[key], final_info["_" + key] = acc[:, c], done
            out[key], out["_" + key] = acc[:, c], live
        for c, key in enumerate(EPISODE_KEYS):
            final_info[key], final_info["_" + key] = tot[:, c], done
            out[key], out["_" + key] = tot[:, c], nobody
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            final_obs[i] = obs[i].copy()
        self._step_obs = obs
        obs, _ = self._reset_envs(done)
        self._step_obs = None
        out["final_obs"], out["_final_obs"] = final_obs, done
        out["final_info"], out["_final_info"] = final_info, done
        return obs, reward, terminated, truncated, out

    # ---- internals ---------------------------------------------------------------------
    def _advance(self, idx: np.ndarray, actions: np.ndarray | None) -> None:
        """Move the sub-envs ``idx`` (none of them ended) to their next decision or the end:
        the decision token (``actions`` of ``idx``; None at reset: no decision), at most
        one forced token from the state it leaves, then a run of non-exited tokens (costs
        from the per-episode table), adding the costs to the step sums in token order with
        one ``np.add.accumulate`` (the single env's sums, bit for bit)."""
        m, K, H, limit = self.model, self._K, self._H, self.model.limit
        everyone = idx.size == self.num_envs
        if everyone:
            k, b, timer, row_k = self._k, self._b, self._timer, self._row_k
        else:
            k, b, timer, row_k = self._k[idx], self._b[idx], self._timer[idx], self._row_k[idx]
        parts = [self._acc[idx][:, None, :]]
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
        exited1 = self._exits.reshape(-1)[row_k + k1c]
        forced = (k1 < K) & (~exited1 | (b1 >= limit))
        n1 = np.where(forced, b1 + 1, 0)
        # The backlog left after the last token is flushed (energy only).
        flush = None
        if n_decision is not None and m.cfg.flush_at_end:
            flush = (k1 == K) & (b1 > 0)
            if not flush.any():
                flush = None
        if self._table is not None:
            # Gather the decision token's and the forced token's rows (a row of zeros where
            # no token is forced); a flush takes the forced token's place (it only happens
            # after the last token, where none is).
            B, C, M = limit, m.fsmc.n_states, m.tail_steps
            pos1 = row_k + k1c
            first = np.where(
                exited1,
                self._base_lim.take(pos1),
                self._base_nex.take(pos1) + (2 * C) * np.minimum(b1, B),
            )
            first += t1 >= M
            first = np.where(forced, first, self._zero_row)
            if n_decision is None:
                rows = self._table.take(first, axis=0)[:, None, :]
            else:
                A = self.single_action_space.n
                dec = self._base_dec.take(row_k + k) + (2 * C) * (b * A + actions)
                dec += timer >= M
                rows = self._table.take(np.stack([dec, first], axis=1), axis=0)
                if flush is not None:
                    f = np.flatnonzero(flush)
                    rate0 = self._rates[idx[f], k[f] + H - 1]
                    rows[f, 1, _EN] = m.flush_energy(b1[f], rate0, t1[f])
                    rows[f, 1, _SENT] = b1[f] * m.state_bits / 8.0
                    rows[f, 1, _WAKE] = t1[f] >= m.tail_steps
                    b1 = np.where(flush, 0, b1)
            parts.append(rows)
        else:
            self._cost_parts(idx, parts, k, b, timer, n_decision, b1, t1, k1c, n1, flush)
            if flush is not None:
                b1 = np.where(flush, 0, b1)
        # transition(b1, t1, b1 + 1) where a token is forced: backlog 0, radio tail restarted.
        b2, t2 = np.where(forced, 0, b1), np.where(forced, 0, t1)
        k2 = k1 + forced
        # The step sums in token order (the single env's running sums, bit for bit).
        total = parts[0][:, 0]
        for part in parts[1:]:
            for j in range(part.shape[1]):
                total = total + part[:, j]
        self._acc[idx] = total
        stop, ran = self._add_runs(idx, k2)
        if ran is not None:
            b2, t2 = np.where(ran, 0, b2), np.where(ran, 0, t2)
        self._k[idx], self._b[idx], self._timer[idx] = stop, b2, t2

    def _add_runs(self, idx: np.ndarray, k2: np.ndarray) -> tuple[np.ndarray, Any]:
        """Add to the step sums of the sub-envs ``idx`` the run of non-exited tokens from
        token ``k2`` on (from backlog 0, radio in its tail: costs from the per-episode
        table) in token order with one ``np.add.accumulate``; return where each stops (its
        next exited token, or K) and which ran (None if none did)."""
        K = self._K
        stop = self._next_exit[idx, k2]
        run = stop - k2
        ran = run > 0
        if not ran.any():
            return stop, None
        r, length, start = idx[ran], run[ran], k2[ran]
        steps = np.arange(int(length.max()))
        costs = self._run_cost[r[:, None], np.minimum(start[:, None] + steps, K)]
        costs[steps[None, :] >= length[:, None]] = 0.0  # adding 0.0 leaves a sum unchanged
        acc = self._acc[r]
        sums = np.concatenate([acc[:, None, _RUN_COLS], costs], axis=1)
        acc[:, _RUN_COLS] = np.add.accumulate(sums, axis=1)[:, -1]
        acc[:, _FORCED] += length  # whole numbers: exact
        self._acc[r] = acc
        return stop, ran

    def _start_forced(self, idx: np.ndarray) -> None:
        """Token table path: the new episodes of the sub-envs ``idx``, whose token 0 does not
        exit, up to their first decision (what :meth:`_advance` does with no action, in
        fewer operations): token 0's forced upload of one state from backlog 0 at the
        initial radio timer, then the run of non-exited tokens after it."""
        m = self.model
        B, C = m.limit, m.fsmc.n_states
        c0 = self._ch[idx, 0]
        first = self._off_nex + (0 * (B + 1) * C + c0) * 2 + int(self._timer0 >= m.tail_steps)
        self._acc[idx] = self._acc[idx] + self._table.take(first, axis=0)
        stop, _ = self._add_runs(idx, np.ones(idx.size, dtype=np.int64))
        # A forced upload empties the backlog and restarts the tail (transition(0, t, 1)).
        self._k[idx], self._b[idx], self._timer[idx] = stop, 0, 0

    def _cost_parts(
        self,
        idx: np.ndarray,
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
        """Without a token table (gauss_markov mode, or a table too big): the step-sum rows
        of the decision token, the flush and the forced token, from token_cost (both tokens
        in one evaluation), appended to ``parts``."""
        m, H = self.model, self._H
        n_cols = len(LEAN_KEYS)
        rates = self._rates[idx]
        sub = np.arange(idx.size)
        ex1 = self._exits[idx, k1c].astype(np.int64)
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
            dec = np.zeros((idx.size, 2, n_cols))
            dec[:, 0, _LAT], dec[:, 0, _EN], dec[:, 0, _STALL] = (
                lat[: idx.size],
                en[: idx.size],
                stall[: idx.size],
            )
            dec[:, 0, _SENT] = n_decision * m.state_bits / 8.0
            dec[:, 0, _VOL] = n_decision > 0
            dec[:, 0, _WAKE] = wake[: idx.size]
            dec[:, 0, _COMP] = m.device_energy_j[k]
            if flush is not None:
                rate0 = rates[sub, k + H - 1]
                dec[:, 1, _EN] = np.where(flush, m.flush_energy(b1, rate0, t1), 0.0)
                dec[:, 1, _SENT] = np.where(flush, b1 * m.state_bits / 8.0, 0.0)
                dec[:, 1, _WAKE] = flush & (t1 >= m.tail_steps)
            parts.append(dec)
            lat, en, stall, wake = (
                lat[idx.size :],
                en[idx.size :],
                stall[idx.size :],
                wake[idx.size :],
            )
        else:
            lat, en, stall, _, wake = m.token_cost(k1c, b1, n1, rates[sub, k1c + H - 1], t1, ex1)
        first = np.zeros((idx.size, 1, n_cols))
        first[:, 0, _LAT], first[:, 0, _EN], first[:, 0, _STALL] = lat, en, stall
        first[:, 0, _SENT] = n1 * m.state_bits / 8.0
        first[:, 0, _FORCED] = 1 - ex1
        first[:, 0, _LIM] = ex1
        first[:, 0, _WAKE] = wake
        first[:, 0, _COMP] = m.device_energy_j[k1c]
        first[n1 == 0] = 0.0  # no forced token
        parts.append(first)

    def _fill_obs_table(self, idx: np.ndarray) -> None:
        """The observation tables of the sub-envs ``idx`` (new episodes): every column but
        the backlog's and the radio's, at tokens 0..K (K: after the end), as ``_observe``
        computes them."""
        K, H = self._K, self._H
        tab = np.empty((idx.size, K + 1, H + 7), dtype=np.float32)
        tab[:] = self._tok_cols
        tab[:, :, :H] = self._snr_obs[idx][:, self._win]
        tab[:, :K, H + 3] = self._exits[idx]
        tab[:, K, H + 3] = 0.0
        tab[:, :K, H + 4] = self._conf[idx]
        tab[:, K, H + 4] = 0.0
        rate = self._rates[idx][:, self._win[:, 0]] / self.model.mean_rate_bps
        tab[:, :, H + 6] = np.minimum(rate, 1.0)
        rows = (self._row_k1[idx][:, None] + np.arange(K + 1)).reshape(-1)
        self._obs_tab[rows] = tab.reshape(-1, H + 7)

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        """Observations of the sub-envs ``rows`` (the single env's ``_obs``, batched)."""
        K, H = self._K, self._H
        if self._obs_tab is not None:
            obs = self._obs_tab.take(self._row_k1[rows] + self._k[rows], axis=0)
            obs[:, H] = self._backlog_col.take(self._b[rows])
            obs[:, H + 5] = self._radio_col.take(self._timer[rows])
            return obs
        k = self._k[rows]
        done = k == K
        j = np.minimum(k, K - 1)
        obs = np.empty((rows.size, H + 7), dtype=np.float32)
        obs[:, :H] = self._snr_obs[rows[:, None], j[:, None] + self._window]
        obs[:, H] = self._b[rows] / self.model.limit
        obs[:, H + 1] = self._left_obs[k]
        obs[:, H + 2] = self._ctx_obs[k]
        obs[:, H + 3] = self._exits[rows, j] & ~done
        obs[:, H + 4] = np.where(done, 0.0, self._conf[rows, j])
        obs[:, H + 5] = 1.0 - self._timer[rows] / self.model.tail_steps
        rate = self._rates[rows, j + H - 1] / self.model.mean_rate_bps
        obs[:, H + 6] = np.minimum(rate, 1.0)
        return obs
