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
round. A sub-env's reset draws with the single env's own ``_draw_episode`` on the sub-env's
generator; the rest of the reset (path gains, reference round, link tables) runs on arrays
over every sub-env that resets in the step. Each sub-env draws its fading rows in blocks of
``BLOCK_ROUNDS`` from its own generator, as the single env does (the same numbers in the
same order); at an episode end the generator is put back where the single env's would be
(state at the block start, then the rows actually used drawn again), so the next episode's
draws match too.

**Link tables.** With the FSMC channel a device's link quantities (:func:`link_rows`:
uplink SNR-bandwidth product, downlink SNR and spectral efficiency, observation entry) take
one of ``fsmc_states`` values per episode; they are tabulated per sub-env, device and state
at reset (the single env fills the same table lazily on floats), and a step gathers them.

**Few sub-envs.** Up to :func:`scalar_max_envs` sub-envs (6 with continuous actions, 64 with
discrete ones at 5 devices; times ``5 / n_devices``) the batch is not worth its numpy
overhead (measured: see :data:`SCALAR_MAX_ENVS`): the vector env then holds one single env
(``info="lean"``) per sub-env and steps them in turn (``_step_subs``), so
sub-env ``i`` IS the single env, drawing from ``self.rngs[i]`` (no second copy of the
dynamics); the batched state above is not built. The whole batch of actions is validated
before any sub-env moves (an invalid action raises with every sub-env unchanged), and the
infos, ``final_obs``/``final_info`` and ``action_masks()`` are laid out as on the batched
path. ``self.scalar`` says which path an instance takes; ``tests/test_split_fed_vector.py``
checks both against ``SyncVectorEnv``.

**Info.** Always the lean level (whatever ``config.info`` says): per step the keys of
``metadata["info_metrics"]``, and at an episode end the ``episode_<key>`` totals (in
``final_info``, as :class:`gymnasium.vector.SyncVectorEnv` over ``info="lean"`` single envs
reports them). ``action_masks()`` gives the ``(num_envs, n_actions)`` masks in discrete mode.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import numpy as np

from mei_envs import wireless
from mei_envs.envs.split_fed_alloc import (
    ALLOCATION_RULES,
    BLOCK_ROUNDS,
    SplitFedAllocConfig,
    SplitFedAllocEnv,
    _Rows,
    book_round,
    link_rows,
)
from mei_envs.split_fed import chain_times, device_energy_j, spectral_efficiency
from mei_envs.vector import MeiVectorEnv, VectorStep

__all__ = [
    "BLOCK_ROUNDS",
    "SCALAR_MAX_ENVS",
    "SCALAR_MAX_ENVS_DISCRETE",
    "SplitFedAllocVectorEnv",
    "scalar_max_envs",
]

_LEAN_KEYS = tuple(SplitFedAllocEnv.metadata["info_metrics"])
_EPISODE_KEYS = tuple(f"episode_{k}" for k in _LEAN_KEYS)
# The dtypes of the info arrays (the batched path's, and SyncVectorEnv's, which makes an
# array of each key's first value's type): the per-sub-env path casts its values to them.
_LEAN_DTYPES = {
    "round_time_s": np.float64,
    "energy_J": np.float64,
    "rounds": np.int64,
    "cut": np.int64,
    "rank": np.int64,
    "loss": np.float64,
    "reached_target": np.bool_,
    "cut_clipped": np.bool_,
    "episode_round_time_s": np.float64,
    "episode_energy_J": np.float64,
    "episode_rounds": np.int64,
    "episode_cut": np.float64,
    "episode_rank": np.float64,
    "episode_loss": np.float64,
    "episode_reached_target": np.bool_,
    "episode_cut_clipped": np.int64,
}
if set(_LEAN_DTYPES) != {*_LEAN_KEYS, *_EPISODE_KEYS}:  # pragma: no cover - a guard for editors
    raise ImportError(f"SplitFedAllocVectorEnv: update _LEAN_DTYPES for {_LEAN_KEYS}")


