"""Hidden-state upload in split LLM inference with an on-device early exit.

The domain model (:class:`EarlyExitUploadModel`: cost tables, the per-token cost function
and the exogenous exit/channel processes) is separate from the Gymnasium interface
(:class:`EarlyExitUploadEnv`), so the dynamic-programming oracle in ``baselines`` calls the
same cost function as the environment instead of a copy of its formulas.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
from typing import Any, ClassVar, NamedTuple

import numpy as np
from gymnasium import spaces

from mei_envs import hardware, radio, wireless
from mei_envs.checks import check_discrete_action
from mei_envs.config import ConfigError
from mei_envs.envs.base import MeiEnv
from mei_envs.llm import catalog, costs

CHANNEL_MODES = wireless.CHANNEL_MODES
INITIAL_RADIO = ("idle", "connected")
INFO_LEVELS = ("full", "lean")


@dataclasses.dataclass(frozen=True)
class EarlyExitUploadConfig(wireless.UplinkChannelConfig):
    """Configuration of :class:`EarlyExitUploadEnv`; every default names its source.

    Named scenario presets (``gym.make(id, preset="vehicular")``; explicit values apply on
    top): see ``PRESETS`` and ``experiments/figures/early_exit_presets.md`` for how far the
    best tuned heuristic is from the DP oracle in each.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # A NLOS user near the edge of a TR 38.901 UMa cell (ISD 500 m), 3 km/h, 64 tokens.
        "default": {},
        # Beyond the nominal cell radius (289 m): mean SNR 1.9 dB over 1 MHz.
        "pedestrian_cell_edge": {"distance_m": 400.0},
        # 60 km/h (TR 38.901 UMa vehicles: 30-120 km/h): the channel decorrelates every
        # token step (Jakes rho = -0.10 at 3.5 GHz), so the current SNR says little ahead.
        "vehicular": {"speed_mps": 16.67},
        # Energy weighs 8x (a phone on battery saver).
        "energy_first_phone": {"lambda_energy": 8.0},
        # Exits come in long runs (lag-1 correlation 0.95: mean exit run ~100 tokens).
        "bursty_exits": {"exit_correlation": 0.95},
        # Short chat replies (16 tokens) on an energy-conscious phone (lambda 4).
        "short_replies": {"tokens": 16, "lambda_energy": 4.0},
        # Short replies with bursty exits on a battery-saving phone.
        "bursty_short_replies": {"tokens": 16, "lambda_energy": 8.0, "exit_correlation": 0.95},
        # The LTE radio of Huang et al. 2012: 11.6 s tail, 260 ms promotion.
        "lte_phone": {"radio_profile": "lte_huang2012"},
    }

    preset: str = "default"

    # --- split LLM (cost tables: mei_envs.llm) ---
    model: str = "tinyllama-1.1b"  # Llama-class 22-layer model (REFERENCE.md 3), or a JSON path
    cut_layer: int = 6  # device runs blocks [0, 6): ~1/4 depth, as LayerSkip's exit at 8/32
    device: str = "snapdragon_8_gen3"  # phone SoC (mei_envs/data/hardware.csv)
    server: str = "l4"  # edge GPU (mei_envs/data/hardware.csv)
    device_weight_precision: str = "fp16"  # fp16 GPU engines (e.g. Transformer-Lite, MLC)
    server_weight_precision: str = "fp16"
    hidden_precision: str = "fp16"  # precision of an uploaded hidden state
    kv_precision: str = "fp16"
    tokens: int = 64  # tokens generated per episode
    prompt_tokens: int = 128  # context already in both KV caches at the start
    # --- early-exit process (calibration: see the class docstring) ---
    exit_prob: float = 0.79  # LayerSkip Llama-2-7B exit at layer 8, CNN/DM greedy: 79%
    exit_correlation: float = 0.8  # lag-1 correlation of exit indicators: ASSUMPTION
    exit_threshold: float = 0.8  # confidence threshold (CE-CoLLM uses 0.8/0.9/1.0)
    backlog_limit: int = 16  # hidden states the device may hold before a forced upload
    # --- uplink channel: the fields of mei_envs.wireless.UplinkChannelConfig, plus ---
    snr_history: int = 4  # SNRs observed: this token step and the previous ones
    # --- UE radio power (mei_envs.radio): a named profile, default "nr_drx" (3GPP TS 38.321
    # DRX with a 0.1 s inactivity tail, TR 38.840 relative sleep power, Huang et al. 2012
    # transmit line); "lte_huang2012" is LTE as Huang et al. measured it (11.576 s tail,
    # 260 ms promotion). A field set here overrides the profile's value; None keeps it. ---
    radio_profile: str = "nr_drx"
    alpha_u_w_per_mbps: float | None = None  # [W/Mbps] power slope in the uplink rate
    beta_w: float | None = None  # [W] transmit power at zero rate
    tail_s: float | None = None  # [s] high-power tail after a burst
    tail_power_w: float | None = None  # [W]
    sleep_power_w: float | None = None  # [W] DRX sleep / RRC idle
    wake_s: float | None = None  # [s] leaving sleep
    wake_power_w: float | None = None  # [W]
    initial_radio: str = "idle"  # radio state at reset: "idle" (sleeping) or "connected"
    # --- decision and reward ---
    upload_fractions: tuple[float, ...] = (0.0, 1.0)  # action i uploads this share of backlog
    lambda_energy: float = 1.0  # weight of energy against latency in the reward
    flush_at_end: bool = True  # upload the final backlog after the last token (energy only)
    # --- what `info` carries (see the env docstring): "full" (every key, the default) or
    # "lean" (the metadata's info_metrics per step, episode totals at the end) ---
    info: str = "full"

    def validate(self) -> None:
        name = type(self).__name__
        self._check_choice("preset", self.PRESETS)
        if self.model not in catalog.list_models() and not (
            self.model.endswith(".json") and os.path.isfile(self.model)
        ):
            raise ConfigError(
                f"{name}.model={self.model!r}: unknown; use a catalog model "
                f"{catalog.list_models()} or the path of an architecture JSON file"
            )
        try:
            n_layers = catalog.get_architecture(self.model).n_layers
        except ValueError as exc:
            raise ConfigError(f"{name}.model={self.model!r}: {exc}") from exc
        self._check_range("cut_layer", 1, n_layers - 1, integer=True)
        for field in ("device", "server"):
            if getattr(self, field) not in hardware.list_hardware():
                raise ConfigError(
                    f"{name}.{field}={getattr(self, field)!r}: unknown; "
                    f"known hardware: {hardware.list_hardware()}"
                )
        for field in (
            "device_weight_precision",
            "server_weight_precision",
            "hidden_precision",
            "kv_precision",
        ):
            self._check_choice(field, costs.PRECISION_BITS)
        self._check_range("tokens", 1, 4096, integer=True)
        self._check_range("prompt_tokens", 0, 32768, integer=True)
        self._check_range("exit_prob", 0.0, 1.0, lo_open=True, hi_open=True)
        self._check_range("exit_correlation", 0.0, 1.0, hi_open=True)
        self._check_range("exit_threshold", 0.0, 1.0, lo_open=True, hi_open=True)
        self._check_range("backlog_limit", 1, 1024, integer=True)
        self.validate_uplink()
        self._check_range("snr_history", 1, 64, integer=True)
        # UE radio power (mei_envs.radio): W, W/Mbps and s, within physical ranges.
        self._check_choice("radio_profile", radio.list_profiles())
        limits = {"tail_s": 60.0, "wake_s": 10.0}  # RRC inactivity timers are <= ~60 s
        for field in radio.POWER_FIELDS:
            if getattr(self, field) is not None:
                self._check_range(field, 0.0, limits.get(field, 10.0))
        self._check_range("lambda_energy", 0.0, 1e6)
        self._check_choice("initial_radio", INITIAL_RADIO)
        self._check_choice("info", INFO_LEVELS)
        fr = self.upload_fractions
        if len(fr) < 2 or any(not (0.0 <= f <= 1.0) for f in fr) or len(set(fr)) != len(fr):
            raise ConfigError(
                f"{name}.upload_fractions={list(fr)!r}: must be >= 2 distinct values in [0, 1]"
            )
        if 0.0 not in fr or 1.0 not in fr:
            raise ConfigError(
                f"{name}.upload_fractions={list(fr)!r}: must contain 0.0 (wait) and 1.0 "
                "(upload the whole backlog)"
            )
        if self.exit_correlation > 0 and min(self.exit_prob, 1 - self.exit_prob) == 0:
            raise ConfigError(f"{name}.exit_prob={self.exit_prob!r}: must be in (0, 1)")


