"""Native vector version of ``mei_envs/SplitFedAlloc-v0`` (numpy over the sub-envs).

``gym.make_vec("mei_envs/SplitFedAlloc-v0", num_envs=n, vectorization_mode="vector_entry_point")``
builds :class:`SplitFedAllocVectorEnv`. Sub-env ``i`` reproduces the single env seeded
``seed + i`` step by step, across episodes (``AutoresetMode.SAME_STEP``, the contract of
:mod:`mei_envs.vector`).

**One copy of the dynamics.** Every round is computed by the functions of
:mod:`mei_envs.split_fed` that the single env and the oracles call: the per-device formulas
(:func:`~mei_envs.split_fed.chain_times`, :func:`~mei_envs.split_fed.device_energy_j`,
:meth:`~mei_envs.split_fed.SplitFedModel.next_loss`) on ``(num_envs, n_devices)`` arrays, the
exact min-max split (:func:`~mei_envs.split_fed.minmax_shares`) as one batched solve over the
sub-envs that ask for it, the channel steps of :mod:`mei_envs.wireless`
(``FiniteStateMarkovChannel.step_uniform``, ``step``'s states from the same draws, or
``GaussMarkovFading.step``, on all links at once), and the single env's own clipping rule
(tabulated per least-memory device type at construction).

**Randomness.** The single env draws the devices at reset and one row of fading draws per
round. A sub-env's reset is the single env's own (``SplitFedAllocEnv._new_episode`` on the
sub-env's generator, its state copied into the arrays). Each sub-env draws its fading rows
in blocks of ``BLOCK_ROUNDS`` from its own generator
(the same numbers in the same order); at an episode end the generator is put back where the
single env's would be (state at the block start, then the rows actually used drawn again),
so the next episode's draws match too.

**Info.** Always the lean level (whatever ``config.info`` says): per step the keys of
``metadata["info_metrics"]``, and at an episode end the ``episode_<key>`` totals (in
``final_info``, as :class:`gymnasium.vector.SyncVectorEnv` over ``info="lean"`` single envs
reports them). ``action_masks()`` gives the ``(num_envs, n_actions)`` masks in discrete mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mei_envs import wireless
from mei_envs.envs.split_fed_alloc import (
    ALLOCATION_RULES,
    SplitFedAllocEnv,
    book_round,
)
from mei_envs.split_fed import chain_times, device_energy_j, spectral_efficiency
from mei_envs.vector import MeiVectorEnv

__all__ = ["BLOCK_ROUNDS", "SplitFedAllocVectorEnv"]

# Rounds of fading draws each sub-env takes from its generator at a time.
BLOCK_ROUNDS = 64
_EPISODE_KEYS = tuple(f"episode_{k}" for k in SplitFedAllocEnv.metadata["info_metrics"])


def _row_max(a: np.ndarray) -> np.ndarray:
    """``a.max(-1)`` of a 2-D array (exact either way); for a few columns one ``maximum``
    per column, which numpy runs faster than a reduction over a short last axis."""
    if a.shape[1] > 16:
        return a.max(-1)
    out = a[:, 0].copy()
    for c in range(1, a.shape[1]):
        np.maximum(out, a[:, c], out=out)
    return out


class _Rows:
    """Stands in for a generator inside the Gauss-Markov channel step: hands out the
    pre-drawn normals of this round."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def standard_normal(self, shape: Any) -> np.ndarray:
        return self.values.reshape(shape)


