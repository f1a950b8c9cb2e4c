"""Cut layer, LoRA rank and bandwidth allocation for split / split-federated / federated LLM
fine-tuning over a shared wireless band.

The domain model is :class:`mei_envs.split_fed.SplitFedModel` (cost tables, round time,
energy, min-max bandwidth split) and :mod:`mei_envs.training` (fitted loss-vs-tokens model);
this module maps them to Gymnasium spaces and rewards. Baselines and oracles in
``mei_envs.baselines.split_fed`` call the same model.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from mei_envs import hardware, radio, wireless
from mei_envs.config import ConfigError
from mei_envs.envs.base import MeiEnv
from mei_envs.llm import catalog, costs
from mei_envs.split_fed import (
    _SEQUENTIAL_BUILTIN_SUM,
    ARRAY_OPS,
    FLOAT_OPS,
    LORA_TARGETS,
    SplitFedModel,
    minmax_shares_float,
    pairwise_sum,
    round_costs_devices,
    round_costs_float,
    spectral_efficiency,
)

SCHEMES = ("sfl", "sl", "fl")
ACTION_MODES = ("continuous", "discrete")
ALLOCATION_RULES = ("equal", "proportional", "minmax")
TARGET_CHOICES = tuple(LORA_TARGETS)
INFO_LEVELS = ("full", "lean")


@dataclasses.dataclass(frozen=True)
class SplitFedAllocConfig(wireless.UplinkChannelConfig):
    """Configuration of :class:`SplitFedAllocEnv`; every default names its source.

    Uplink fields (channel process, total band, transmit power, noise, link adaptation)
    come from :class:`mei_envs.wireless.UplinkChannelConfig`; ``distance_m`` is re-declared
    as the farthest device's distance.
    """

    preset: str = "default"
    scheme: str = "sfl"  # "sfl" (parallel split-federated), "sl" (sequential split), "fl"
    action_mode: str = "continuous"  # "continuous" (Box) or "discrete" (MultiDiscrete)
    # --- model and fine-tuning job (cost tables: mei_envs.llm) ---
    model: str = "llama-3.2-1b"  # 16 blocks, h = 2048 (REFERENCE.md 3)
    batch: int = 4  # sequences per device per round
    seq_len: int = 512  # tokens per sequence
    weight_precision: str = "fp16"
    act_precision: str = "fp16"  # smashed data and its gradient
    adapter_precision: str = "fp32"  # adapters are trained and exchanged in fp32 (costs.py)
    lora_targets: str = "all_linear"  # "attention" (q, k, v) or "all_linear" (QLoRA)
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16)  # the fit's ranks (fit_training_progress.py)
    aggregation_interval: int = 5  # FedAvg of device-side adapters every I rounds
    noniid: float = 0.5  # data heterogeneity Gamma in [0, 1] (1 = one topic per device)
    # --- devices and server (mei_envs/data/hardware.csv) ---
    n_devices: int = 5
    device_types: tuple[str, ...] = ("snapdragon_8_gen3", "apple_a17_pro", "jetson_orin_nano")
    # Share of a device's memory the fine-tuning job may use (the OS and other apps hold
    # the rest): an ASSUMPTION, no published figure.
    device_memory_fraction: float = 0.5
    server: str = "l4"  # edge GPU
    radio_profile: str = "nr_drx"  # UE transmit power line (mei_envs.radio)
    # --- uplink channel (UplinkChannelConfig) and downlink ---
    bandwidth_hz: float = 20.0e6  # total uplink band shared by the devices (one NR carrier)
    distance_m: float = 200.0  # farthest device [m] (REFERENCE.md 5: U(50, 200) m)
    min_distance_m: float = 50.0  # nearest device [m] (REFERENCE.md 5)
    shadowing_std_db: float = 8.0  # log-normal shadowing, 3GPP TR 36.814 macro
    downlink_bandwidth_hz: float = 20.0e6  # total downlink band
    # Base-station power spectral density: 46 dBm over 10 MHz (3GPP TR 36.814 Table
    # A.2.1.1-2, macro) = -24 dBm/Hz.
    downlink_psd_dbm_per_hz: float = -24.0
    # --- training progress (mei_envs.training, fitted) and episode ---
    # Env tokens -> tokens of the fitted curve: a 1B model on real text has its own scale;
    # chosen so the default episode runs ~100-200 rounds (a modelling choice).
    tokens_multiplier: float = 0.25
    target_loss_fraction: float = 0.25  # target = floor + 0.25 (L0 - floor) at the top rank
    time_budget_s: float = 5000.0  # truncation [s] of wall-clock training time
    max_rounds: int = 2000  # truncation in rounds (safety net)
    lambda_energy: float = 0.0  # weight of device energy in the reward
    # continuous shares = softmax(scale * a), a in [-1, 1]: shares within a factor e^3 ~ 20
    # of each other (the min-max splits of the presets stay within ~10)
    share_logit_scale: float = 1.5
    # per-step info: "full" (every key, see the docstring) or "lean" (the learning-curve
    # metrics of metadata["info_metrics"] and, at the episode end, their episode totals)
    info: str = "full"

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {},
        # Few strong devices next to a strong server: communication dominates.
        "few_devices": {"n_devices": 3},
        # Many devices on a weak edge server (a Jetson Orin Nano hub): the server's time
        # grows with N, so the oracle moves blocks to the devices, up to their memory.
        "many_devices_weak_server": {"n_devices": 10, "server": "jetson_orin_nano"},
        # Weak server with a wide band: compute and communication are close, and the best
        # cut depends on which devices the episode draws.
        "weak_server_wide_band": {
            "n_devices": 6,
            "server": "jetson_orin_nano",
            "bandwidth_hz": 100.0e6,
            "downlink_bandwidth_hz": 100.0e6,
        },
        "strong_server": {"server": "a100_80gb"},
        # Narrow band (5 MHz each way): every bit counts, lower rank / FL.
        "narrow_band": {"bandwidth_hz": 5.0e6, "downlink_bandwidth_hz": 5.0e6},
        # Wide band (100 MHz each way, an n78 carrier): compute dominates.
        "wide_band": {"bandwidth_hz": 100.0e6, "downlink_bandwidth_hz": 100.0e6},
        "attention_only": {"lora_targets": "attention"},
        # Jetsons only with more memory to spare: federated learning becomes feasible.
        "jetson_fleet": {
            "device_types": ("jetson_orin_nano", "jetson_agx_orin"),
            "device_memory_fraction": 0.8,
        },
    }

    def validate(self) -> None:
        name = type(self).__name__
        self._check_choice("preset", self.PRESETS)
        self.validate_uplink()
        self._check_choice("scheme", SCHEMES)
        self._check_choice("action_mode", ACTION_MODES)
        if self.model not in catalog.list_models():
            raise ConfigError(
                f"{name}.model={self.model!r}: must be one of {catalog.list_models()}"
            )
        self._check_range("batch", 1, 256, integer=True)
        self._check_range("seq_len", 1, 8192, integer=True)
        for field in ("weight_precision", "act_precision"):
            self._check_choice(field, ("fp32", "fp16", "bf16"))
        self._check_choice("adapter_precision", ("fp32", "fp16", "bf16"))
        self._check_choice("lora_targets", TARGET_CHOICES)
        r = self.ranks
        if (
            len(r) < 1
            or len(r) > 16
            or any(isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= 1024 for x in r)
            or list(r) != sorted(set(r))
        ):
            raise ConfigError(
                f"{name}.ranks={list(r)!r}: must be 1 to 16 strictly increasing integers "
                "in [1, 1024]"
            )
        self._check_range("aggregation_interval", 1, 1000, integer=True)
        self._check_range("noniid", 0.0, 1.0)
        self._check_range("n_devices", 1, 256, integer=True)
        known = hardware.list_hardware()
        if (
            len(self.device_types) < 1
            or len(set(self.device_types)) != len(self.device_types)
            or any(t not in known for t in self.device_types)
        ):
            raise ConfigError(
                f"{name}.device_types={list(self.device_types)!r}: must be distinct names "
                f"from {known}"
            )
        self._check_range("device_memory_fraction", 0.0, 1.0, lo_open=True)
        if self.server not in known:
            raise ConfigError(f"{name}.server={self.server!r}: must be one of {known}")
        self._check_choice("radio_profile", radio.list_profiles())
        self._check_range("bandwidth_hz", 1e3, 1e10)
        self._check_range("downlink_bandwidth_hz", 1e3, 1e10)
        self._check_range("tx_power_w", 1e-4, 10.0)
        self._check_range("distance_m", 1.0, 1e5)
        self._check_range("min_distance_m", 1.0, self.distance_m)
        self._check_range("shadowing_std_db", 0.0, 30.0)
        self._check_range("downlink_psd_dbm_per_hz", -100.0, 10.0)
        self._check_range("tokens_multiplier", 1e-6, 1e6)
        self._check_range("target_loss_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
        self._check_range("time_budget_s", 0.0, 1e9, lo_open=True)
        self._check_range("max_rounds", 1, 1_000_000, integer=True)
        self._check_range("lambda_energy", 0.0, 1e6)
        self._check_range("share_logit_scale", 0.0, 50.0, lo_open=True)
        self._check_choice("info", INFO_LEVELS)
        self._check_memory()

    def _check_memory(self) -> None:
        """Every device type must hold the shallowest cut the scheme allows at the lowest
        rank (else no round is possible)."""
        arch = catalog.get_architecture(self.model)
        cut = arch.n_layers if self.scheme == "fl" else 1
        need = costs.device_memory_bytes(
            arch,
            cut,
            mode="lora",
            seq_len=self.seq_len,
            batch=self.batch,
            weight_precision=self.weight_precision,
            act_precision=self.act_precision,
            lora_rank=int(self.ranks[0]),
            lora_targets=LORA_TARGETS[self.lora_targets],
            include_lm_head=cut == arch.n_layers,
        )["total"]
        for t in self.device_types:
            usable = self.device_memory_fraction * hardware.get_hardware(t).memory_bytes
            if need > usable:
                raise ConfigError(
                    f"{type(self).__name__}.device_types: {t!r} has {usable / 1e9:.2f} GB usable "
                    f"(device_memory_fraction={self.device_memory_fraction}) but scheme "
                    f"{self.scheme!r} needs {need / 1e9:.2f} GB at cut {cut} and rank "
                    f"{self.ranks[0]}; use fewer tokens (batch, seq_len), a larger "
                    "device_memory_fraction or other devices"
                )


def book_round(env: Any, j: Any, k: Any, rt: Any, t_i: Any, e_total: Any) -> Any:
    """Close a round in the single env (floats) or the vector env (arrays, in place): the
    loss, round count, clocks, last device times and the channel move on; returns whether
    the target loss is reached."""
    m = env.model
    env._loss = m.next_loss(env._loss, j, k)
    env._round += 1
    env._time += rt
    env._energy += e_total
    env._last_t = t_i
    env._advance_channel()
    return env._loss <= m.target_loss + 1e-12


def link_rows(model: SplitFedModel, gain: Any, bandwidth_hz: float, ops: Any = ARRAY_OPS) -> tuple:
    """A device's link in a round from its power gain ``gain`` (mean gain times fading; a
    float with ``FLOAT_OPS`` in the single env, arrays in the vector env): (uplink
    SNR-bandwidth product [Hz], downlink SNR, downlink spectral efficiency [bit/s/Hz],
    observation entry: uplink SNR over the whole band [dB] / 40, clipped to [-1, 1])."""
    gamma, snr_d = model.link_params(gain)
    eff = spectral_efficiency(snr_d, model.band, ops)
    o = 10.0 * ops.log10(ops.maximum(gamma / bandwidth_hz, 1e-30)) / 40.0
    return gamma, snr_d, eff, ops.minimum(ops.maximum(o, -1.0), 1.0)


# Rounds of fading draws taken from the generator at a time (single and vector env).
BLOCK_ROUNDS = 64
# A round lasts seconds; the channel moves one block per nominal round of this length.
ROUND_SLOT_S = 1.0
# First zero of the Bessel J0 (rounded down, so J0 > 0 there).
_J0_FIRST_ZERO = 2.4048


def _channel_slot_s(cfg: SplitFedAllocConfig) -> float:
    """Slot of the uplink model: one nominal round, or shorter where Jakes' correlation
    would turn negative (past J0's first zero consecutive rounds' fading is treated as
    independent, rho ~ 0; the Gauss-Markov model needs rho >= 0)."""
    f_d = float(wireless.doppler_hz(cfg.speed_mps, cfg.carrier_hz))
    if f_d * ROUND_SLOT_S * 2.0 * np.pi <= _J0_FIRST_ZERO:
        return ROUND_SLOT_S
    return _J0_FIRST_ZERO / (2.0 * np.pi * f_d)


class SplitFedAllocEnv(MeiEnv[np.ndarray, np.ndarray]):
    """
    ## Description

    ``n_devices`` edge devices fine-tune an LLM (``model``) with LoRA together with an edge
    server. Each **round** every device trains its bottom blocks ``[0, cut)`` on a batch of
    ``batch`` x ``seq_len`` tokens, uploads the smashed data (``b*s*h*bytes``), the server
    runs the other blocks forward and backward and returns the gradient; every
    ``aggregation_interval`` rounds the device-side adapters are averaged (FedAvg). The
    round time, energy and memory come from the shared cost tables, roofline hardware model,
    link model and radio model through :class:`mei_envs.split_fed.SplitFedModel` (its
    docstring states the server compute-sharing rule: equal processor sharing among the
    devices' jobs). Training progress follows :mod:`mei_envs.training`, fitted to real LoRA
    fine-tuning curves: higher rank lowers the loss floor, a deeper cut averages more
    adapters and so suffers more non-IID client drift, larger aggregated batches are worth
    less per token.

    The operator chooses the cut and the LoRA rank at the start of each aggregation period
    (every ``aggregation_interval`` rounds in ``sfl``/``fl``; every round in ``sl``, whose
    adapters are relayed each turn) and the bandwidth shares every round. The slowest device
    sets the round time. Devices (type drawn uniformly from ``device_types``, distance
    uniform in ``[min_distance_m, distance_m]``, log-normal shadowing) are drawn at reset;
    small-scale fading is drawn every round from the uplink channel model (``channel``:
    ``fsmc`` or ``gauss_markov``, one slot per nominal 1 s round, Jakes correlation; at
    pedestrian speed consecutive rounds are independent), the same
    power gain on the downlink (TDD reciprocity). The channel of a round is seen before
    acting (the observation holds it). The env takes the fading draws from ``np_random`` in
    blocks of ``BLOCK_ROUNDS`` rounds and, at an episode's end or a reset, puts the generator
    back where one draw per round would leave it: the same numbers, and the same generator
    state between episodes (someone drawing from ``np_random`` in the middle of an episode
    gets numbers the env has drawn ahead).

    ## Action Space

    ``action_mode="continuous"`` (default): ``Box(-1, 1, (2 + n_devices,), float32)``.
    ``a[0]`` picks the cut among the scheme's allowed cuts (``sfl``: 1..L, where L is FL;
    ``sl``: 1..L-1; ``fl``: L) by rounding ``(a[0] + 1) / 2 * (n_cuts - 1)``; ``a[1]`` picks
    the rank index the same way among ``ranks``; ``a[2:]`` are the bandwidth shares
    ``softmax(share_logit_scale * a[2:])`` (ignored in ``sl``, where each turn has the whole
    band). Cut and rank are ignored inside an aggregation period (``info["decision_epoch"]``
    is False there). A scalar action fills every entry (``0``: the middle cut, the middle
    rank, equal shares; ``1``: the deepest cut, the top rank, equal shares).

    ``action_mode="discrete"``: ``MultiDiscrete([n_cuts, len(ranks), 3])``: cut index, rank
    index and an allocation rule (0 equal, 1 proportional to spectral efficiency, 2 the
    exact min-max split). ``action_masks()`` (and ``info["action_mask"]``) mark cuts that
    do not fit some device's memory even at the lowest rank.

    A (cut, rank) whose device-side memory exceeds some device's usable memory is **clipped**:
    to the deepest feasible cut at that rank (shallower only if none), lowering the rank if no
    cut fits; ``info["cut_clipped"]``/``info["rank_clipped"]`` report it.

    ## Observation Space

    ``Box(-1, 1, (4 * n_devices + 6,), float32)``; device ``i``'s four entries are at
    ``4i .. 4i+3`` (a fixed layout for a given device count):

    | index | observation | min | max |
    |---|---|---|---|
    | 4i | uplink SNR over the whole band this round [dB] / 40, clipped | -1 | 1 |
    | 4i+1 | log10(device effective TFLOP/s) / 2, clipped | -1 | 1 |
    | 4i+2 | memory headroom: deepest feasible cut at the lowest rank / L | 0 | 1 |
    | 4i+3 | device's last round time / (4 ref round time), clipped | 0 | 1 |
    | 4N | loss progress: (loss - target) / (L0 - target) | 0 | 1 |
    | 4N+1 | ((I - round mod I) mod I) / I: rounds to the period's end, 0 at its start | 0 | 1 |
    | 4N+2 | time used / time_budget_s | 0 | 1 |
    | 4N+3 | current cut / L | 0 | 1 |
    | 4N+4 | current rank index / (len(ranks) - 1) (0 with one rank) | 0 | 1 |
    | 4N+5 | 1 at a decision epoch (cut and rank may change), else 0 | 0 | 1 |

    ## Rewards

    Per round ``-(round_time_s / ref_time_s + lambda_energy * energy_J / ref_energy_J)``,
    where the references are the round time and device energy of the reference action
    (middle feasible cut, middle rank, equal split) on the episode's devices without fading.
    With ``lambda_energy = 0`` (default) the return is minus the time to target in units of
    the reference round.

    ``info`` (config field ``info``): ``"full"`` (default) carries ``round_time_s``,
    ``device_times_s``, ``energy_J``, ``device_energy_J``, ``loss``, ``cut``, ``rank``,
    ``shares``, ``straggler``, ``time_s``, ``rounds``, ``cut_clipped``, ``rank_clipped``,
    ``decision_epoch``, ``aggregated``, ``reached_target``, ``time_cost``, ``energy_cost`` and
    ``action_mask`` every step (reset: ``loss``, ``time_s``, ``action_mask``). ``"lean"``
    carries only the learning-curve keys of ``metadata["info_metrics"]`` (``round_time_s``,
    ``energy_J``, ``rounds``, ``cut``, ``rank``, ``loss``, ``reached_target``,
    ``cut_clipped``) and, on the step that ends an episode, their totals ``episode_<key>``
    (sum, mean over rounds or last value, per the metadata); the reset info is empty. The
    native vector env (:mod:`mei_envs.envs.split_fed_alloc_vector`, ``gym.make_vec(...,
    vectorization_mode="vector_entry_point")``) always reports the lean keys.

    ## Starting State

    Loss at the fitted initial loss ``L0``; devices and the first round's fading drawn from
    ``np_random``; the current cut/rank are the reference action's until the first decision.

    ## Episode End

    Terminates when the loss reaches the target ``floor + target_loss_fraction * (L0 -
    floor)`` (floor of the top rank). Truncates when the training time reaches
    ``time_budget_s`` or after ``max_rounds`` rounds.

    ## Arguments

    ``gym.make("mei_envs/SplitFedAlloc-v0", preset=..., config={...})`` or keyword
    arguments; the fields of :class:`SplitFedAllocConfig` and its ``PRESETS``.

    ## Version History

    * v0: initial version. Issue 12 added the ``info`` level and the native vector env and
      made the step faster; recorded trajectories are unchanged bit for bit
      (``tests/test_split_fed_pinned.py``).
    """

    config_class = SplitFedAllocConfig
    metadata = {
        "render_modes": [],
        "info_metrics": {
            "round_time_s": "sum",
            "energy_J": "sum",
            "rounds": "sum",
            "cut": "mean",
            "rank": "mean",
            "loss": "last",
            "reached_target": "last",
            "cut_clipped": "sum",
        },
    }

    def _setup(self, cfg: SplitFedAllocConfig) -> None:
        m = SplitFedModel(cfg)
        self.model = m
        N, K = cfg.n_devices, m.K
        self.n_cuts = int(m.allowed_cuts.size)
        if cfg.action_mode == "continuous":
            self.action_space = spaces.Box(-1.0, 1.0, shape=(2 + N,), dtype=np.float32)
        else:
            self.action_space = spaces.MultiDiscrete([self.n_cuts, K, len(ALLOCATION_RULES)])
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(4 * N + 6,), dtype=np.float32)
        self._ref_cut_j = int(m.allowed_cuts[(self.n_cuts - 1) // 2]) - 1
        self._ref_rank_k = (K - 1) // 2
        self.channel = wireless.build_uplink(cfg, _channel_slot_s(cfg))
        self._lean = cfg.info == "lean"
        self._continuous = cfg.action_mode == "continuous"
        self._act_shape = self.action_space.shape
        # pairwise_sum of the N softmax weights is the builtin sum (see pairwise_sum)
        self._builtin_sum = _SEQUENTIAL_BUILTIN_SUM and N < 8
        self._sl = cfg.scheme == "sl"
        self._interval = m.interval
        self._types: np.ndarray | None = None
        self._done = True  # no episode yet (step checks this flag only)
        self._build_tables()

    def _build_tables(self) -> None:
        """Per-episode quantities that depend only on the device types, tabulated per type
        (memory feasibility follows the device with the least usable memory)."""
        cfg, m = self.config, self.model
        allowed = m.allowed_cuts - 1
        self._allowed_list = allowed.tolist()
        self._ranks_list = m.ranks.tolist()
        self._feasible_by_type = []
        self._mask_by_type = []
        self._headroom_by_type = []
        for d in range(len(cfg.device_types)):
            feas = m.mem_need_bytes <= m.usable_memory_bytes[d]
            feas.setflags(write=False)
            self._feasible_by_type.append(feas)
            cut_ok = feas[allowed, 0]
            if cfg.action_mode == "continuous":
                mask = cut_ok.copy()
            else:
                mask = np.concatenate(
                    [cut_ok, np.ones(m.K, dtype=bool), np.ones(len(ALLOCATION_RULES), bool)]
                )
            mask.setflags(write=False)
            self._mask_by_type.append(mask)
            deepest = int(np.where(cut_ok, allowed + 1, 0).max())
            self._headroom_by_type.append(deepest / m.L)
        self._usable_list = m.usable_memory_bytes.tolist()
        tflops = np.clip(np.log10(m.device_tflops) / 2.0, -1.0, 1.0)
        self._tflops_obs = tflops.tolist()
        self._clip_cache: dict[tuple[int, int, int], tuple[int, int, bool, bool]] = {}
        N = cfg.n_devices
        if self.channel.mode == "fsmc":
            fsmc = self.channel.fsmc
            # the chain's own cumulative tables (FiniteStateMarkovChannel.step/sample_initial)
            self._cum_rows = fsmc._cum.tolist()
            self._cum_pi = fsmc._cum_pi.tolist()
            self._fade_list = (fsmc.snr_linear / self.channel.mean_snr).tolist()
            self._gm = None
            self._n_states = fsmc.n_states
            # an episode's link rows per device and FSMC state (filled as states occur)
            self._row_cache: list[list[Any]] = []
            self._draws_per_round = N  # uniforms
        else:
            self._gm = wireless.GaussMarkovFading(
                self.channel.rho, k_factor=self.config.k_factor, n_links=N
            )
            self._draws_per_round = 2 * N  # normals (real, then imaginary parts)
        # the observation as floats; the device compute and memory entries are set at reset
        self._obs_vals = [0.0] * (4 * N + 6)
        # packers of the observation (float32) and of the full info's per-device float64
        # arrays: struct's C cast of each float to float32 is numpy's (round to nearest), and
        # a bytearray of packed floats read by np.frombuffer costs ~2/3 of np.array(list);
        # format strings, not Struct objects (those do not pickle; struct caches them)
        self._obs_format = f"{4 * N + 6}f"
        self._devices_format = f"{3 * N}d"
        # (cut index, rank index) -> the round's constants (see _set_cut_rank)
        self._jk_consts: dict[tuple[int, int], tuple] = {}
        # SplitFedModel.link_params' constants: (tx power [W], downlink PSD [W/Hz], N0 [W/Hz])
        self._link_consts = (cfg.tx_power_w, m.downlink_psd_w_per_hz, m.noise_w_per_hz)
        self._span = m.initial_loss - m.target_loss
        # the fading draws of BLOCK_ROUNDS rounds at a time (see _round_draws)
        self._blk: Any = ()
        self._blk_pos = 0
        self._blk_rng: np.random.Generator | None = None
        self._blk_state: Any = None

    # ---- Gymnasium API -----------------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"reset options {sorted(options)}: this env takes none")
        self._new_episode(self.np_random)
        info = (
            {}
            if self._lean
            else {"loss": self._loss, "time_s": 0.0, "action_mask": self.action_masks().copy()}
        )
        return self._obs(), info

    def _new_episode(self, rng: np.random.Generator) -> None:
        """Draw an episode's devices and first fading from ``rng`` and start the episode's
        state (the native vector env calls it for each sub-env it resets, with that
        sub-env's generator: one copy of the reset)."""
        self._sync_draws()
        cfg, m = self.config, self.model
        N = cfg.n_devices
        types, dist, shadow, first = self._draw_episode(rng)
        self._types = types
        tl = types.tolist()
        self._types_l = tl
        gain = m.path_gain_list(dist, shadow.tolist())
        self._gain_l = gain
        if self._gm is None:
            cum = self._cum_pi
            self._states = [bisect.bisect_right(cum, u) for u in first.tolist()]
            S = self._n_states
            self._row_cache = [[None] * S for _ in tl]
            self._set_fsmc_rows(self._states)
        else:
            self._fade_l = fade = self._gm.reset(_Rows(first)).tolist()
            self._set_link_rows(self._link_row_list(gain, fade))
        usable = self._usable_list
        dmin = min(tl, key=usable.__getitem__)
        self._dmin = dmin
        self._feasible = self._feasible_by_type[dmin]
        vals, tf, head, n4 = self._obs_vals, self._tflops_obs, self._headroom_by_type, 4 * N
        vals[1:n4:4] = [tf[d] for d in tl]
        vals[2:n4:4] = [head[d] for d in tl]
        # The reference action on mean channels sets the reward scales.
        ref_j = self._clip(self._ref_cut_j, self._ref_rank_k)[0]
        self._ref_j, self._ref_k = ref_j, self._ref_rank_k
        rt, self.ref_energy_j = self._reference_round(tl, gain, ref_j)
        self.ref_time_s = rt
        self._obs_scale = 4.0 * rt
        self._loss = float(m.initial_loss)
        self._round = 0
        self._time = 0.0
        self._energy = 0.0
        self._cut_sum = self._rank_sum = self._clip_sum = 0
        # (cut index, rank index) -> the round's constants per device (this episode's)
        self._jk_dev: dict[tuple[int, int], tuple] = {}
        self._idle_i = [m.idle_power_list[d] for d in tl]
        # the reference (cut, rank); its constants are gathered at the first step (a reset
        # need not pay for them)
        self._cut_j, self._rank_k = ref_j, self._ref_k
        self._jk = None
        self._last_t = [0.0] * N
        self._done = False

    def _reference_round(self, types: list[int], gain: list[float], j: int) -> tuple[float, float]:
        """Round time [s] and device energy [J] (at least 1e-12) of the reference action (cut
        index ``j``, the middle rank, equal split, the amortised adapter exchange) on the
        devices' mean channels: the reward scales of an episode."""
        m, k = self.model, self._ref_rank_k
        gamma, eff_d = self._link(gain)
        rt, _, _, e = round_costs_float(
            1.0 / len(types),
            types,
            m.base_list[j][k],
            m.dev_train_list[j][k],
            m.round_bits(j, k, 1.0 / m.interval),
            gamma,
            eff_d,
            m.active_power_list,
            m.idle_power_list,
            m.band,
            m.radio,
            self._sl,
        )
        return rt, max(pairwise_sum(e), 1e-12)

    def _draw_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """An episode's draws from ``rng``, in order: device types, distances [m], shadowing
        [dB], and the first round's fading draws (FSMC: uniforms of the stationary state;
        Gauss-Markov: the (2, N) normals of the initial state)."""
        cfg = self.config
        N = cfg.n_devices
        types = rng.integers(0, len(cfg.device_types), size=N)
        dist = rng.uniform(cfg.min_distance_m, cfg.distance_m, size=N)
        shadow = rng.normal(0.0, cfg.shadowing_std_db, size=N)
        first = rng.random(N) if self._gm is None else rng.standard_normal((2, N))
        return types, dist, shadow, first

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            if self._types is None:
                raise RuntimeError("SplitFedAllocEnv.step called before reset()")
            raise RuntimeError("SplitFedAllocEnv.step called after the episode ended; reset()")
        cfg = self.config
        cut_pos, rank_k, share_spec = self._decode(action)  # validates; no state change yet
        rnd = self._round
        epoch = self._sl or rnd % self._interval == 0  # _decision_epoch()
        cut_clipped = rank_clipped = False
        if epoch:
            want_j = self._allowed_list[cut_pos]
            hit = self._clip_cache.get((self._dmin, want_j, rank_k))
            j, k, cut_clipped, rank_clipped = hit or self._clip(want_j, rank_k)
            if j != self._cut_j or k != self._rank_k or self._jk is None:
                self._set_cut_rank(j, k)
        j, k = self._cut_j, self._rank_k
        base, t_dev, compute_j, bits, bits_exchange, m = self._jk
        aggregate = 1.0 if (not self._sl and (rnd + 1) % self._interval == 0) else 0.0
        gamma = self._gamma  # this round's channel (the observation's)
        shares = (
            self._shares(share_spec, j, k, aggregate, gamma, self._snr_d)
            if type(share_spec) is str
            else share_spec
        )
        rt, t_i, _, energy = round_costs_devices(
            shares,
            base,
            t_dev,
            compute_j,
            self._idle_i,
            bits_exchange if aggregate else bits,
            gamma,
            self._eff_d,
            m.band,
            m.radio,
            self._sl,
        )
        e_total = pairwise_sum(energy)
        terminated = book_round(self, j, k, rt, t_i, e_total)
        truncated = not terminated and (
            self._time >= cfg.time_budget_s or self._round >= cfg.max_rounds
        )
        if terminated or truncated:
            self._done = True
            self._sync_draws()
        t_cost = rt / self.ref_time_s
        e_cost = cfg.lambda_energy * e_total / self.ref_energy_j
        cut, rank = j + 1, self._ranks_list[k]
        self._cut_sum += cut
        self._rank_sum += rank
        self._clip_sum += cut_clipped
        if self._lean:
            info = {
                "round_time_s": rt,
                "energy_J": e_total,
                "rounds": 1,
                "cut": cut,
                "rank": rank,
                "loss": self._loss,
                "reached_target": terminated,
                "cut_clipped": cut_clipped,
            }
            if self._done:
                info.update(self.episode_totals())
            return self._obs(), -(t_cost + e_cost), terminated, truncated, info
        # the three per-device arrays as views of one new array (one conversion, not three)
        n = len(t_i)
        per_device = _frombuffer(
            bytearray(
                _pack(
                    self._devices_format,
                    *t_i,
                    *energy,
                    *([shares] * n if type(shares) is float else shares),
                )
            ),
            np.float64,
        )
        info = {
            "round_time_s": rt,
            "device_times_s": per_device[:n],
            "energy_J": e_total,
            "device_energy_J": per_device[n : 2 * n],
            "loss": self._loss,
            "cut": cut,
            "rank": rank,
            "shares": per_device[2 * n :],
            "straggler": t_i.index(max(t_i)),
            "time_s": self._time,
            "rounds": 1,
            "cut_clipped": cut_clipped,
            "rank_clipped": rank_clipped,
            "decision_epoch": epoch,
            "aggregated": bool(aggregate),
            "reached_target": terminated,
            "time_cost": t_cost,
            "energy_cost": e_cost,
            # a copy: Gymnasium's checker warns about objects shared between infos
            "action_mask": self._mask_by_type[self._dmin].copy(),
        }
        return self._obs(), -(t_cost + e_cost), terminated, truncated, info

    def episode_totals(self) -> dict[str, Any]:
        """Per-episode totals of ``metadata["info_metrics"]`` so far, as ``episode_<key>``
        (sums, means over rounds, last values); the lean info adds them at the episode end."""
        n = max(self._round, 1)
        return {
            "episode_round_time_s": self._time,
            "episode_energy_J": self._energy,
            "episode_rounds": self._round,
            "episode_cut": self._cut_sum / n,
            "episode_rank": self._rank_sum / n,
            "episode_loss": self._loss,
            "episode_reached_target": self._loss <= self.model.target_loss + 1e-12,
            "episode_cut_clipped": self._clip_sum,
        }

    # ---- helpers for baselines and oracles ---------------------------------------------
    def decision_state(self) -> dict[str, Any]:
        """The true state an oracle acts on (copies): device types, mean gains, this round's
        fading, loss, round index, the current cut/rank indices, the (L, K) feasibility mask
        and whether cut/rank may change now."""
        return {
            "device_types": self._types.copy(),
            "gain": np.array(self._gain_l) * np.array(self._fading()),
            "loss": self._loss,
            "round": self._round,
            "cut_index": self._cut_j,
            "rank_index": self._rank_k,
            "feasible": self._feasible.copy(),
            "decision_epoch": self._decision_epoch(),
        }

    def action_masks(self) -> np.ndarray:
        """MultiDiscrete masks (cuts feasible at the lowest rank, all ranks, all rules);
        in continuous mode the cut mask alone. A cached read-only array."""
        return self._mask_by_type[self._dmin]

    def encode_action(self, cut: int, rank_index: int, shares: Any = None, rule: int = 2) -> Any:
        """The env action choosing ``cut`` (1..L), ``rank_index`` and ``shares`` (continuous:
        logits ``log(share) / scale``, shifted so the largest is 1, clipped at -1) or the
        allocation ``rule`` (discrete)."""
        pos = int(np.searchsorted(self.model.allowed_cuts, cut))
        if pos >= self.n_cuts or self.model.allowed_cuts[pos] != cut:
            raise ValueError(f"cut={cut!r}: allowed cuts are {self.model.allowed_cuts.tolist()}")
        if self.config.action_mode == "discrete":
            return np.array([pos, rank_index, rule], dtype=np.int64)
        a = np.empty(self.action_space.shape, dtype=np.float32)
        a[0] = 0.0 if self.n_cuts == 1 else 2.0 * pos / (self.n_cuts - 1) - 1.0
        a[1] = 0.0 if self.model.K == 1 else 2.0 * rank_index / (self.model.K - 1) - 1.0
        sh = np.full(self.config.n_devices, 1.0) if shares is None else np.asarray(shares, float)
        logits = np.log(np.maximum(sh, 1e-300)) / self.config.share_logit_scale
        a[2:] = np.clip(logits - logits.max() + 1.0, -1.0, 1.0)
        return a

    # ---- internals ---------------------------------------------------------------------
    def _decision_epoch(self) -> bool:
        return self._sl or self._round % self.model.interval == 0

    def _set_cut_rank(self, j: int, k: int) -> None:
        """Make (cut index ``j``, rank index ``k``) current, with its round constants: base
        and device compute times per device type, the bits of a round without and with the
        adapter exchange (:meth:`SplitFedModel.round_bits`), and the model."""
        self._cut_j, self._rank_k = j, k
        dev = self._jk_dev.get((j, k))
        if dev is None:
            c = self._jk_consts.get((j, k))
            m = self.model
            if c is None:
                c = (
                    m.base_list[j][k],
                    m.dev_train_list[j][k],
                    m.round_bits(j, k, 0.0),
                    m.round_bits(j, k, 1.0),
                )
                self._jk_consts[j, k] = c
            base, t_dev, bits, bits_exchange = c
            tl, active = self._types_l, m.active_power_list
            # gathered per device as round_costs_float gathers them
            dev = (
                [base[d] for d in tl],
                [t_dev[d] for d in tl],
                [active[d] * t_dev[d] for d in tl],
                bits,
                bits_exchange,
                m,
            )
            self._jk_dev[j, k] = dev
        self._jk = dev

    def _decode(self, action: Any) -> tuple[int, int, Any]:
        cfg, m = self.config, self.model
        if self._continuous:
            # the common case, a float array of the right shape: its floats as they are
            # (float32 -> Python float is exact, as through float64)
            if (
                type(action) is np.ndarray
                and action.shape == self._act_shape
                and action.dtype.kind == "f"
            ):
                al = action.tolist()
                # in the box, and no NaN (which max/min may skip; the sum carries it, and
                # is finite otherwise: NaN is the one float unequal to itself)
                ok = -1.0 <= min(al) and max(al) <= 1.0 and (t := sum(al)) == t
            else:
                ok = False
            if not ok:
                al = self._decode_continuous_checked(action)
            pos = round((al[0] + 1.0) * 0.5 * (self.n_cuts - 1))
            k = round((al[1] + 1.0) * 0.5 * (m.K - 1))
            # softmax(scale * a[2:]): max(scale * x) is scale * max(x) exactly (scale > 0
            # and rounding are monotone)
            scale = cfg.share_logit_scale
            logits = al[2:]
            zmax = scale * max(logits)
            exp = math.exp
            w = [exp(scale * x - zmax) for x in logits]
            # pairwise_sum (the builtin sum below 8 terms up to Python 3.11, inline)
            total = sum(w, -0.0) if self._builtin_sum else pairwise_sum(w)
            # v / total for each v (float.__rtruediv__: the same division, no Python frame)
            return pos, k, list(map(total.__rtruediv__, w))
        a = np.asarray(action)
        nvec = self.action_space.nvec
        al = a.tolist() if a.shape == (3,) and np.issubdtype(a.dtype, np.integer) else None
        if al is None or not (0 <= al[0] < self.n_cuts and 0 <= al[1] < m.K and 0 <= al[2] < 3):
            raise ValueError(
                f"action={action!r}: must be 3 integers with 0 <= a < {nvec.tolist()} "
                "(cut index, rank index, allocation rule)"
            )
        return al[0], al[1], ALLOCATION_RULES[al[2]]

    def _decode_continuous_checked(self, action: Any) -> list[float]:
        """The entries of a continuous action as floats, validated (a scalar fills every
        entry; entries within 1e-6 outside [-1, 1] are clipped)."""
        a = np.asarray(action, dtype=np.float64)
        if a.ndim == 0 and np.isfinite(a):
            a = np.full(self._act_shape, float(a))  # a scalar fills every entry
        al = a.tolist() if a.shape == self._act_shape else None
        if al is None or not all(map(math.isfinite, al)):
            raise ValueError(
                f"action={action!r}: must be {self._act_shape[0]} finite floats in [-1, 1]"
            )
        hi, lo = max(al), min(al)
        if hi > 1.0 + 1e-6 or lo < -1.0 - 1e-6:
            raise ValueError(f"action={action!r}: every entry must be in [-1, 1]")
        if hi > 1.0 or lo < -1.0:
            al = [min(max(x, -1.0), 1.0) for x in al]
        return al

    def _deepest_feasible(self, j: int, k: int) -> int:
        ok = self._feasible[self.model.allowed_cuts - 1, k]
        allowed = self.model.allowed_cuts - 1
        below = allowed[(allowed <= j) & ok]
        if below.size:
            return int(below.max())
        above = allowed[ok]
        return int(above.min()) if above.size else -1

    def _clip(self, j: int, k: int) -> tuple[int, int, bool, bool]:
        """Feasible (cut index, rank index) nearest the request, and what was clipped
        (memoised per least-memory device type)."""
        key = (self._dmin, j, k)
        hit = self._clip_cache.get(key)
        if hit is not None:
            return hit
        k0 = k
        while k >= 0:
            jj = self._deepest_feasible(j, k)
            if jj >= 0:
                out = (jj, k, jj != j, k != k0)
                self._clip_cache[key] = out
                return out
            k -= 1
        raise RuntimeError("no feasible cut at any rank (the config validation should prevent it)")

    def _link(self, gain: list[float]) -> tuple[list[float], list[float]]:
        """Per-device (uplink SNR-bandwidth product, downlink spectral efficiency) of power
        gains: the model's :meth:`~mei_envs.split_fed.SplitFedModel.link_params` and
        :func:`~mei_envs.split_fed.spectral_efficiency` on floats."""
        up, down, n0 = self._link_consts
        _, _, lo, hi = self.model.band
        log2 = math.log2
        eff = []
        for g in gain:
            e = log2(1.0 + down * g / n0)
            e = lo if lo > e else e
            eff.append(hi if hi < e else e)
        return [up * g / n0 for g in gain], eff

    def _link_row(self, gain: float, fade: float) -> tuple[float, float, float, float]:
        """:func:`link_rows` of one device on floats (gain times fading)."""
        return self._link_row_list([gain], [fade])[0]

    def _link_row_list(
        self, gains: list[float], fades: list[float]
    ) -> list[tuple[float, float, float, float]]:
        """:func:`link_rows` of devices on floats (gains times fadings), written out: the
        same operations in the same order (builtin ``max``/``min`` semantics), ~2x cheaper
        than through ``FLOAT_OPS`` (``tests/test_split_fed_fast_paths.py`` checks the bits)."""
        up, down, n0 = self._link_consts
        _, _, lo, hi = self.model.band
        w = self.config.bandwidth_hz
        log2, log10 = math.log2, math.log10
        rows = []
        for gain, fade in zip(gains, fades, strict=True):
            x = gain * fade
            gamma = up * x / n0
            snr_d = down * x / n0
            e = log2(1.0 + snr_d)
            e = lo if lo > e else e
            o = gamma / w
            o = 10.0 * log10(1e-30 if 1e-30 > o else o) / 40.0
            o = -1.0 if -1.0 > o else o
            rows.append((gamma, snr_d, hi if hi < e else e, 1.0 if 1.0 < o else o))
        return rows

    def _fill_rows(self, rows: list[Any], states: list[int]) -> list[Any]:
        """``rows`` (this round's cached link rows, None where not yet computed) completed:
        the devices' :func:`link_rows` in FSMC ``states`` on floats, each row with its state
        appended, kept in ``self._row_cache[device][state]`` for the rest of the episode."""
        todo = [i for i, r in enumerate(rows) if r is None]
        gain, fade, cache = self._gain_l, self._fade_list, self._row_cache
        new = self._link_row_list([gain[i] for i in todo], [fade[states[i]] for i in todo])
        rows = list(rows)
        for i, r in zip(todo, new, strict=True):
            rows[i] = cache[i][states[i]] = (*r, states[i])
        return rows

    def _set_fsmc_rows(self, states: list[int]) -> None:
        """This round's link quantities from the devices' FSMC ``states``."""
        rows = [c[s] for c, s in zip(self._row_cache, states, strict=True)]
        if None in rows:
            rows = self._fill_rows(rows, states)
        self._gamma, self._snr_d, self._eff_d, self._snr_obs, self._states = zip(*rows)  # noqa: B905

    def _set_link_rows(self, rows: list[tuple[float, float, float, float]]) -> None:
        self._gamma, self._snr_d, self._eff_d, self._snr_obs = zip(*rows, strict=True)

    def _fading(self) -> list[float]:
        """This round's fading power gain of each device."""
        if self._gm is None:
            return [self._fade_list[s] for s in self._states]
        return self._fade_l

    def _shares(self, spec: Any, j: int, k: int, aggregate: float, gamma: list, snr_d: list) -> Any:
        """Bandwidth shares (a list, or one float for the equal split) of an action."""
        cfg, m = self.config, self.model
        N = cfg.n_devices
        if not isinstance(spec, str):
            return spec
        if spec == "equal":
            return 1.0 / N
        if spec == "proportional":
            per = cfg.bandwidth_hz / N
            se = [1.0 * spectral_efficiency(g / per, m.band, FLOAT_OPS) for g in gamma]
            total = pairwise_sum(se)
            return [v / total for v in se]
        if self._sl:  # SplitFedModel.best_shares: every turn has the whole band
            return [1.0 / N] * N
        # SplitFedModel.round_terms / best_shares on floats: the one-problem float solve
        base = m.base_list[j][k]
        bits = [m.round_bits(j, k, aggregate)] * N
        _, sh = minmax_shares_float(
            [base[d] for d in self._types_l], bits, bits, gamma, snr_d, m.band
        )
        return sh

    def _round_draws(self) -> list[float]:
        """This round's fading draws from ``np_random`` (uniforms for the FSMC, normals for
        Gauss-Markov), taken from a block of ``BLOCK_ROUNDS`` rounds drawn at once: the same
        numbers in the same order as one call per round. :meth:`_sync_draws` puts the
        generator back where per-round calls would have left it."""
        p = self._blk_pos
        if p >= len(self._blk):
            rng = self.np_random
            self._blk_state = rng.bit_generator.state
            self._blk_rng = rng
            n = BLOCK_ROUNDS * self._draws_per_round
            self._blk = (rng.random(n) if self._gm is None else rng.standard_normal(n)).tolist()
            p = 0
        q = p + self._draws_per_round
        self._blk_pos = q
        return self._blk[p:q]

    def _sync_draws(self) -> None:
        """Rewind the generator of the current block to the block's start and draw the
        rows used so far again (episode end, reset)."""
        rng = self._blk_rng
        if rng is not None:
            rng.bit_generator.state = self._blk_state
            used = self._blk_pos
            if used:
                if self._gm is None:
                    rng.random(used)
                else:
                    rng.standard_normal(used)
            self._blk_rng = None
        self._blk = ()
        self._blk_pos = 0

    def _advance_channel(self) -> None:
        u = self._round_draws()
        if self._gm is None:
            cum, right = self._cum_rows, bisect.bisect_right
            # _set_fsmc_rows, written out (the hot path; zips of per-device lists without
            # strict=, whose keyword parsing costs more than the loop)
            # each device's next state and its cached row in one pass (the row holds the
            # state; a row not computed yet is None, and the states are taken again)
            rows = [c[right(cum[s], v)] for c, s, v in zip(self._row_cache, self._states, u)]  # noqa: B905
            if None in rows:
                states = [right(cum[s], v) for s, v in zip(self._states, u)]  # noqa: B905
                rows = self._fill_rows(rows, states)
            self._gamma, self._snr_d, self._eff_d, self._snr_obs, self._states = zip(*rows)  # noqa: B905
        else:
            N = self.config.n_devices
            z = np.array(u).reshape(2, N)
            self._fade_l = fade = self._gm.step(_Rows(z)).tolist()
            self._set_link_rows(self._link_row_list(self._gain_l, fade))

    def _obs(self) -> np.ndarray:
        cfg, m = self.config, self.model
        vals = self._obs_vals  # the device compute and memory entries are set at reset
        n4 = len(vals) - 6
        vals[0:n4:4] = self._snr_obs
        scale = self._obs_scale  # last round times / (4 ref round time), at most 1
        vals[3:n4:4] = [1.0 if t > scale else t / scale for t in self._last_t]
        interval, rnd = self._interval, self._round
        x = (self._loss - m.target_loss) / self._span
        t = self._time / cfg.time_budget_s
        vals[n4:] = (
            1.0 if 1.0 < x else (0.0 if 0.0 > x else x),
            ((interval - rnd % interval) % interval) / interval,
            1.0 if 1.0 < t else t,
            (self._cut_j + 1) / m.L,
            self._rank_k / (m.K - 1) if m.K > 1 else 0.0,
            1.0 if self._sl or rnd % interval == 0 else 0.0,
        )
        return _frombuffer(bytearray(_pack(self._obs_format, *vals)), np.float32)


_frombuffer = np.frombuffer
_pack = struct.pack


class _Rows:
    """Stands in for a generator inside a Gauss-Markov channel step: hands out one round's
    pre-drawn normals."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def standard_normal(self, shape: Any) -> np.ndarray:
        return self.values.reshape(shape)


__all__ = [
    "ACTION_MODES",
    "ALLOCATION_RULES",
    "SCHEMES",
    "SplitFedAllocConfig",
    "SplitFedAllocEnv",
    "SplitFedModel",
]