def _columns(keys: tuple[str, ...]) -> tuple[Any, tuple[tuple[str, int, Any], ...]]:
    """A getter of ``keys``' values from an info, and per key (key, its column, the dtype to
    cast the column to: None for float64)."""
    cast = tuple(
        (k, c, None if _LEAN_DTYPES[k] is np.float64 else _LEAN_DTYPES[k])
        for c, k in enumerate(keys)
    )
    return operator.itemgetter(*keys), cast


_LEAN_COLUMNS = _columns(_LEAN_KEYS)
_EPISODE_COLUMNS = _columns(_EPISODE_KEYS)
_MASK_KEYS = {k: "_" + k for k in (*_LEAN_KEYS, *_EPISODE_KEYS)}


def _stack_infos(infos: list[dict[str, Any]], columns: tuple) -> dict[str, np.ndarray]:
    """The values of single-env ``infos`` as one array per key (rows of one float64 array,
    the integer and boolean keys cast: every value is a float, an int far below 2**53 or a
    bool, so float64 holds each exactly)."""
    get, cast = columns
    table = np.array([get(i) for i in infos], dtype=np.float64).T.copy()
    return {k: table[c] if dtype is None else table[c].astype(dtype) for k, c, dtype in cast}


_NO_TOTALS = dict.fromkeys(_EPISODE_KEYS, 0)  # where a sub-env's episode goes on


#: Up to this many sub-envs (continuous actions, 5 devices) the vector env holds one single
#: env (``info="lean"``) per sub-env and steps them in turn instead of the batched numpy
#: path: a batched step costs ~300-400 us of numpy calls whatever the batch's size, a single
#: env's step ~30-60 us at 5 devices. CPU us per env-step, per-sub-env / batched, one
#: process (session 10, ``python benchmarks/split_fed_speed.py paths 7``; benchmarks/README.md
#: has every run): n = 1 98 / 417, 4 67 / 115, 8 57 / 61 (even: 0.94-1.08 over three
#: runs), 16 71 / 34; a finer run (``paths 11 continuous 4,6,8,10,12``): 6 58 / 65.
#: Callgrind instructions per env-step put the batched path ahead at 8 (136k against 166k)
#: and behind at 6 (178k against 171k) and 4 (260k against 177k), so the last size where
#: the per-sub-env path wins on both counts is 6. See :func:`scalar_max_envs` for other
#: device counts.
SCALAR_MAX_ENVS = 6
#: The same with discrete actions: the min-max rule's batched solve costs ~1-3 ms a call,
#: so the single envs' float solves stay cheaper up to many more sub-envs. Uniform random
#: choices (a third min-max): n = 16 162 / 636, 64 180 / 308, 128 181 / 186, 256 165 / 124;
#: every action min-max: 64 275 / 291; every action the equal split: 8 50 / 40, 64 47 / 6
#: (the per-sub-env path never costs more than single envs do, the batched one may).
SCALAR_MAX_ENVS_DISCRETE = 64


def scalar_max_envs(cfg: SplitFedAllocConfig) -> int:
    """The most sub-envs :class:`SplitFedAllocVectorEnv` steps as one single env each for
    ``cfg`` (more take the batched path): the mode's threshold at 5 devices
    (:data:`SCALAR_MAX_ENVS`, :data:`SCALAR_MAX_ENVS_DISCRETE`) times ``5 / n_devices``,
    rounded down: a single env's step costs about in proportion to the devices, the batched
    step's overhead does not. Measured crossovers (``split_fed_speed.py paths``): 5 devices
    continuous ~7-8 sub-envs, discrete 64-128; 10 devices continuous ~5, discrete ~40; 50
    devices continuous ~1.4, discrete ~5 (so 6, 64; 3, 32; 0, 6 here)."""
    limit = SCALAR_MAX_ENVS_DISCRETE if cfg.action_mode == "discrete" else SCALAR_MAX_ENVS
    return limit * 5 // cfg.n_devices