def exit_transition_matrix(exit_prob: float, correlation: float) -> np.ndarray:
    """Two-state Markov chain of exit indicators with stationary P(exit) and lag-1 correlation.

    ``P[e, e']``: state 1 = the token exits. For a stationary binary chain the lag-1
    correlation equals ``P[1,1] - P[0,1]``, so ``P[1,1] = p + (1-p) rho`` and
    ``P[0,1] = p (1 - rho)``.
    """
    p, rho = float(exit_prob), float(correlation)
    p11 = p + (1.0 - p) * rho
    p01 = p * (1.0 - rho)
    return np.array([[1.0 - p01, p01], [1.0 - p11, p11]])


def snr_observation(snr_linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SNR [dB] (floored at -300 dB) and its observation: dB / 40 clipped to [-1, 1], float32."""
    snr_db = 10.0 * np.log10(np.maximum(snr_linear, 1e-30))
    return snr_db, np.clip(snr_db / 40.0, -1.0, 1.0).astype(np.float32)


class Episode(NamedTuple):
    """An episode's exogenous path (all drawn at reset), as Python lists: per token the exit
    indicator and exit-head confidence; per channel slot (the ``snr_history - 1`` before
    the episode, then one per token) the FSMC state, SNR [dB], its observation and the
    link rate [bit/s]."""

    exits: list[int]
    states: list[int]
    snr_db: list[float]
    snr_obs: list[float]
    rates: list[float]
    conf: list[float]


class EarlyExitUploadModel:
    """Cost tables and per-token cost of one scenario (no Gymnasium, no randomness).

    ``token_cost`` is written with arithmetic only, so it evaluates Python scalars in the
    environment's step and broadcast numpy arrays in the dynamic program alike.
    """

    def __init__(self, cfg: EarlyExitUploadConfig) -> None:
        self.cfg = cfg
        arch = catalog.get_architecture(cfg.model)
        self.arch = arch
        dev = hardware.get_hardware(cfg.device)
        srv = hardware.get_hardware(cfg.server)
        K, P, c, L = cfg.tokens, cfg.prompt_tokens, cfg.cut_layer, arch.n_layers
        self.K, self.limit = K, cfg.backlog_limit

        # Device: blocks [0, c) + the exit head (an LM head on the layer-c hidden state) for
        # one token at context P + k (KV cache of the previous tokens).
        cached = P + np.arange(K)
        self.t_dev_s = self._time_layers(dev, (0, c), 1, cached, cfg.device_weight_precision)
        self.device_energy_j = np.asarray(hardware.energy_j(dev, self.t_dev_s), float)

        # Server catch-up when token k does not exit and n hidden states (backlog + its
        # own) arrive: blocks [c, L) for n new tokens after P + k + 1 - n cached ones, plus
        # the LM head for the token itself.
        n = np.arange(self.limit + 2)[None, :]
        k = np.arange(K)[:, None]
        cached_srv = np.maximum(P + k + 1 - n, 0)
        n_eff = np.maximum(n, 1)
        self.t_srv_s = self._time_layers(
            srv, (c, L), n_eff, cached_srv, cfg.server_weight_precision
        )
        self.state_bits = 8.0 * float(costs.hidden_state_bytes(arch, 1, cfg.hidden_precision))

        # UE radio power: the named profile with the config's overrides.
        self.radio = radio.resolve(
            cfg.radio_profile, **{f: getattr(cfg, f) for f in radio.POWER_FIELDS}
        )
        # Radio tail counted in token steps of the nominal (first-token) device time.
        self.t_nominal_s = float(self.t_dev_s[0])
        self.tail_steps = max(1, math.ceil(self.radio.tail_s / self.t_nominal_s - 1e-12))

        # Channel: one block per nominal token step.
        self.channel = wireless.build_uplink(cfg, self.t_nominal_s)
        self.mean_snr = self.channel.mean_snr
        self.rho = self.channel.rho
        self.fsmc = self.channel.fsmc
        self.state_rate_bps = self.channel.state_rate_bps
        self.exit_P = exit_transition_matrix(cfg.exit_prob, cfg.exit_correlation)
        self.exit_stationary = np.array([1.0 - cfg.exit_prob, cfg.exit_prob])
        self._p_exit = (float(self.exit_P[0, 1]), float(self.exit_P[1, 1]))
        self._token_index = np.arange(K)
        # Per-token tables of token_cost: the next token's device time and whether there
        # is one (the last token's upload overlaps nothing).
        self.t_dev_next_s = np.append(self.t_dev_s[1:], 0.0)
        self.not_last = np.append(np.ones(K - 1), 0.0)
        # Per FSMC state: SNR [dB], its observation and the link rate (fsmc mode looks
        # each slot's up; gauss_markov computes them per slot). The cumulative tables are
        # the FSMC's own (what its sample_path searches).
        self._fsmc_cum = self.fsmc._cum.tolist()
        self._fsmc_cum_pi = self.fsmc._cum_pi.tolist()
        state_db, state_obs = snr_observation(self.fsmc.snr_linear)
        self._state_snr_db = state_db.tolist()
        self._state_snr_obs = state_obs.tolist()
        self._state_rate = np.asarray(self.state_rate_bps, float).tolist()
        self._state_obs_arr, self._state_rate_arr = (
            state_obs,
            np.asarray(self.state_rate_bps, float),
        )
        self.mean_rate_bps = float(np.dot(self.fsmc.stationary, self.state_rate_bps))
        # States uploaded by action a at an exited token with backlog b: n_up_table[a, b].
        b = np.arange(self.limit + 1)
        self.n_up_table = np.stack([self.n_upload(a, b) for a in range(len(cfg.upload_fractions))])

        # Normalisers of the reward: the nominal token time, and the tail energy of one
        # nominal token step (the energy a burst keeps spending per token afterwards).
        self.latency_ref_s = self.t_nominal_s
        # With no tail power configured, the radio's base transmit power (beta) over one
        # nominal step; with neither, a plain 1 J unit.
        # (Powers below 1 mW would make the unit vanish: the fallback applies.)
        rp = self.radio
        ref_power_w = rp.tail_power_w if rp.tail_power_w >= 1e-3 else rp.beta_w
        self.energy_ref_j = ref_power_w * self.t_nominal_s if ref_power_w >= 1e-3 else 1.0

    def _time_layers(
        self, hw: Any, layers: tuple[int, int], new: Any, cached: Any, precision: str
    ) -> np.ndarray:
        """Roofline time [s] of ``layers`` for ``new`` tokens after ``cached`` ones, with the
        LM head for one token (the exit head on the device, the output on the server)."""
        out = hardware.time_layers(
            hw,
            self.arch,
            layers,
            new_tokens=new,
            cached_tokens=cached,
            lm_head_tokens=1,
            weight_precision=precision,
            kv_precision=self.cfg.kv_precision,
        )
        return np.asarray(out["latency_s"], float)

    # ---- exogenous processes -----------------------------------------------------------
    def sample_exits(self, rng: np.random.Generator) -> np.ndarray:
        """Exit indicators of the K tokens (stationary start)."""
        return self._exit_chain(rng.random(self.K)).astype(np.int8)

    def _exit_chain(self, u: np.ndarray) -> np.ndarray:
        """The exit chain driven by uniforms ``u`` (one per token along the last axis; bools
        out; leading axes are independent episodes): token 0 exits
        when ``u[0] < exit_prob``, token k when ``u[k] < P[e_{k-1}, 1]``.

        As ``P[0, 1] <= P[1, 1]`` (correlation >= 0), ``u[k] < P[0, 1]`` means an exit and
        ``u[k] >= P[1, 1]`` none whatever the previous token did; otherwise the token repeats
        it. So the chain is a forward fill of the decided tokens: the same comparisons as
        stepping it, with no Python loop.
        """
        p01, p11 = self._p_exit
        exit_now = u < p01
        decided = exit_now | (u >= p11)
        exit_now[..., 0] = u[..., 0] < self.cfg.exit_prob
        decided[..., 0] = True
        src = np.where(decided, self._token_index, 0)
        np.maximum.accumulate(src, axis=-1, out=src)
        return np.take_along_axis(exit_now, src, axis=-1)

    def sample_channel(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SNRs (linear), FSMC states and link rates of the H-1 slots before the episode and
        the K token steps (see :meth:`mei_envs.wireless.UplinkChannel.sample_path`)."""
        return self.channel.sample_path(rng, self.K + self.cfg.snr_history - 1)

    def _fsmc_path(self, u: list[float]) -> list[int]:
        """The FSMC state path driven by uniforms ``u`` (the stationary draw, then one per
        transition): the same cumulative tables and comparisons as
        :meth:`mei_envs.wireless.FiniteStateMarkovChannel.sample_path`."""
        cum = self._fsmc_cum
        s = bisect.bisect_right(self._fsmc_cum_pi, u[0])
        out = [s]
        for x in u[1:]:
            s = bisect.bisect_right(cum[s], x)
            out.append(s)
        return out

    def sample_episode(
        self,
        rng: np.random.Generator,
        exits: np.ndarray | None = None,
        states: np.ndarray | None = None,
    ) -> Episode:
        """Every random draw of an episode, in the env's order: the K exit uniforms, the
        channel path of ``K + snr_history - 1`` slots, then the K exit-head confidences.

        In ``fsmc`` mode the draws are uniforms only, so one ``rng.random(2K + N)`` makes
        them (the same stream as ``sample_exits``, ``sample_channel`` and ``rng.random(K)``
        one after the other) and each slot's SNR [dB], observation and rate are looked up
        from its state. ``exits`` and ``states`` (fsmc mode) replace the drawn paths (the
        draws are still made, so the generator moves on the same).
        """
        K, N = self.K, self.K + self.cfg.snr_history - 1
        if self.channel.mode == "fsmc":
            return self.episode_from_uniforms(rng.random(2 * K + N), exits, states)
        if states is not None:
            raise ValueError("sample_episode: states only with channel='fsmc'")
        ex = self._exit_chain(rng.random(K))
        snr, st_arr, rt = self.sample_channel(rng)
        st, rates = st_arr.tolist(), rt.tolist()
        snr_db, snr_obs = (x.tolist() for x in snr_observation(snr))
        uc = rng.random(K)
        if exits is not None:
            ex = np.asarray(exits) == 1
        return Episode(
            ex.view(np.int8).tolist(), st, snr_db, snr_obs, rates, self.confidences(ex, uc)
        )

    def episode_from_uniforms(
        self, u: np.ndarray, exits: np.ndarray | None = None, states: np.ndarray | None = None
    ) -> Episode:
        """fsmc mode: the episode :meth:`sample_episode` makes from its ``2K + N`` uniforms
        ``u`` (``N = K + snr_history - 1``: the exit uniforms, the channel slots', the
        confidences'); ``exits`` and ``states`` replace the drawn paths."""
        K, N = self.K, self.K + self.cfg.snr_history - 1
        ex = self._exit_chain(u[:K])
        st = self._fsmc_path(u[K : K + N].tolist()) if states is None else states.tolist()
        snr_db = [self._state_snr_db[s] for s in st]
        snr_obs = [self._state_snr_obs[s] for s in st]
        rates = [self._state_rate[s] for s in st]
        if exits is not None:
            ex = np.asarray(exits) == 1
        return Episode(
            ex.view(np.int8).tolist(), st, snr_db, snr_obs, rates, self.confidences(ex, u[K + N :])
        )

    def fsmc_paths(self, u: np.ndarray) -> np.ndarray:
        """:meth:`_fsmc_path` for many episodes at once: ``u`` ``(episodes, slots)``, one
        state path per row (``bisect_right`` = the count of cumulative entries <= u: the
        same comparisons), a loop over slots only."""
        cum = self.fsmc._cum
        out = np.empty(u.shape, dtype=np.intp)
        s = np.searchsorted(self.fsmc._cum_pi, u[:, 0], side="right")
        out[:, 0] = s
        for t in range(1, u.shape[1]):
            s = (cum[s] <= u[:, t : t + 1]).sum(axis=1)
            out[:, t] = s
        return out

    def confidences(self, exits: np.ndarray, u: np.ndarray) -> list[float]:
        """Exit-head confidence of each token (``exits``: bools) from uniforms ``u``: uniform
        on ``[exit_threshold, 1)`` for an exit, on ``[0, exit_threshold)`` otherwise."""
        lo, hi = self.cfg.exit_threshold, 1.0
        return np.where(exits, lo + u * (hi - lo), u * lo).tolist()

    def sample_episodes(self, rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        """:meth:`sample_episode` for one episode per generator, as arrays (a vector env's
        reset): ``exits`` (bool), ``conf`` ``(len(rngs), K)``; ``snr_obs`` (float32),
        ``rates`` ``(len(rngs), K + snr_history - 1)``, and in fsmc mode the slots' FSMC
        ``states``. The same draws, in the same order,
        from each generator; in ``fsmc`` mode the exit chains and the lookups are batched."""
        K, N = self.K, self.K + self.cfg.snr_history - 1
        m = len(rngs)
        if self.channel.mode != "fsmc":
            eps = [self.sample_episode(rng) for rng in rngs]
            return {
                "exits": np.array([e.exits for e in eps], dtype=bool).reshape(m, K),
                "conf": np.array([e.conf for e in eps]).reshape(m, K),
                "snr_obs": np.array([e.snr_obs for e in eps], dtype=np.float32).reshape(m, N),
                "rates": np.array([e.rates for e in eps]).reshape(m, N),
            }
        u = np.empty((m, 2 * K + N))
        for i, rng in enumerate(rngs):
            rng.random(out=u[i])
        exits = self._exit_chain(u[:, :K])
        states = np.array([self._fsmc_path(row) for row in u[:, K : K + N].tolist()])
        states = states.reshape(m, N)
        lo, hi = self.cfg.exit_threshold, 1.0
        uc = u[:, K + N :]
        return {
            "exits": exits,
            "conf": np.where(exits, lo + uc * (hi - lo), uc * lo),
            "snr_obs": self._state_obs_arr[states],
            "rates": self._state_rate_arr[states],
            "states": states,
        }

    def rate_bps(self, snr_linear: Any) -> Any:
        """Link-adapted uplink rate (:func:`mei_envs.wireless.link_rate_bps`)."""
        return self.channel.rate_bps(snr_linear)

    # ---- the cost of one token ---------------------------------------------------------
    def token_cost(
        self, k: Any, backlog: Any, n_up: Any, rate_bps: Any, timer: Any, exited: Any
    ) -> tuple[Any, Any, Any, Any, Any]:
        """Latency [s], radio energy [J], stall [s], airtime [s] and wake flag of token ``k``.

        Looks up the token's cost tables and evaluates :meth:`token_cost_at`; every
        argument may be a numpy array (the DP and the vector env broadcast them).

        Args:
            k: token index in the episode.
            backlog: hidden states held before token ``k``.
            n_up: states uploaded at this token (``backlog + 1`` when it does not exit).
            rate_bps: uplink rate during this token step.
            timer: token steps since the last burst, capped at ``tail_steps`` (= asleep).
            exited: 1 if the token exits on the device, else 0 (forced upload).
        """
        t_srv = self.t_srv_s[k, np.minimum(backlog + 1, self.limit + 1)]
        return self.token_cost_at(
            self.t_dev_s[k],
            self.t_dev_next_s[k],
            self.not_last[k],
            t_srv,
            n_up,
            rate_bps,
            timer,
            exited,
        )

    def token_cost_at(
        self,
        t_dev: Any,
        t_dev_next: Any,
        not_last: Any,
        t_srv: Any,
        n_up: Any,
        rate_bps: Any,
        timer: Any,
        exited: Any,
    ) -> tuple[Any, Any, Any, Any, Any]:
        """:meth:`token_cost` given the token's table entries: the device time ``t_dev``, the
        next token's ``t_dev_next`` (``not_last`` = 0 for the last token, whose upload
        overlaps nothing) and the server catch-up ``t_srv``. Arithmetic only: Python scalars
        in the env's step, broadcast numpy arrays in the DP and the vector env (one copy).
        """
        rp = self.radio
        sending = n_up > 0
        asleep = timer >= self.tail_steps
        wake = sending * asleep
        airtime = n_up * self.state_bits / rate_bps
        tx_energy = radio.transmit_energy_j(rp, rate_bps, airtime)
        background = radio.background_power_w(rp, asleep)
        t_wake = wake * rp.wake_s
        energy = background * t_dev + radio.wake_energy_j(rp, wake) + tx_energy
        # A voluntary upload overlaps the next token's compute; only the excess stalls
        # (nothing waits for an upload after the last token).
        over = t_wake + airtime - t_dev_next
        stall = not_last * ((over + abs(over)) * 0.5)
        forced_latency = t_dev + t_wake + airtime + t_srv
        latency = exited * (t_dev + stall) + (1 - exited) * forced_latency
        energy = energy + (1 - exited) * rp.tail_power_w * t_srv
        stall = exited * stall + (1 - exited) * (t_wake + airtime + t_srv)
        return latency, energy, stall, airtime, wake

    def flush_energy(self, backlog: Any, rate_bps: Any, timer: Any) -> Any:
        """Energy [J] of uploading the final backlog after the last token (no latency)."""
        rp = self.radio
        sending = backlog > 0
        wake = sending * (timer >= self.tail_steps)
        airtime = backlog * self.state_bits / rate_bps
        return radio.wake_energy_j(rp, wake) + radio.transmit_energy_j(rp, rate_bps, airtime)

    def transition(self, backlog: Any, timer: Any, n_up: Any) -> tuple[Any, Any]:
        """Backlog and radio timer after a token that uploads ``n_up`` states.

        The token's own hidden state joins the backlog, ``n_up`` leave it; a burst resets
        the timer to 0 (radio in its tail), otherwise the timer counts one more token step,
        capped at ``tail_steps`` (= asleep). Branch-free arithmetic: Python ints in the env,
        broadcast integer arrays in the DP and a vector env.
        """
        over = timer + 1 - self.tail_steps
        capped = self.tail_steps + (over - abs(over)) // 2  # min(timer + 1, tail_steps)
        return backlog + 1 - n_up, (1 - (n_up > 0)) * capped

    def cost(self, latency_s: Any, energy_j: Any) -> Any:
        """Per-step cost (the negative reward)."""
        latency_cost, energy_cost = self.cost_terms(latency_s, energy_j)
        return latency_cost + energy_cost

    def cost_terms(self, latency_s: Any, energy_j: Any) -> tuple[Any, Any]:
        """The latency and energy terms of :meth:`cost` (normalised, energy weighted)."""
        lam = self.cfg.lambda_energy
        return latency_s / self.latency_ref_s, lam * energy_j / self.energy_ref_j

    def n_upload(self, action: int, backlog: Any) -> Any:
        """States uploaded when action ``action`` is taken at an exited token (round half
        to even of the action's share of ``backlog + 1``; an int for an int backlog, an
        int64 array for an array)."""
        n = np.rint(self.cfg.upload_fractions[action] * (backlog + 1)).astype(np.int64)
        return int(n) if n.ndim == 0 else n


class EarlyExitUploadEnv(MeiEnv[np.ndarray, np.int64]):
    """
    ## Description

    A phone runs the bottom ``cut_layer`` blocks of a decoder LLM and an early-exit head; an
    edge server runs the remaining blocks. Tokens are generated one at a time. For each
    token the phone computes its blocks (decode FLOPs and bytes at the current context, from
    `mei_envs.llm.costs`, timed by the roofline model of the phone's hardware profile). If
    the exit head is confident the token **exits**: it is emitted at once, but the server
    will later need its layer-``cut_layer`` hidden state to complete its KV cache, so the
    state joins a backlog. If the token does **not exit**, the backlog plus the token's own
    hidden state must be uploaded, the server runs its blocks on all of them (catch-up on the
    server's roofline) and returns the token; the user waits for all of it.

    The agent decides, at each exited token, whether to upload the backlog now (cheap on a
    good channel, less to send later) or to wait. The uplink (`mei_envs.wireless`): mean
    SNR from the path loss at `carrier_hz` (default 3GPP TR 38.901 UMa NLOS, a user 250 m
    from the site of a 500 m-ISD cell, near its edge: mean SNR 9.8 dB over 1 MHz), Rayleigh
    (or Rician) fading correlated over token steps by Jakes' ``rho = J0(2 pi f_D T)``
    (negative for fast users or slow token periods: the AR(1) keeps that lag-one
    correlation), and a link-adapted rate (Shannon over `bandwidth_hz`, spectral efficiency
    held within TS 38.214 CQI 1..15). Either a finite-state Markov channel (`fsmc`, exact
    transitions of the Gauss-Markov Rayleigh process; each state's rate is the harmonic mean
    of the link-adapted rate over its SNR bin, so a payload's expected airtime is exact) or
    the Gauss-Markov process itself (`gauss_markov`). The channel has one block per token
    step (``T`` = the phone's time for the first token); an upload takes ``bytes / rate`` at
    the rate of the block it starts in, even when that airtime spans several token steps
    (block fading per burst), and the channel then moves on by one block for the next
    token. This keeps the dynamic program exact.
    Radio energy (`mei_envs.radio`, profile `radio_profile`, default ``"nr_drx"``):
    ``P = alpha_u * rate + beta`` while sending (Huang et al., MobiSys 2012); after each
    burst the modem stays in a high-power tail (``tail_power_w``) for ``tail_s`` (counted in
    token steps) before falling back to sleep (``sleep_power_w``); leaving sleep costs
    ``wake_s`` at ``wake_power_w``. ``"nr_drx"``: a 0.1 s DRX inactivity tail (3GPP TS
    38.321), sleep at 20% of the tail power (TR 38.840), a 10 ms wake-up;
    ``"lte_huang2012"``: LTE as Huang et al. measured it (11.576 s tail, 260 ms promotion).
    That tail is why batching uploads saves energy, and the forced upload of a long backlog
    on a faded channel is why waiting costs latency.

    Exit model (an ASSUMPTION calibrated on published shares): exit indicators follow a
    two-state Markov chain with stationary exit probability ``exit_prob`` (LayerSkip,
    arXiv 2404.16710: 63-79% of tokens exit at layer 8 of 32 on Llama-2-7B) and lag-1
    correlation ``exit_correlation`` (no published measurement; an assumption). The exit
    head's confidence is uniform on ``[exit_threshold, 1)`` for an exit and on
    ``[0, exit_threshold)`` otherwise (CE-CoLLM uses thresholds 0.8-1.0).

    Every random draw (exit indicators, channel) for the whole episode is made at `reset`
    from `np_random`, so the same seed gives every policy the same exit and channel path.

    ## Action Space

    `Discrete(len(upload_fractions))`, default `Discrete(2)`: action `i` uploads
    ``round(upload_fractions[i] * (backlog + 1))`` hidden states (the oldest first) at the
    current exited token; with the default fractions ``(0.0, 1.0)``, 0 = wait and 1 = upload
    the whole backlog with the current state. The env only asks at exited tokens whose
    backlog is below `backlog_limit`; non-exited tokens and full backlogs force an upload
    inside `step`, reported in `info`. `action_masks()` returns the (all-true) mask.

    ## Observation Space

    `Box(-1, 1, (snr_history + 7,), float32)`:

    | index | observation | min | max |
    |---|---|---|---|
    | 0..H-1 | SNR [dB] / 40 of this token step and the H-1 before it, clipped | -1 | 1 |
    | H | backlog / backlog_limit | 0 | 1 |
    | H+1 | tokens left / tokens | 0 | 1 |
    | H+2 | context length / (prompt_tokens + tokens) | 0 | 1 |
    | H+3 | the current token exited (always 1 at a decision; 0 on the last observation) | 0 | 1 |
    | H+4 | exit-head confidence | 0 | 1 |
    | H+5 | radio tail left: 1 - timer / tail_steps (0 = asleep) | 0 | 1 |
    | H+6 | uplink rate now / mean rate of the channel model, clipped to 1 | 0 | 1 |

    ## Rewards

    Per step, summed over the tokens the step processes (the decision token and the forced
    tokens up to the next decision): ``-(latency_s / latency_ref + lambda_energy * energy_J
    / energy_ref)``. ``latency_ref`` is the phone's time for the first token; ``energy_ref``
    is the tail energy of one such token step. ``energy_J`` is the radio's energy (tail,
    sleep, wake-up and transmission); the phone's compute energy is the same for every policy
    and is reported separately in ``info["compute_energy_J"]``. `info` carries
    ``latency_s``, ``energy_J``, ``stall_s`` (user-visible waiting beyond compute),
    ``bytes_sent``, ``forced_uploads`` (non-exited tokens), ``voluntary_uploads`` (uploads
    chosen at a decision), ``limit_uploads`` (full backlog), ``wakeups``, ``backlog``,
    ``snr_db`` and the two cost components.

    ## Info

    Two levels (config field ``info``):

    * ``"full"`` (default): every step's `info` has the sums over its tokens of
      ``latency_s``, ``energy_J``, ``stall_s``, ``airtime_s``, ``bytes_sent``, ``wakeups``,
      ``compute_energy_J``, ``tokens``, ``voluntary_uploads``, ``forced_uploads``,
      ``limit_uploads`` and ``flush_energy_J``; the state after it: ``token_index``,
      ``backlog``, ``snr_db``, ``channel_state``, ``radio_timer``; ``action_mask``; and the
      reward's ``latency_cost`` and ``energy_cost``. `reset`'s `info` has the same but the
      two cost terms (the sums so far: the forced tokens before the first decision, which
      the first `step` reports again).
    * ``"lean"``: every step's `info` has only the keys of ``metadata["info_metrics"]``
      (``latency_s``, ``energy_J``, ``stall_s``, ``bytes_sent``, ``forced_uploads``,
      ``voluntary_uploads``, ``limit_uploads``, ``wakeups``, ``compute_energy_J``), and the
      step that ends the episode adds their episode totals as ``episode_<key>`` (each a sum
      over the episode's steps, as the metadata declares). `reset`'s `info` is empty.
      Observations, rewards and episodes are the same as with ``"full"``.

    The native vector env (``gym.make_vec(id, n, vectorization_mode="vector_entry_point")``,
    :class:`mei_envs.envs.early_exit_upload_vector.EarlyExitUploadVectorEnv`) reports the
    lean keys whatever ``info`` says.

    ## Starting State

    Backlog 0, context ``prompt_tokens``, radio asleep (``initial_radio="idle"``) or in its
    tail (``"connected"``); exit indicator and channel drawn from their stationary
    distributions. `reset` advances through forced tokens to the first decision; their cost
    is charged in the first `step`'s reward.

    ## Episode End

    Terminates when all ``tokens`` tokens are generated. With ``flush_at_end=True``
    (default) the remaining backlog is uploaded after the last token on the last token
    step's channel; its energy (not latency: no token waits for it) is charged. With
    ``flush_at_end=False`` the final backlog is free. No truncation.

    ## Arguments

    ``gym.make("mei_envs/EarlyExitUpload-v1", config={...})`` or keyword arguments; keys and
    defaults are the fields of :class:`EarlyExitUploadConfig`. `reset(options=...)` accepts
    ``exit_sequence`` (K ints) and, in fsmc mode, ``channel_states`` (K + snr_history - 1
    state indices) to replay a given path. ``info="lean"`` trims `info` (see Info).

    ## Version History

    * v1 (issue 12, same trajectories bit for bit): faster `step`/`reset`, config field
      ``info`` (``"full"``/``"lean"``), a native vector env (``vector_entry_point``).
    * v1: path loss from 3GPP TR 38.901 (UMa/UMi, LOS/NLOS) at the configured carrier
      (`path_loss_model`; TR 36.814's 2 GHz formula kept as ``"36814_macro"``), default user
      at 250 m (was 600 m with TR 36.814); FSMC state rates preserve expected airtime
      (`fsmc_rate="airtime"`; v0 used the rate at the bin's mean SNR, 16% optimistic for a
      16-state backlog); radio power profile selectable (`radio_profile`; v0's radio is
      ``"nr_drx"``); `voluntary_uploads` no longer counts backlog-limit uploads (new
      `limit_uploads` metric); configs with a negative Jakes correlation (fast users, slow
      devices, big models) or a huge Bessel argument now build instead of raising; physical
      limits on bandwidth, power, distance, carrier and radio fields; Raspberry Pi 4
      bandwidth from STREAM measurements; named scenario presets (`preset`). v0's behaviour:
      ``path_loss_model="36814_macro", distance_m=600, fsmc_rate="bin_mean_snr"``
      (trajectories identical, `tests/test_pinned_trajectories.py`).
    * v0: initial version.
    """

    config_class = EarlyExitUploadConfig
    metadata = {
        "render_modes": [],
        "info_metrics": {
            "latency_s": "sum",
            "energy_J": "sum",
            "stall_s": "sum",
            "bytes_sent": "sum",
            "forced_uploads": "sum",
            "voluntary_uploads": "sum",
            "limit_uploads": "sum",
            "wakeups": "sum",
            "compute_energy_J": "sum",
        },
    }

    def _setup(self, cfg: EarlyExitUploadConfig) -> None:
        self.model = m = EarlyExitUploadModel(cfg)
        H = cfg.snr_history
        self._H = H
        self.action_space = spaces.Discrete(len(cfg.upload_fractions))
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(H + 7,), dtype=np.float32)
        K, P, M = m.K, cfg.prompt_tokens, m.tail_steps
        # The radio timer after a token that uploads nothing / something
        # (:meth:`EarlyExitUploadModel.transition` over every timer value).
        timers = np.arange(M + 1)
        timer_after = [m.transition(0, timers, n)[1].tolist() for n in (0, 1)]
        # Token costs memoised per (token, backlog, states uploaded, FSMC state, asleep,
        # exited) in fsmc mode (the rate is the state's; the timer enters the cost only
        # through asleep = timer >= tail_steps); None in gauss_markov mode (continuous rates).
        self._memo: dict[tuple[int, ...], tuple[Any, ...]] | None = (
            {} if m.channel.mode == "fsmc" else None
        )
        # Plain-Python copies of the per-token tables for the scalar hot path.
        self._hot = (K, m.limit, H - 1, M, m.device_energy_j.tolist(), timer_after)
        self._tail, self._timer_after, self._limit = M, timer_after, m.limit
        self._timer0 = M if cfg.initial_radio == "idle" else 0
        self._exit_prob = cfg.exit_prob
        self._conf_lo, self._conf_span = cfg.exit_threshold, 1.0 - cfg.exit_threshold
        self._K = K
        self._cost_args = (
            m.t_dev_s.tolist(),
            m.t_dev_next_s.tolist(),
            m.not_last.tolist(),
            m.t_srv_s.item,
            m.token_cost_at,
            m.transition,
            m.state_bits,
        )
        self._n_up = m.n_up_table.tolist()
        self._mean_rate = m.mean_rate_bps
        self._left_obs = [(K - k) / K for k in range(K + 1)]
        self._ctx_obs = [(P + k) / (P + K) for k in range(K + 1)]
        self._backlog_obs = [b / m.limit for b in range(m.limit + 1)]
        self._radio_obs = [1.0 - t / M for t in range(M + 1)]  # timer <= tail_steps always
        # fsmc mode draws an episode as uniforms only (see EarlyExitUploadModel.sample_episode);
        # reset() draws them in one block and the exit chain, the channel path and the
        # confidences are then worked out token by token as the episode reaches them
        # (:meth:`_grow`): the same numbers and comparisons as sample_episode.
        self._lazy = m.channel.mode == "fsmc"
        self._n_draws = 2 * K + K + H - 1
        self._n_actions = int(self.action_space.n)
        self._cost_terms = m.cost_terms
        # fsmc mode: a step whose decision token is followed by another decision (most
        # steps) is memoised whole per (token, backlog, action, FSMC state, asleep): its
        # sums, the backlog after it and its reward terms (what processing that one token
        # from zero sums gives, the same numbers as the token memo's).
        self._step_memo: dict[tuple[int, ...], tuple[Any, ...]] | None = {} if self._lazy else None
        # fsmc mode: the decision token's costs for the step memo's misses (_decision_row).
        self._dec_tab: np.ndarray | bool | None = None
        self._state_bits = m.state_bits
        # fsmc mode: per token and FSMC state, the latency, energy, stall and airtime of a
        # non-exited token from backlog 0 with the radio in its tail (it uploads its own
        # state: token_cost on arrays, the same bits as on scalars), for _advance's runs of
        # such tokens; None in gauss_markov mode or past _RUN_TABLE_ENTRIES entries.
        self._run: list[list[tuple[float, ...]]] | None = None
        if self._lazy and K * m.fsmc.n_states <= _RUN_TABLE_ENTRIES:
            rate = np.asarray(m.state_rate_bps, float)[None, :]
            lat, en, stl, air, wake = m.token_cost(np.arange(K)[:, None], 0, 1, rate, 0, 0)
            if np.any(wake):  # pragma: no cover - timer 0 < tail_steps: never asleep
                raise RuntimeError("EarlyExitUploadEnv: a run token woke the radio")
            shape = (K, m.fsmc.n_states)
            cols = [np.broadcast_to(x, shape) for x in (lat, en, stl, air)]
            self._run = [list(map(tuple, row)) for row in np.stack(cols, axis=-1).tolist()]
        self._sent1 = 1 * m.state_bits / 8.0  # bytes of one state (_token_effect's n = 1)
        self._mask = np.ones(self._n_actions, dtype=bool)
        self._mask.flags.writeable = False
        # reset's full info when token 0 exits, but for its channel keys and action mask.
        self._reset_info0 = {
            **_RESET_ZERO_INFO,
            "token_index": 0,
            "backlog": 0,
            "radio_timer": self._timer0,
        }
        self._lean = cfg.info == "lean"
        self._started = False
        self._can_step = False  # reset, and the episode has a step left
        self._acc = ZERO_ACC
        self._k, self._backlog, self._timer = 0, 0, 0
        self._done = False
        self._final_pending = False

    # ---- Gymnasium API -----------------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        m = self.model
        if options or not self._lazy:
            opts = self._check_options(options) if options else {}
            ep = m.sample_episode(self.np_random, **opts)
            # Per token: exit indicator, confidence; per channel slot: FSMC state, SNR [dB],
            # its observation, link rate (the lazy path below fills the same lists).
            self._ex, self._conf = ep.exits, ep.conf
            self._st, self._sd, self._so, self._rt = ep.states, ep.snr_db, ep.snr_obs, ep.rates
            self._known = m.K
        else:
            # The episode's uniforms; _grow reads them as Python floats (converted at its
            # first call). Reset works out token 0 and its channel window only (_grow's
            # comparisons): slot 0 from the stationary distribution, then H-1 transitions.
            self._u_arr = u = self.np_random.random(self._n_draws)
            self._u = None  # the uniforms as Python floats, once _grow is past its first block
            K, H = m.K, self._H
            slots = u[K : K + H].tolist()
            s = bisect.bisect_right(m._fsmc_cum_pi, slots[0])
            st = [s]
            if H > 1:
                cum, br = m._fsmc_cum, bisect.bisect_right
                for x in slots[1:]:
                    s = br(cum[s], x)
                    st.append(s)
            self._st = st
            self._sd = list(map(m._state_snr_db.__getitem__, st))
            self._so = list(map(m._state_snr_obs.__getitem__, st))
            self._rt = list(map(m._state_rate.__getitem__, st))
            e = u.item(0) < self._exit_prob
            y = u.item(2 * K + H - 1)
            self._ex = [e]
            self._conf = [self._conf_lo + y * self._conf_span if e else y * self._conf_lo]
            self._known = 1
        self._started = True
        self._k = 0
        self._backlog = 0
        self._timer = self._timer0
        self._done = False
        self._episode: list[tuple[float, ...]] = []  # info='lean': the steps' sums
        if self._ex[0]:  # token 0 exits (backlog 0 < limit): a decision, nothing processed
            self._acc = ZERO_ACC
            self._final_pending = False
            self._can_step = True
            # _obs() and _fill_info() at token 0 with backlog 0, written out.
            H = self._H
            rate = self._rt[H - 1] / self._mean_rate
            obs = np.asarray(
                [
                    *self._so[H - 1 :: -1],
                    self._backlog_obs[0],
                    self._left_obs[0],
                    self._ctx_obs[0],
                    1.0,
                    self._conf[0],
                    self._radio_obs[self._timer0],
                    rate if rate < 1.0 else 1.0,
                ],
                _FLOAT32,
            )
            if self._lean:
                return obs, {}
            info = self._reset_info0.copy()
            info["snr_db"] = self._sd[H - 1]
            info["channel_state"] = self._st[H - 1]
            info["action_mask"] = self._mask.copy()  # a new array: infos share no data
            return obs, info
        acc = self._advance(ZERO_ACC, None)
        # No forced token before the first decision: the first step starts from zero sums
        # (and may use the step memo).
        self._acc = ZERO_ACC if acc == ZERO_ACC else acc
        # If no token left asks for a decision, one more step (whose action is ignored)
        # delivers the cost of the forced tokens and terminates.
        self._final_pending = self._done
        self._can_step = True
        return self._obs(), ({} if self._lean else self._fill_info(_info_base(acc)))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._can_step:
            if not self._started:
                raise RuntimeError("EarlyExitUploadEnv.step called before reset()")
            raise RuntimeError("EarlyExitUploadEnv.step called after the episode ended; reset()")
        t = type(action)
        if t is int and 0 <= action < self._n_actions:
            a = action
        elif t is _INT64 and 0 <= (a := int(action)) < self._n_actions:
            pass  # what action_space.sample() returns
        else:
            a = check_discrete_action(action, self._n_actions)
        acc = self._acc
        memo = self._step_memo
        if self._final_pending:
            self._final_pending = False
            entry = None
        elif memo is not None and acc is ZERO_ACC and self._k + 1 < self._K:
            # The decision token from zero sums, memoised; then any forced tokens after it.
            k, b, timer = self._k, self._backlog, self._timer
            n = self._n_up[a][b]
            key = (k, b, a, self._st[k + self._H - 1], timer >= self._tail)
            entry = memo.get(key)
            if entry is None:
                if len(memo) >= _STEP_MEMO_MAX:
                    memo.clear()
                row = self._decision_row(k, b, a, key[3], key[4])
                if row is None:
                    acc = self._advance(ZERO_ACC, n, k + 1)
                    k = self._k
                    b, timer = self._backlog, self._timer
                    lc, ec = self._cost_terms(acc[0], acc[1])
                    entry = (acc, b, lc, ec, -(lc + ec), _info_base(acc, lc, ec))
                else:
                    # What _advance(ZERO_ACC, n, k + 1) sums for the decision token alone
                    # and its cost terms (_decision_row), and the state after it.
                    acc = tuple(row[:_N_ACC])
                    b = b + 1 - n
                    timer = self._timer_after[n > 0][timer]
                    k += 1
                    info = _STEP_INFO.copy()
                    info.update(zip(_SUM_COST_KEYS, row[:-1], strict=True))
                    entry = (acc, b, row[_N_ACC], row[_N_ACC + 1], row[_N_ACC + 2], info)
                memo[key] = entry
            else:
                acc, b = entry[0], entry[1]
                timer = self._timer_after[n > 0][timer]
                k += 1
            if k >= self._known:
                self._grow()
            self._k, self._backlog, self._timer = k, b, timer
            if self._ex[k] and b < self._limit:
                # The next token is a decision (most steps): _obs and _fill_info written
                # out for a live decision token (k < K, exited).
                j = k + self._H - 1
                rate = self._rt[j] / self._mean_rate
                obs = np.asarray(
                    [
                        *self._so[j : k - 1 : -1],
                        self._backlog_obs[b],
                        self._left_obs[k],
                        self._ctx_obs[k],
                        1.0,
                        self._conf[k],
                        self._radio_obs[timer],
                        rate if rate < 1.0 else 1.0,
                    ],
                    _FLOAT32,
                )
                if self._lean:
                    return obs, entry[4], False, False, self._lean_info(acc)
                info = entry[5].copy()
                info["token_index"] = k
                info["backlog"] = b
                info["snr_db"] = self._sd[j]
                info["channel_state"] = self._st[j]
                info["radio_timer"] = timer
                info["action_mask"] = self._mask.copy()  # a new array: infos share no data
                return obs, entry[4], False, False, info
            acc = self._advance(acc, None)
            entry = None
        else:
            acc = self._advance(acc, self._n_up[a][self._backlog])
            entry = None
        self._acc = ZERO_ACC
        self._can_step = not self._done
        if entry is None:
            latency_cost, energy_cost = self._cost_terms(acc[0], acc[1])
            reward = -(latency_cost + energy_cost)
        else:
            latency_cost, energy_cost, reward = entry[2], entry[3], entry[4]
        if self._lean:
            return self._obs(), reward, self._done, False, self._lean_info(acc)
        info = _info_base(acc, latency_cost, energy_cost) if entry is None else entry[5].copy()
        return self._obs(), reward, self._done, False, self._fill_info(info)

    def _decision_row(self, k: int, b: int, a: int, c: int, asleep: bool) -> list[float] | None:
        """fsmc mode: the step sums (``ACCOUNT_KEYS`` order) of decision token ``k`` alone
        (exited, backlog ``b``, action ``a``, FSMC state ``c``, radio asleep or not), then
        its cost terms and reward: what :meth:`_advance` from zero sums (``0.0 + x``) and
        :meth:`EarlyExitUploadModel.cost_terms` give, from a table evaluated once over every
        ``(k, b, a, c, asleep)`` on arrays (the same bits as the scalar evaluation: the
        cost function and the sums are arithmetic only); built at the step memo's first
        miss, None if it would exceed ``_DECISION_TABLE_ROWS`` rows."""
        tab = self._dec_tab
        if tab is None:
            m = self.model
            K, B, A, C = m.K, m.limit, self._n_actions, m.fsmc.n_states
            if K * (B + 1) * A * C * 2 > _DECISION_TABLE_ROWS:
                self._dec_tab = False
                return None
            kk = np.arange(K)[:, None, None, None, None]
            bb = np.arange(B + 1)[None, :, None, None, None]
            n = m.n_up_table[np.arange(A)[None, None, :, None, None], bb]
            rate = np.asarray(m.state_rate_bps, float)[None, None, None, :, None]
            timer = np.array([0, m.tail_steps])[None, None, None, None, :]
            lat, en, stl, air, wake = m.token_cost(kk, bb, n, rate, timer, 1)
            zero = np.zeros(())
            sums = (
                0.0 + lat,
                0.0 + en,
                0.0 + stl,
                0.0 + air,
                0.0 + n * m.state_bits / 8.0,
                0.0 + wake,
                0.0 + m.device_energy_j[kk],
                zero + 1.0,
                (n > 0) + zero,
                zero,
                zero,
                zero,
            )
            lc, ec = m.cost_terms(sums[0], sums[1])
            cols = (*sums, lc, ec, -(lc + ec))
            shape = (K, B + 1, A, C, 2)
            tab = self._dec_tab = np.stack([np.broadcast_to(x, shape) for x in cols], axis=-1)
        elif tab is False:
            return None
        return tab[k, b, a, c, int(asleep)].tolist()

    def decision_state(self) -> dict[str, int | bool]:
        """The true state an oracle acts on: token index, backlog, channel state (the FSMC
        bin of this token step), radio timer, and whether a decision is pending (False on
        the terminal step that only delivers forced tokens' costs)."""
        k = min(self._k, self.model.K - 1)
        return {
            "token": self._k,
            "backlog": self._backlog,
            "channel_state": self._st[k + self._H - 1],
            "radio_timer": self._timer,
            "decision": not self._done,
        }

    def action_masks(self) -> np.ndarray:
        """Legal actions (all of them at every decision the env asks for; a cached
        read-only array)."""
        return self._mask

    # ---- internals ---------------------------------------------------------------------
    def _grow(self) -> int:
        """fsmc mode: work out the next tokens' exit indicators and confidences and their
        channel slots' states from the episode's uniforms (``sample_episode``'s layout: K
        exit uniforms, the slots' uniforms, K confidence uniforms); return
        how many tokens are known. The exit chain steps as
        :meth:`EarlyExitUploadModel._exit_chain` fills it (token 0 exits when
        ``u < exit_prob``, token k when ``u < P[e_{k-1}, 1]``), the channel as
        :meth:`EarlyExitUploadModel._fsmc_path` (``bisect_right`` in the FSMC's cumulative
        rows), the confidences as :meth:`EarlyExitUploadModel.confidences`."""
        m, ua = self.model, self._u_arr
        K, h1 = m.K, self._H - 1
        k0 = self._known
        k1 = min(max(2 * k0, _GROW_TOKENS), K)  # a block at first, then doubling
        # The first block converts only the uniforms it reads to Python floats (reset and
        # short episodes); past it, the whole episode's, once.
        u = self._u
        if u is None and k1 > _GROW_TOKENS:
            u = self._u = ua.tolist()

        def part(a: int, b: int) -> list[float]:
            return ua[a:b].tolist() if u is None else u[a:b]

        ex, conf = self._ex, self._conf
        p01, p11 = m._p_exit
        lo = m.cfg.exit_threshold
        span = 1.0 - lo
        c0 = 2 * K + h1
        if k0 == 0:
            e = ua.item(0) < m.cfg.exit_prob
            ex.append(e)
            x = ua.item(c0)
            conf.append(lo + x * span if e else x * lo)
            k0 = 1
        else:
            e = ex[-1]
        for x, y in zip(part(k0, k1), part(c0 + k0, c0 + k1), strict=True):
            e = x < (p11 if e else p01)
            ex.append(e)
            conf.append(lo + y * span if e else y * lo)
        st = self._st
        t0 = len(st)
        if t0 < k1 + h1:
            cum, br = m._fsmc_cum, bisect.bisect_right
            snr_db, snr_obs, rate = m._state_snr_db, m._state_snr_obs, m._state_rate
            s = st[-1]
            new = []
            for x in part(K + t0, K + k1 + h1):
                s = br(cum[s], x)
                new.append(s)
            st += new
            self._sd += map(snr_db.__getitem__, new)
            self._so += map(snr_obs.__getitem__, new)
            self._rt += map(rate.__getitem__, new)
        self._known = k1
        return k1

    def _token_effect(
        self, k: int, b: int, n: int, rate: float, timer: int, exited: int
    ) -> tuple[Any, ...]:
        """What token ``k`` adds (:meth:`EarlyExitUploadModel.token_cost`'s latency, energy,
        stall, airtime and wake flag, the bytes sent) and the backlog after it."""
        t_dev, t_next, not_last, t_srv, cost_at, transition, bits = self._cost_args
        cost = cost_at(t_dev[k], t_next[k], not_last[k], t_srv(k, b + 1), n, rate, timer, exited)
        return (*cost, n * bits / 8.0, transition(b, timer, n)[0])

    def _advance(
        self, acc: tuple[float, ...], n_decision: int | None, stop: int | None = None
    ) -> tuple[float, ...]:
        """Process the decision token (uploading ``n_decision`` states; None at reset: no
        decision) and the forced tokens after it up to the next decision or the end (or
        token ``stop``, excluded); return ``acc`` (sums in ``ACCOUNT_KEYS`` order) with
        their costs added."""
        lat, en, stl, air, sent, wakes, comp, toks, vol, forced, lim, flush = acc
        K, limit, h1, tail, dev_energy, timer_after = self._hot
        memo, effect_of = self._memo, self._token_effect
        run, sent1 = self._run, self._sent1
        ex, st, rt = self._ex, self._st, self._rt
        k, b, timer = self._k, self._backlog, self._timer
        known = self._known
        n = n_decision
        end = K if stop is None else stop
        while k < end:
            if k >= known:
                known = self._grow()
            if n is not None:  # the decision token: it exited, the action chose n
                exited, voluntary = 1, True
            elif not ex[k]:  # not exited: forced upload of the backlog and itself
                n, exited, voluntary = b + 1, 0, False
            elif b >= limit:  # exited with a full backlog: forced upload
                lim += 1.0
                n, exited, voluntary = b + 1, 1, False
            else:
                break  # a decision token: the agent acts on it
            # (b <= limit always, so the server table's column b + 1 exists)
            if memo is None:
                effect = effect_of(k, b, n, rt[k + h1], timer, exited)
            else:
                key = (k, b, n, st[k + h1], timer >= tail, exited)
                effect = memo.get(key)
                if effect is None:
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    effect = memo[key] = effect_of(k, b, n, rt[k + h1], timer, exited)
            latency, energy, stall, airtime, wake, sent_bytes, b = effect
            lat += latency
            en += energy
            stl += stall
            air += airtime
            sent += sent_bytes
            wakes += wake
            comp += dev_energy[k]
            toks += 1
            if not exited:
                forced += 1.0
            elif voluntary:
                vol += float(n > 0)
            timer = timer_after[n > 0][timer]
            k += 1
            n = None
            if run is not None and b == 0 and timer == 0:
                # A run of non-exited tokens from backlog 0 with the radio in its tail (each
                # uploads its own state and leaves them so): their costs from the run table,
                # added in token order as above (wakeups add 0: the radio is awake).
                while k < end:
                    if k >= known:
                        known = self._grow()
                    if ex[k]:
                        break
                    latency, energy, stall, airtime = run[k][st[k + h1]]
                    lat += latency
                    en += energy
                    stl += stall
                    air += airtime
                    sent += sent1
                    comp += dev_energy[k]
                    toks += 1
                    forced += 1.0
                    k += 1
            if k == K:
                self._done = True
                if self.config.flush_at_end and b > 0:
                    m = self.model
                    e = float(m.flush_energy(b, rt[k - 1 + h1], timer))
                    en += e
                    flush += e
                    sent += b * m.state_bits / 8.0
                    wakes += float(timer >= m.tail_steps)
                    b = 0
        self._k, self._backlog, self._timer = k, b, timer
        return lat, en, stl, air, sent, wakes, comp, toks, vol, forced, lim, flush

    def _obs(self) -> np.ndarray:
        H, k = self._H, self._k
        if not self._done:
            rate = self._rt[k + H - 1] / self._mean_rate
            return np.asarray(
                [
                    *self._so[k + H - 1 : k - 1 if k else None : -1],
                    self._backlog_obs[self._backlog],
                    self._left_obs[k],
                    self._ctx_obs[k],
                    1.0 if self._ex[k] else 0.0,
                    self._conf[k],
                    self._radio_obs[self._timer],
                    rate if rate < 1.0 else 1.0,
                ],
                _FLOAT32,
            )
        j = k - 1  # the last token's channel after the end
        rate = self._rt[j + H - 1] / self._mean_rate
        return np.asarray(
            [
                *self._so[j + H - 1 : j - 1 if j else None : -1],
                self._backlog_obs[self._backlog],
                self._left_obs[k],
                self._ctx_obs[k],
                0.0,
                0.0,
                self._radio_obs[self._timer],
                rate if rate < 1.0 else 1.0,
            ],
            _FLOAT32,
        )

    def _fill_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """The full `info` (see the class docstring): ``info`` (from :func:`_info_base`) with
        the state after the step."""
        k = self._k
        j = k + self._H - 1 if k < self._K else k + self._H - 2
        info["token_index"] = k
        info["backlog"] = self._backlog
        info["snr_db"] = self._sd[j]
        info["channel_state"] = self._st[j]
        info["radio_timer"] = self._timer
        info["action_mask"] = self._mask.copy()  # a new array: infos must not share data
        return info

    def _lean_info(self, acc: tuple[float, ...]) -> dict[str, Any]:
        lat, en, stl, _, sent, wakes, comp, _, vol, forced, lim, _ = acc
        self._episode.append(acc)
        info = {
            "latency_s": lat,
            "energy_J": en,
            "stall_s": stl,
            "bytes_sent": sent,
            "forced_uploads": forced,
            "voluntary_uploads": vol,
            "limit_uploads": lim,
            "wakeups": wakes,
            "compute_energy_J": comp,
        }
        if self._done:
            # Episode totals: each key's step values summed in step order (as a running sum).
            totals = np.add.accumulate(np.array(self._episode), axis=0)[-1].tolist()
            info.update(zip(EPISODE_KEYS, [totals[i] for i in _LEAN_INDEX], strict=True))
        return info

    def _check_options(self, options: dict[str, Any]) -> dict[str, np.ndarray]:
        """The reset options as arrays for :meth:`EarlyExitUploadModel.sample_episode`
        (``ValueError`` naming a bad one; checked before anything is drawn)."""
        allowed = {"exit_sequence", "channel_states"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"reset options {unknown}: unknown; allowed: {sorted(allowed)}")
        m, out = self.model, {}
        if "exit_sequence" in options:
            seq = np.asarray(options["exit_sequence"])
            if seq.shape != (m.K,) or not np.isin(seq, (0, 1)).all():
                raise ValueError(
                    f"reset option exit_sequence={options['exit_sequence']!r}: must be "
                    f"{m.K} values in {{0, 1}}"
                )
            out["exits"] = seq.astype(np.int8)
        if "channel_states" in options:
            if self.config.channel != "fsmc":
                raise ValueError("reset option channel_states: only with channel='fsmc'")
            seq = np.asarray(options["channel_states"])
            n = m.K + self._H - 1
            if (
                seq.shape != (n,)
                or not np.issubdtype(seq.dtype, np.integer)
                or seq.min() < 0
                or seq.max() >= m.fsmc.n_states
            ):
                raise ValueError(
                    f"reset option channel_states={options['channel_states']!r}: must be "
                    f"{n} integers in [0, {m.fsmc.n_states - 1}]"
                )
            out["states"] = seq.astype(np.int64)
        return out


# Per-step accounting in `info` (summed over the tokens a step processes).
ACCOUNT_KEYS = (
    "latency_s",
    "energy_J",
    "stall_s",
    "airtime_s",
    "bytes_sent",
    "wakeups",
    "compute_energy_J",
    "tokens",
    "voluntary_uploads",
    "forced_uploads",
    "limit_uploads",
    "flush_energy_J",
)
# info="lean": the learning-curve metrics per step, their episode totals at the end.
LEAN_KEYS = tuple(EarlyExitUploadEnv.metadata["info_metrics"])
EPISODE_KEYS = tuple(f"episode_{k}" for k in LEAN_KEYS)
_LEAN_INDEX = tuple(ACCOUNT_KEYS.index(k) for k in LEAN_KEYS)
ZERO_ACC = (0.0,) * len(ACCOUNT_KEYS)
# The full info's keys in order: the sums, the state after the step, the reward's terms
# (reset's info has no cost terms).
_STATE_KEYS = ("token_index", "backlog", "snr_db", "channel_state", "radio_timer", "action_mask")
_RESET_INFO = dict.fromkeys(ACCOUNT_KEYS + _STATE_KEYS)
_STEP_INFO = dict.fromkeys(ACCOUNT_KEYS + _STATE_KEYS + ("latency_cost", "energy_cost"))


def _info_base(
    acc: tuple[float, ...], latency_cost: float | None = None, energy_cost: float = 0.0
) -> dict[str, Any]:
    """The full info's keys in order, with the sums ``acc`` and (a step's) cost terms; the
    state keys are filled by ``EarlyExitUploadEnv._fill_info``."""
    if latency_cost is None:
        info = _RESET_INFO.copy()
        info.update(zip(ACCOUNT_KEYS, acc, strict=True))
        return info
    info = _STEP_INFO.copy()
    info.update(zip(ACCOUNT_KEYS, acc, strict=True))
    info["latency_cost"] = latency_cost
    info["energy_cost"] = energy_cost
    return info


_RESET_ZERO_INFO = _info_base(ZERO_ACC)  # reset's info when no token was processed
_N_ACC = len(ACCOUNT_KEYS)
# A decision-table row's keys in the full info: the sums, then the two cost terms.
_SUM_COST_KEYS = ACCOUNT_KEYS + ("latency_cost", "energy_cost")
_INT64 = np.int64


# fsmc mode: tokens the first _grow works out (reset works out token 0; _grow doubles them as
# the episode reaches them).
_GROW_TOKENS = 8
_FLOAT32 = np.dtype(np.float32)
# fsmc mode: memoised token costs kept (the memo is emptied when it reaches this size).
_MEMO_MAX = 1 << 18
# fsmc mode: memoised decision steps kept (each ~1 kB with its info dict; the default config
# fills ~6.4k of them in 100k random steps).
_STEP_MEMO_MAX = 1 << 16
# fsmc mode: the largest table of decision-token rows (15 floats) an env builds.
_DECISION_TABLE_ROWS = 1 << 16
# fsmc mode: the largest table of run-token costs ((token, FSMC state) entries) an env builds.
_RUN_TABLE_ENTRIES = 1 << 16