class SplitFedAllocVectorEnv(MeiVectorEnv):
    """``num_envs`` SplitFedAlloc-v0 sub-envs stepped together with numpy arrays.

    Args:
        num_envs: number of sub-envs.
        config, render_mode, **kwargs: as :class:`SplitFedAllocEnv` (presets, fields).
    """

    single_env_class = SplitFedAllocEnv

    def _setup(self, single: SplitFedAllocEnv) -> None:
        cfg, m = single.config, single.model
        self.model = m
        B, N = self.num_envs, cfg.n_devices
        self._N = N
        self._discrete = cfg.action_mode == "discrete"
        self._sl = cfg.scheme == "sl"
        D, L, K = len(cfg.device_types), m.L, m.K
        # The single env's clipping rule, tabulated per least-memory type and request.
        allowed = m.allowed_cuts - 1
        self._allowed = allowed
        clip = np.zeros((4, D, L, K), dtype=np.int64)
        for d in range(D):
            single._dmin = d
            single._feasible = single._feasible_by_type[d]
            for j in allowed.tolist():
                for k in range(K):
                    clip[:, d, j, k] = single._clip(j, k)
        # rows (clipped j, clipped k, cut clipped, rank clipped) at flat index (d * L + j) * K + k
        self._clip_rows = np.ascontiguousarray(clip.reshape(4, -1).T)
        # (D, L, K) cost tables, raveled for one flat-index gather per step
        self._base_flat = np.ascontiguousarray(m.base_table).ravel()
        self._dev_flat = np.ascontiguousarray(m.dev_train_s).ravel()
        self._masks = np.stack(single._mask_by_type)  # (D, n_actions)
        self._ranks = m.ranks
        self._fsmc = single.channel.fsmc if single._gm is None else None
        if self._fsmc is not None:
            self._fade_table = np.asarray(single._fade_list)
            self._draw_shape: tuple[int, ...] = (N,)
        else:
            self._gm = wireless.GaussMarkovFading(
                single.channel.rho, k_factor=cfg.k_factor, n_links=B * N
            )
            self._gm._s = np.zeros(B * N, dtype=complex)  # set per sub-env at its reset
            self._draw_shape = (2, N)
        self._block = np.zeros((B, BLOCK_ROUNDS, *self._draw_shape))
        self._block_pos = np.zeros(B, dtype=np.int64)
        self._block_state: list[Any] = [None] * B
        self._block_rng: list[Any] = [None] * B
        # per-sub-env state
        self._types = np.zeros((B, N), dtype=np.int64)
        self._dmin = np.zeros(B, dtype=np.int64)
        self._gain = np.ones((B, N))
        self._fade = np.ones((B, N))
        self._states = np.zeros((B, N), dtype=np.intp)
        self._ref_time = np.ones(B)
        self._ref_energy = np.ones(B)
        self._loss = np.zeros(B)
        self._round = np.zeros(B, dtype=np.int64)
        self._time = np.zeros(B)
        self._energy = np.zeros(B)
        self._cut_sum = np.zeros(B, dtype=np.int64)
        self._rank_sum = np.zeros(B, dtype=np.int64)
        self._clip_sum = np.zeros(B, dtype=np.int64)
        self._cut_j = np.zeros(B, dtype=np.int64)
        self._rank_k = np.zeros(B, dtype=np.int64)
        self._last_t = np.zeros((B, N))
        self._rows = np.arange(B)
        self._obs_static = np.zeros((B, 4 * N + 6), dtype=np.float32)
        self._step_obs: np.ndarray | None = None

    # ---- randomness ----------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = (n, *self._draw_shape)
        if self._fsmc is not None:
            return rng.random(shape)
        return rng.standard_normal(shape)

    def _new_block(self, i: int) -> None:
        rng = self.rngs[i]
        self._block_state[i] = rng.bit_generator.state
        self._block_rng[i] = rng
        self._block[i] = self._draw(rng, BLOCK_ROUNDS)
        self._block_pos[i] = 0

    def _rewind(self, i: int) -> None:
        """Put generator ``i`` where the single env's would be: the block's start, then
        the rows used so far."""
        rng = self.rngs[i]
        if self._block_rng[i] is not rng:
            return  # a new generator (reseeded): nothing drawn ahead
        rng.bit_generator.state = self._block_state[i]
        used = int(self._block_pos[i])
        if used:
            self._draw(rng, used)
        self._block_rng[i] = None

    def _round_draws(self) -> np.ndarray:
        """This round's draws of every sub-env, ``(num_envs, *draw_shape)``."""
        full = np.flatnonzero(self._block_pos >= BLOCK_ROUNDS)
        for i in full.tolist():
            self._new_block(i)
        out = self._block[self._rows, self._block_pos]
        self._block_pos += 1
        return out

    # ---- reset ---------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"reset options {sorted(options)}: this env takes none")
        N = self._N
        idx = np.flatnonzero(mask)
        single = self.single_env
        first = self._step_obs is None
        out = None if first else self._step_obs.copy()  # an autoreset: only these change
        for i in idx.tolist():
            self._rewind(i)
            # the single env's own reset on this sub-env's generator, its state copied here
            single._new_episode(self.rngs[i])
            self._types[i] = single._types
            self._gain[i] = single._gain_l
            self._fade[i] = single._fade_l
            if self._fsmc is not None:
                self._states[i] = single._states
            else:
                self._gm._s[i * N : (i + 1) * N] = single._gm._s
            self._dmin[i] = single._dmin
            self._obs_static[i, : 4 * N] = single._obs_static
            self._ref_time[i] = single.ref_time_s
            self._ref_energy[i] = single.ref_energy_j
            self._cut_j[i], self._rank_k[i] = single._cut_j, single._rank_k
            if not first:
                out[i] = single._obs()
                self._gamma[i], self._snr_d[i] = single._gamma, single._snr_d
            self._new_block(i)
        self._loss[idx] = self.model.initial_loss
        for arr in (self._round, self._time, self._energy, self._last_t):
            arr[idx] = 0
        for arr in (self._cut_sum, self._rank_sum, self._clip_sum):
            arr[idx] = 0
        if first:
            return self._obs(), {}
        return out, {}

    # ---- step ----------------------------------------------------------------------------
    def _step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        cfg, m = self.config, self.model
        cut_pos, rank_k, rule, shares = self._decode(actions)
        epoch = (self._round % m.interval == 0) | self._sl
        want_j = self._allowed[cut_pos]
        clip = self._clip_rows[(self._dmin * m.L + want_j) * m.K + rank_k]
        new_j, new_k = clip[:, 0], clip[:, 1]
        cut_clipped = epoch & (clip[:, 2] != 0)
        self._cut_j = np.where(epoch, new_j, self._cut_j)
        self._rank_k = np.where(epoch, new_k, self._rank_k)
        j, k = self._cut_j, self._rank_k
        if self._sl:
            aggregate = np.zeros(self.num_envs)
        else:
            aggregate = ((self._round + 1) % m.interval == 0).astype(float)
        gamma, snr_d = self._gamma, self._snr_d
        if self._discrete:
            shares = self._rule_shares(rule, j, k, aggregate, gamma, snr_d)
        rt, t_i, _, energy = self._round_costs(self._types, j, k, aggregate, shares, gamma, snr_d)
        e_total = energy.sum(-1)
        terminated = book_round(self, j, k, rt, t_i, e_total)
        truncated = ~terminated & (
            (self._time >= cfg.time_budget_s) | (self._round >= cfg.max_rounds)
        )
        reward = -(rt / self._ref_time + cfg.lambda_energy * e_total / self._ref_energy)
        cut = j + 1
        rank = self._ranks[k]
        self._cut_sum += cut
        self._rank_sum += rank
        self._clip_sum += cut_clipped
        infos = self._lean_infos(rt, e_total, cut, rank, terminated, cut_clipped)
        done = terminated | truncated
        if done.any():
            self._add_totals(infos, done)
        self._step_obs = self._obs()
        try:
            obs, infos = self._autoreset(self._step_obs, terminated, truncated, infos)
        finally:
            self._step_obs = None
        for key in _EPISODE_KEYS:  # only in final_info, as SyncVectorEnv reports them
            infos.pop(key, None)
            infos.pop("_" + key, None)
        return obs, reward, terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` masks: the single env's ``action_masks()`` of each."""
        return self._masks[self._dmin]

    # ---- internals -----------------------------------------------------------------------
    def _decode(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """Validate the batch (state unchanged on error); cut position, rank index,
        allocation rule (discrete) and shares (continuous)."""
        m, B = self.model, self.num_envs
        n_cuts = self.single_env.n_cuts
        if self._discrete:
            a = np.asarray(actions)
            if (
                a.shape != (B, 3)
                or not np.issubdtype(a.dtype, np.integer)
                or np.any(a < 0)
                or np.any(a >= self.single_action_space.nvec)
            ):
                raise ValueError(
                    f"actions={actions!r}: must be ({B}, 3) integers with 0 <= a < "
                    f"{self.single_action_space.nvec.tolist()} (cut index, rank index, rule)"
                )
            return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], None
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (B, *self.single_action_space.shape):
            raise ValueError(
                f"actions={actions!r}: must be ({B}, {self.single_action_space.shape[0]}) "
                "finite floats in [-1, 1]"
            )
        lo, hi = a.min(), a.max()
        if not (-1.0 <= lo and hi <= 1.0):  # also catches NaN
            if not np.all(np.isfinite(a)):
                raise ValueError(
                    f"actions={actions!r}: must be ({B}, {self.single_action_space.shape[0]}) "
                    "finite floats in [-1, 1]"
                )
            if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
                raise ValueError(f"actions={actions!r}: every entry must be in [-1, 1]")
            a = np.minimum(np.maximum(a, -1.0), 1.0)
        # Python's round() and np.rint both round half to even
        pos = np.rint((a[:, 0] + 1.0) * 0.5 * (n_cuts - 1)).astype(np.int64)
        k = np.rint((a[:, 1] + 1.0) * 0.5 * (m.K - 1)).astype(np.int64)
        z = self.config.share_logit_scale * a[:, 2:]
        w = np.exp(z - _row_max(z)[:, None])
        return pos, k, None, w / w.sum(axis=-1, keepdims=True)

    def _rule_shares(
        self,
        rule: np.ndarray,
        j: np.ndarray,
        k: np.ndarray,
        aggregate: np.ndarray,
        gamma: np.ndarray,
        snr_d: np.ndarray,
    ) -> np.ndarray:
        """Shares of the discrete allocation rules: equal, proportional to spectral
        efficiency, the exact min-max split (one batched solve over the sub-envs asking)."""
        m, N = self.model, self._N
        shares = np.full((self.num_envs, N), 1.0 / N)
        prop = rule == ALLOCATION_RULES.index("proportional")
        if prop.any():
            snr = gamma[prop] / (self.config.bandwidth_hz / N)
            se = 1.0 * spectral_efficiency(snr, m.band)
            shares[prop] = se / se.sum(-1, keepdims=True)
        mm = rule == ALLOCATION_RULES.index("minmax")
        if mm.any():
            base, up, down, _ = m.round_terms(
                self._types[mm], j[mm, None], k[mm, None], aggregate[mm, None]
            )
            _, sh = m.best_shares(base, up, down, gamma[mm], snr_d[mm])
            shares[mm] = sh
        return shares

    def _round_costs(
        self,
        types: np.ndarray,
        j: np.ndarray,
        k: np.ndarray,
        aggregate: Any,
        shares: Any,
        gamma: np.ndarray,
        snr_d: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(round time, per-device times, uplink airtimes, energies) of a batch of rounds."""
        m = self.model
        at = (types * m.L + j[:, None]) * m.K + k[:, None]  # flat (d, j, k) index
        base = self._base_flat.take(at)
        t_dev = self._dev_flat.take(at)
        bits = m.round_bits(j, k, aggregate)[:, None]
        sh = 1.0 if self._sl else shares
        t, t_up, _, r_up = chain_times(sh, base, bits, bits, gamma, snr_d, m.band)
        rt = t.sum(-1) if self._sl else _row_max(t)
        energy = device_energy_j(
            m.radio,
            rt[:, None],
            t_dev,
            t_up,
            r_up,
            m.active_power_w[types],
            m.idle_power_w[types],
        )
        return rt, t, t_up, energy

    def _advance_channel(self) -> None:
        draws = self._round_draws()
        if self._fsmc is not None:
            self._states = self._fsmc.step_uniform(self._states, draws)
            self._fade = self._fade_table[self._states]
        else:
            z = draws.transpose(1, 0, 2).reshape(2, -1)
            self._fade = self._gm.step(_Rows(z)).reshape(self.num_envs, self._N)

    def _obs(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Observations of every sub-env, or of ``rows`` only (the sub-envs just reset);
        caches this round's link parameters for the step."""
        cfg, m = self.config, self.model
        N = self._N
        sel: Any = slice(None) if rows is None else rows
        gamma, snr_d = m.link_params(self._gain[sel] * self._fade[sel])
        if rows is None:
            self._gamma, self._snr_d = gamma, snr_d
        else:
            self._gamma[rows], self._snr_d[rows] = gamma, snr_d
        obs = self._obs_static[sel].copy()  # device compute and memory columns, set at reset
        snr = 10.0 * np.log10(np.maximum(gamma / cfg.bandwidth_hz, 1e-30)) / 40.0
        obs[:, 0 : 4 * N : 4] = np.minimum(np.maximum(snr, -1.0), 1.0)
        scale = 4.0 * self._ref_time[sel, None]
        obs[:, 3 : 4 * N : 4] = np.minimum(np.maximum(self._last_t[sel] / scale, 0.0), 1.0)
        span = m.initial_loss - m.target_loss
        loss, rounds = self._loss[sel], self._round[sel]
        obs[:, 4 * N] = np.minimum(np.maximum((loss - m.target_loss) / span, 0.0), 1.0)
        left = (m.interval - rounds % m.interval) % m.interval
        obs[:, 4 * N + 1] = left / m.interval
        obs[:, 4 * N + 2] = np.minimum(self._time[sel] / cfg.time_budget_s, 1.0)
        obs[:, 4 * N + 3] = (self._cut_j[sel] + 1) / m.L
        obs[:, 4 * N + 4] = self._rank_k[sel] / (m.K - 1) if m.K > 1 else 0.0
        obs[:, 4 * N + 5] = (rounds % m.interval == 0) | self._sl
        return obs

    def _lean_infos(
        self,
        rt: np.ndarray,
        e_total: np.ndarray,
        cut: np.ndarray,
        rank: np.ndarray,
        terminated: np.ndarray,
        cut_clipped: np.ndarray,
    ) -> dict[str, Any]:
        B = self.num_envs
        every = np.ones(B, dtype=bool)
        vals = {
            "round_time_s": rt,
            "energy_J": e_total,
            "rounds": np.ones(B, dtype=np.int64),
            "cut": cut,
            "rank": rank.astype(np.int64),
            "loss": self._loss.copy(),
            "reached_target": terminated.copy(),
            "cut_clipped": cut_clipped,
        }
        infos: dict[str, Any] = {}
        for key, v in vals.items():
            infos[key], infos["_" + key] = v, every.copy()
        return infos

    def _add_totals(self, infos: dict[str, Any], done: np.ndarray) -> None:
        """The single env's ``episode_totals()`` of the sub-envs that ended."""
        n = np.maximum(self._round, 1)
        totals = {
            "episode_round_time_s": self._time.copy(),
            "episode_energy_J": self._energy.copy(),
            "episode_rounds": self._round.copy(),
            "episode_cut": self._cut_sum / n,
            "episode_rank": self._rank_sum / n,
            "episode_loss": self._loss.copy(),
            "episode_reached_target": self._loss <= self.model.target_loss + 1e-12,
            "episode_cut_clipped": self._clip_sum.copy(),
        }
        for key, v in totals.items():
            infos[key], infos["_" + key] = v, done.copy()