def _row_max(a: np.ndarray) -> np.ndarray:
    """``a.max(-1)`` of a 2-D array (exact either way); for a few columns one ``maximum``
    per column, which numpy runs faster than a reduction over a short last axis."""
    if a.shape[1] > 16:
        return a.max(-1)
    out = a[:, 0].copy()
    for c in range(1, a.shape[1]):
        np.maximum(out, a[:, c], out=out)
    return out


def _row_sum(a: np.ndarray) -> np.ndarray:
    """``a.sum(-1)`` of a 2-D array, the same bits: below 8 columns numpy's pairwise sum of a
    row is the sequential sum (:func:`mei_envs.split_fed.pairwise_sum`), here one ``add``
    per column, which numpy runs faster than a reduction over a short last axis."""
    if a.shape[1] >= 8:
        return a.sum(-1)
    out = a[:, 0].copy()
    for c in range(1, a.shape[1]):
        out += a[:, c]
    return out


def _with_masks(vals: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Infos of ``n`` sub-envs that all report ``vals``: each key with its ``_key`` mask (all
    True; rows of one new array)."""
    every = np.empty((len(vals), n), dtype=bool)
    every.fill(True)
    infos: dict[str, Any] = {}
    masks = _MASK_KEYS
    for key, v, m in zip(vals, vals.values(), every):  # noqa: B905 (the same length)
        infos[key] = v
        infos[masks[key]] = m
    return infos


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
        self._masks = np.stack(single._mask_by_type)  # (D, n_actions)
        self._dmin = np.zeros(B, dtype=np.int64)  # least-memory device type per sub-env
        self._step_obs: np.ndarray | None = None
        self._obs_shape = (B, *single.observation_space.shape)
        # Few sub-envs: one single env (lean info) per sub-env, stepped in turn (see
        # scalar_max_envs); the batched state below is then not built.
        self.scalar = B <= scalar_max_envs(cfg)
        lean = dataclasses.replace(cfg, info="lean")
        self.subs = [SplitFedAllocEnv(lean) for _ in range(B)] if self.scalar else []
        if self.scalar:
            return
        D, L, K, interval = len(cfg.device_types), m.L, m.K, m.interval
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
        self._ref_cut_j, self._ref_rank_k = single._ref_cut_j, single._ref_rank_k
        self._index_scale = np.array([single.n_cuts - 1, K - 1], dtype=float)
        # (D, L, K) cost tables, raveled for one flat-index gather per step
        self._base_flat = np.ascontiguousarray(m.base_table).ravel()
        self._dev_flat = np.ascontiguousarray(m.dev_train_s).ravel()
        # bits of a round (SplitFedModel.round_bits) per (j, k) and round phase
        self._smashed_jk = np.repeat(m.smashed_bits, K)
        self._adapter_jk = np.ascontiguousarray(m.adapter_bits).ravel()
        phases = np.arange(interval)
        self._aggregate_by_phase = (
            np.zeros(interval) if self._sl else ((phases + 1) % interval == 0).astype(float)
        )
        self._ranks = m.ranks
        self._tflops_obs = np.asarray(single._tflops_obs)
        self._headroom = np.asarray(single._headroom_by_type)
        # observation entries 4N+1 .. 4N+5 that depend on the round phase, cut and rank only
        self._left_by_phase = ((interval - phases) % interval) / interval
        self._cut_obs = (np.arange(L) + 1) / L
        self._rank_obs = np.arange(K) / (K - 1) if K > 1 else np.zeros(K)
        self._fsmc = single.channel.fsmc if single._gm is None else None
        if self._fsmc is not None:
            S = self._fsmc.n_states
            self._fade_table = np.asarray(single._fade_list)
            self._cum_pi = np.asarray(single._cum_pi)
            self._draw_shape: tuple[int, ...] = (N,)
            # link_rows of (sub-env, device, state), at flat index (i * N + d) * S + s
            self._link_table = np.zeros((4, B * N * S))
            self._key_base = np.arange(B * N).reshape(B, N) * S
        else:
            self._gm = wireless.GaussMarkovFading(
                single.channel.rho, k_factor=cfg.k_factor, n_links=B * N
            )
            self._gm._s = np.zeros(B * N, dtype=complex)  # set per sub-env at its reset
            self._draw_shape = (2, N)
        # sub-env i's block of draws at rows i * BLOCK_ROUNDS + round in block
        self._block = np.zeros((B * BLOCK_ROUNDS, *self._draw_shape))
        self._block_start = np.arange(B) * BLOCK_ROUNDS
        self._block_pos = np.zeros(B, dtype=np.int64)
        self._block_state: list[Any] = [None] * B
        self._block_rng: list[Any] = [None] * B
        # per-sub-env state
        self._types = np.zeros((B, N), dtype=np.int64)
        self._type_at = np.zeros((B, N), dtype=np.int64)  # types * L * K (flat table offset)
        self._active_w = np.zeros((B, N))
        self._idle_w = np.zeros((B, N))
        self._gain = np.ones((B, N))
        self._fade = np.ones((B, N))  # Gauss-Markov fading (FSMC: self._states)
        self._states = np.zeros((B, N), dtype=np.intp)
        self._links = np.zeros((4, B, N))  # this round's link_rows
        self._ref_time = np.ones(B)
        self._obs_scale = np.ones((B, 1))
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
        self._obs_static = np.zeros((B, 4 * N + 6), dtype=np.float32)

    @property
    def _gamma(self) -> np.ndarray:
        return self._links[0]

    @property
    def _snr_d(self) -> np.ndarray:
        return self._links[1]

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
        self._block[i * BLOCK_ROUNDS : (i + 1) * BLOCK_ROUNDS] = self._draw(rng, BLOCK_ROUNDS)
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
        pos = self._block_pos
        if pos.max() >= BLOCK_ROUNDS:
            for i in np.flatnonzero(pos >= BLOCK_ROUNDS).tolist():
                self._new_block(i)
        out = self._block.take(self._block_start + pos, axis=0)
        pos += 1
        return out

    # ---- reset ---------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"reset options {sorted(options)}: this env takes none")
        if self.scalar:
            return self._reset_subs(mask)
        idx = np.flatnonzero(mask)
        single = self.single_env
        draws = []
        for i in idx.tolist():
            self._rewind(i)
            draws.append(single._draw_episode(self.rngs[i]))  # the single env's draws
            self._new_block(i)
        self._start(idx, *(np.stack(v) for v in zip(*draws, strict=True)))
        if self._step_obs is None:  # reset(): every sub-env
            return self._obs(), {}
        out = self._step_obs.copy()  # an autoreset: only these change
        out[idx] = self._obs(idx)
        return out, {}

    def _start(
        self,
        idx: np.ndarray,
        types: np.ndarray,
        dist: np.ndarray,
        shadow: np.ndarray,
        first: np.ndarray,
    ) -> None:
        """The single env's ``_new_episode`` after its draws, on the rows ``idx`` at once."""
        m, N = self.model, self._N
        cfg = self.config
        gain = m.path_gain(dist, shadow)  # = SplitFedModel.path_gain_list's floats
        self._types[idx] = types
        self._type_at[idx] = types * (m.L * m.K)
        self._active_w[idx] = m.active_power_w[types]
        self._idle_w[idx] = m.idle_power_w[types]
        self._gain[idx] = gain
        if self._fsmc is not None:
            states = np.searchsorted(self._cum_pi, first, side="right")  # bisect_right
            self._states[idx] = states
            x = gain[:, :, None] * self._fade_table  # (rows, N, S)
            keys = (self._key_base[idx][:, :, None] + np.arange(x.shape[2])).ravel()
            self._link_table[:, keys] = np.stack(link_rows(m, x, cfg.bandwidth_hz)).reshape(4, -1)
            self._links[:, idx] = self._link_table[:, self._key_base[idx] + states]
        else:
            single = self.single_env
            for r, i in enumerate(idx.tolist()):
                fade = single._gm.reset(_Rows(first[r]))  # the single env's reset
                self._gm._s[i * N : (i + 1) * N] = single._gm._s
                self._fade[i] = fade
            self._links[:, idx] = np.stack(link_rows(m, gain * self._fade[idx], cfg.bandwidth_hz))
        # the least-memory device (the first, as min() picks) and its clipping
        usable = m.usable_memory_bytes[types]
        dmin = types[np.arange(len(idx)), usable.argmin(axis=1)]
        self._dmin[idx] = dmin
        self._obs_static[idx, 1 : 4 * N : 4] = self._tflops_obs[types]
        self._obs_static[idx, 2 : 4 * N : 4] = self._headroom[types]
        ref_k = np.full(len(idx), self._ref_rank_k)
        ref_j = self._clip_rows[(dmin * m.L + self._ref_cut_j) * m.K + ref_k, 0]
        # the reference round (middle cut and rank, equal split) on mean channels: the
        # single env's, on floats (a few rows per step reset)
        ref = self.single_env._reference_round
        rt, e = zip(*map(ref, types.tolist(), gain.tolist(), ref_j.tolist()), strict=True)
        self._ref_time[idx] = rt
        self._obs_scale[idx, 0] = np.multiply(4.0, rt)
        self._ref_energy[idx] = e
        self._cut_j[idx], self._rank_k[idx] = ref_j, ref_k
        self._loss[idx] = m.initial_loss
        for arr in (self._round, self._time, self._energy, self._last_t):
            arr[idx] = 0
        for arr in (self._cut_sum, self._rank_sum, self._clip_sum):
            arr[idx] = 0

    # ---- step ----------------------------------------------------------------------------
    def _step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self.scalar:
            return self._step_subs(self._checked(actions))
        cfg, m = self.config, self.model
        cut_pos, rank_k, rule, shares = self._decode(actions)
        phase = self._round % m.interval  # sl: interval 1, every round a decision epoch
        epoch = phase == 0
        clip = self._clip_rows[(self._dmin * m.L + self._allowed[cut_pos]) * m.K + rank_k]
        if epoch.all():
            j, k = clip[:, 0], clip[:, 1]
            cut_clipped = clip[:, 2] != 0
        else:
            j = np.where(epoch, clip[:, 0], self._cut_j)
            k = np.where(epoch, clip[:, 1], self._rank_k)
            cut_clipped = epoch & (clip[:, 2] != 0)
        self._cut_j, self._rank_k = j, k
        aggregate = self._aggregate_by_phase[phase]
        gamma, snr_d, eff_d, _ = self._links
        if self._discrete:
            shares = self._rule_shares(rule, j, k, aggregate, gamma, snr_d)
        rt, t_i, _, energy = self._round_costs(None, j, k, aggregate, shares, gamma, eff_d)
        e_total = _row_sum(energy)
        terminated = book_round(self, j, k, rt, t_i, e_total)
        truncated = (self._time >= cfg.time_budget_s) | (self._round >= cfg.max_rounds)
        truncated &= ~terminated
        reward = rt / self._ref_time
        reward += cfg.lambda_energy * e_total / self._ref_energy
        np.negative(reward, out=reward)
        cut = j + 1
        rank = self._ranks[k]
        self._cut_sum += cut
        self._rank_sum += rank
        self._clip_sum += cut_clipped
        infos = self._lean_infos(rt, e_total, cut, rank, terminated, cut_clipped)
        done = terminated | truncated
        self._step_obs = self._obs()
        if not done.any():
            obs, self._step_obs = self._step_obs, None
            return obs, reward, terminated, truncated, infos
        self._add_totals(infos, done)
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

    # ---- few sub-envs: one single env each -----------------------------------------------
    def _reset_subs(self, mask: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`_reset_envs` on the single envs: sub-env ``i`` draws its episode from
        ``self.rngs[i]`` in the single env's own reset (which first rewinds the generator
        of its fading block, as a reset of the single env does)."""
        obs = self._step_obs  # an autoreset: the others' observations stay
        self._step_obs = None
        if obs is None:  # reset(): every sub-env
            obs = np.empty(self._obs_shape, np.float32)
        subs, dmin = self.subs, self._dmin
        for i in np.flatnonzero(mask).tolist():
            sub = subs[i]
            sub._np_random = self.rngs[i]
            obs[i] = sub._reset(None)[0]
            dmin[i] = sub._dmin
        return obs, {}

    def _step_subs(self, actions: np.ndarray) -> VectorStep:
        """:meth:`_step` on the single envs (``actions`` validated by :meth:`_checked`, so
        no sub-env raises after another moved): step each in turn, lay the infos out as
        the batched path does, and reset those that ended (SAME_STEP)."""
        n = self.num_envs
        obs = np.empty(self._obs_shape, dtype=np.float32)
        rew, term, trunc, infos_list = [], [], [], []
        for i, (sub, a) in enumerate(zip(self.subs, actions, strict=True)):
            obs[i], r, te, tr, info = sub.step(a)
            rew.append(r)
            term.append(te)
            trunc.append(tr)
            infos_list.append(info)
        infos = _with_masks(_stack_infos(infos_list, _LEAN_COLUMNS), n)
        terminated, truncated = np.array(term), np.array(trunc)
        reward = np.array(rew)
        if not (any(term) or any(trunc)):
            return obs, reward, terminated, truncated, infos
        done = terminated | truncated
        # the episode totals of those that ended (zeros elsewhere, where the batched path
        # has running totals: masked out either way)
        ended = [info if d else _NO_TOTALS for info, d in zip(infos_list, done, strict=True)]
        for key, v in _stack_infos(ended, _EPISODE_COLUMNS).items():
            infos[key], infos[_MASK_KEYS[key]] = v, done.copy()
        self._step_obs = obs
        try:
            obs, infos = self._autoreset(obs, terminated, truncated, infos)
        finally:
            self._step_obs = None
        for key in _EPISODE_KEYS:  # only in final_info, as SyncVectorEnv reports them
            del infos[key], infos["_" + key]
        return obs, reward, terminated, truncated, infos

    # ---- internals -----------------------------------------------------------------------
    def _checked(self, actions: Any) -> np.ndarray:
        """The batch of actions validated (a ValueError naming them; no sub-env moves):
        discrete, the ``(num_envs, 3)`` integer array; continuous, the ``(num_envs, 2 + N)``
        entries as float64, entries within 1e-6 outside [-1, 1] clipped (as the single env
        clips them). On the per-sub-env path a batch valid as it is comes back as given
        (each single env takes its row's floats exactly)."""
        B = self.num_envs
        a = np.asarray(actions)
        if self.scalar and self._checked_few(a):
            return a
        if self._discrete:
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
            return a
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
        return a

    def _checked_few(self, a: np.ndarray) -> bool:
        """Whether the batch ``a`` is valid as it is (False: :meth:`_checked`'s numpy tests
        decide), tested on Python numbers: for a few sub-envs numpy's reductions cost more
        than the work. Continuous: the single env's own fast test (float entries in [-1, 1],
        no NaN: the one float unequal to itself, carried by the sum)."""
        if self._discrete:
            if a.shape != (self.num_envs, 3) or a.dtype.kind not in "iu":
                return False
            n_cuts, K = self.single_action_space.nvec[:2].tolist()
            return all(0 <= c < n_cuts and 0 <= k < K and 0 <= r < 3 for c, k, r in a.tolist())
        if a.shape != (self.num_envs, *self.single_action_space.shape) or a.dtype.kind != "f":
            return False
        flat = a.ravel().tolist()
        return -1.0 <= min(flat) and max(flat) <= 1.0 and (t := sum(flat)) == t

    def _decode(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """Validate the batch (state unchanged on error); cut position, rank index,
        allocation rule (discrete) and shares (continuous)."""
        a = self._checked(actions)
        if self._discrete:
            return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], None
        # Python's round() and np.rint both round half to even; cut and rank columns at once
        pos_k = a[:, :2] + 1.0
        pos_k *= 0.5
        pos_k *= self._index_scale  # (n_cuts - 1, K - 1)
        pos_k = np.rint(pos_k, out=pos_k).astype(np.int64)
        pos, k = pos_k[:, 0], pos_k[:, 1]
        z = self.config.share_logit_scale * a[:, 2:]
        z -= _row_max(z)[:, None]
        w = np.exp(z, out=z)
        w /= _row_sum(w)[:, None]
        return pos, k, None, w

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
        rows: np.ndarray | None,
        j: np.ndarray,
        k: np.ndarray,
        aggregate: Any,
        shares: Any,
        gamma: np.ndarray,
        down_eff: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(round time, per-device times, uplink airtimes, energies) of a batch of rounds of
        the sub-envs ``rows`` (None: all)."""
        m = self.model
        sel: Any = slice(None) if rows is None else rows
        jk = j * m.K + k
        at = self._type_at[sel] + jk[:, None]  # flat (d, j, k) index
        base = self._base_flat.take(at)
        t_dev = self._dev_flat.take(at)
        # SplitFedModel.round_bits: smashed (+ adapters in an exchange round, every sl turn)
        adapter = self._adapter_jk.take(jk)
        if not self._sl:
            adapter = aggregate * adapter
        bits = (self._smashed_jk.take(jk) + adapter)[:, None]
        sh = 1.0 if self._sl else shares
        t, t_up, _, r_up = chain_times(sh, base, bits, bits, gamma, None, m.band, down_eff=down_eff)
        rt = t.sum(-1) if self._sl else _row_max(t)
        energy = device_energy_j(
            m.radio, rt[:, None], t_dev, t_up, r_up, self._active_w[sel], self._idle_w[sel]
        )
        return rt, t, t_up, energy

    def _advance_channel(self) -> None:
        draws = self._round_draws()
        if self._fsmc is not None:
            self._states = self._fsmc.step_uniform(self._states, draws)
            self._links = self._link_table.take(self._key_base + self._states, axis=1)
        else:
            z = draws.transpose(1, 0, 2).reshape(2, -1)
            self._fade = self._gm.step(_Rows(z)).reshape(self.num_envs, self._N)
            self._links = np.stack(
                link_rows(self.model, self._gain * self._fade, self.config.bandwidth_hz)
            )

    def _obs(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Observations of every sub-env, or of ``rows`` only (the sub-envs just reset)."""
        cfg, m = self.config, self.model
        N = self._N
        sel: Any = slice(None) if rows is None else rows
        # a new array with the device compute and memory columns set at reset
        obs = self._obs_static.copy() if rows is None else self._obs_static[rows]
        obs[:, 0 : 4 * N : 4] = self._links[3][sel]
        # last round times / (4 ref round time), at most 1 (the times are >= 0)
        obs[:, 3 : 4 * N : 4] = np.minimum(self._last_t[sel] / self._obs_scale[sel], 1.0)
        x = (self._loss[sel] - m.target_loss) / (m.initial_loss - m.target_loss)
        obs[:, 4 * N] = np.minimum(np.maximum(x, 0.0), 1.0)
        phase = self._round[sel] % m.interval
        obs[:, 4 * N + 1] = self._left_by_phase[phase]
        obs[:, 4 * N + 2] = np.minimum(self._time[sel] / cfg.time_budget_s, 1.0)
        obs[:, 4 * N + 3] = self._cut_obs[self._cut_j[sel]]
        obs[:, 4 * N + 4] = self._rank_obs[self._rank_k[sel]]
        obs[:, 4 * N + 5] = phase == 0
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
        return _with_masks(vals, B)

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
