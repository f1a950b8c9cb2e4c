"""Parameter-sharing LLM cache replacement at an edge server (TrimCaching-style).

The domain model (catalog of block-structured models, cache state, request processes) is
:mod:`mei_envs.cache`; this module maps it to Gymnasium spaces and rewards. Baselines and
oracles in ``mei_envs.baselines.edge_llm_cache`` call the same model through
:meth:`EdgeLLMCacheEnv.decision_state`, :meth:`EdgeLLMCacheEnv.snapshot` and the env's own
``step``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from mei_envs import cache
from mei_envs.checks import check_discrete_action
from mei_envs.config import ConfigError, EnvConfig
from mei_envs.envs.base import MeiEnv
from mei_envs.llm import catalog as llm_catalog
from mei_envs.llm import costs

REWARDS = ("hits", "bytes", "latency")
INVALID_ACTIONS = ("bypass", "raise")
INFO_LEVELS = ("full", "lean")
N_MODEL_FEATURES_BASE = 9  # per-model features besides the moving averages
N_GLOBAL_FEATURES = 3
N_CLOCK_FEATURES = 2  # sin and cos of the demand cycle's position (phase_count > 1 only)
# obs_regime_features: per-model rows (the current and the next regime's request-rate
# estimates) and these globals (the two estimates' weights 1 - d ** n and the share of the
# current regime elapsed).
N_REGIME_ROWS = 2
N_REGIME_GLOBALS = 3
# Half-life [requests of the same regime] of the per-regime averages: phase_knapsack's
# (mei_envs.baselines.edge_llm_cache_phase.PHASE_HALF_LIFE, itself knapsack_greedy's middle
# half-life); an ASSUMPTION set a priori, not tuned.
REGIME_HALF_LIFE = 200.0
# Requests of a regime between rescales of its lazily scaled sums: d ** -20000 = 2 ** 100 at
# half-life 200 stays far from float64's range (a numerical choice, not a model constant).
REGIME_REBASE = 20_000


@dataclasses.dataclass(frozen=True)
class EdgeLLMCacheConfig(EnvConfig):
    """Configuration of :class:`EdgeLLMCacheEnv`; every default names its source."""

    preset: str = "default"
    # --- catalog (sizes from mei_envs.llm.costs; REFERENCE.md 3) ---
    # Three Llama-class foundation models of different sizes (0.99 / 2.47 / 6.43 GB fp16).
    bases: tuple[str, ...] = ("qwen2-0.5b", "llama-3.2-1b", "llama-3.2-3b")
    base_precision: str = "fp16"  # serving precision of the foundation models
    # LoRA children: Hu et al. 2021 Table 6 ranks 1-64 on Wq,Wv; QLoRA: all linear, 8-64
    # (REFERENCE.md 7). One child per (rank, targets).
    lora_ranks: tuple[int, ...] = (8, 16, 32, 64)
    lora_targets: tuple[str, ...] = ("q,v", "all_linear")
    adapter_precision: str = "fp16"  # adapters served in fp16 (S-LoRA keeps them in fp16)
    # Partial fine-tunes owning their top-k layers (an ASSUMPTION: k values chosen to span
    # a small to a quarter-depth specific part).
    partial_top_layers: tuple[int, ...] = (2, 4, 8)
    # Quantised variants (llama.cpp Q4_0 4.5 bits/weight; int8/int4: REFERENCE.md 2).
    quant_precisions: tuple[str, ...] = ("int8", "int4", "q4_0")
    catalog_file: str = ""  # a catalog JSON (mei_envs.cache.load_catalog) instead of the above
    sharing: bool = True  # False: every model stored whole (no block shared)
    # --- capacity ---
    # Share of the catalog's unique bytes (with sharing) the server holds. ASSUMPTION chosen
    # so LRU is far from the offline oracles (see the class docstring); 0.3 of the default
    # catalog is 7.7 GB: the largest model (6.6 GB) fits, but then little else does.
    capacity_fraction: float = 0.3
    capacity_bytes: float = 0.0  # > 0 overrides capacity_fraction [bytes]
    # --- requests ---
    zipf_exponent: float = 1.0  # S-LoRA (arXiv 2311.03285): power law, exponent 1 default
    # Probability per request that two models swap popularity ranks (ASSUMPTION: no
    # published drift rate for model popularity was found; REFERENCE.md 7).
    drift_rate: float = 0.01
    # Periodic (e.g. diurnal) demand: popularity cycles through phase_count regimes of
    # phase_length requests each, every regime with its own rank permutation drawn at reset
    # (mei_envs.cache.ZipfDriftRequests); drift swaps apply to the regime in force. 1: no
    # cycle (the default; phase_length is then unused). LLM serving demand is periodic:
    # BurstGPT (Wang et al., arXiv 2401.17644) and the Azure LLM inference traces (Patel et
    # al., Splitwise, ISCA 2024); the regime count and length are ASSUMPTIONS (see PRESETS).
    phase_count: int = 1
    phase_length: int = 100  # requests per regime
    requests_per_episode: int = 1000
    trace_file: str = ""  # CSV of model names/ids: episodes replay windows of it
    # --- costs ---
    backhaul_rate_bps: float = 10.0e9  # edge-to-cloud, REFERENCE.md 5: 1-10 Gb/s typical
    cloud_rtt_s: float = 0.05  # round trip to the cloud store per fetch: ASSUMPTION
    # Edge-to-user delivery: 3GPP TS 22.261 Table 7.1-1, dense urban experienced DL rate.
    user_rate_bps: float = 300.0e6
    # A request is in time when the cloud fetch delays delivery by at most this: the 3GPP
    # AI-model download budget of 1 s (REFERENCE.md 1) applied to the part the cache controls.
    fetch_deadline_s: float = 1.0
    reward: str = "hits"  # "hits" | "bytes" (bytes served from cache) | "latency"
    # A masked action (evicting an uncached model or one that frees nothing): "raise" a
    # ValueError, state unchanged (issue 10), or "bypass": serve it as a bypass and count it
    # in info["invalid_actions"] (for agents without masks: PPO, A2C, DQN, check_env).
    invalid_action: str = "raise"
    # "full": every key below; "lean": only metadata["info_metrics"] (+ episode totals).
    info: str = "full"
    # Half-lives of the per-model request-rate moving averages in the observation [requests].
    half_lives: tuple[float, ...] = (20.0, 200.0, 2000.0)
    # Per-regime request-rate rows in the observation (phase_count > 1 only; see the env's
    # observation table): what was popular the last time each regime was in force, as
    # phase_knapsack remembers it. Off by default (the observation is then unchanged).
    obs_regime_features: bool = False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        # Most models are LoRA children of three bases (S-LoRA-style multi-adapter serving).
        "adapter_heavy": {
            "lora_ranks": [4, 8, 16, 32, 64, 128],
            "lora_targets": ["q,v", "q,k,v,o", "all_linear"],
            "partial_top_layers": [],
            "quant_precisions": [],
            "capacity_fraction": 0.3,
        },
        # Many foundation models in several quantisations: little is shared.
        "quantised": {
            "bases": [
                "qwen2-0.5b",
                "qwen2-1.5b",
                "llama-3.2-1b",
                "tinyllama-1.1b",
                "gemma-2b",
                "llama-3.2-3b",
            ],
            "lora_ranks": [16],
            "lora_targets": ["all_linear"],
            "partial_top_layers": [],
            "quant_precisions": ["int8", "int4", "q4_0", "q8_0"],
        },
        "fast_drift": {"drift_rate": 0.05},  # 5x the default rank-swap rate
        "small_cache": {"capacity_fraction": 0.08},
        # Periodic (diurnal) demand: four regimes of 125 requests (a "day" of 500 requests;
        # an episode spans two), each with its own popularity ranking, e.g. code assistants
        # by day and chat in the evening. LLM serving demand varies with the time of day
        # (BurstGPT, Wang et al., arXiv 2401.17644, Azure OpenAI GPT traces; Splitwise, Patel
        # et al., ISCA 2024, Azure code and conversation traces); the regime count, length
        # and independent rankings are ASSUMPTIONS. Capacity 0.4 of the unique bytes and the
        # regime length were chosen on validation episodes (200000..) so that the best
        # clock-blind online rule is >= 5 points below belady_shared
        # (edge_llm_cache_note.md, section 8).
        "diurnal": {"phase_count": 4, "phase_length": 125, "capacity_fraction": 0.4},
    }

    def validate(self) -> None:
        name = type(self).__name__
        self._check_choice("preset", self.PRESETS)
        if self.catalog_file:
            if not os.path.isfile(self.catalog_file):
                raise ConfigError(f"{name}.catalog_file={self.catalog_file!r}: no such file")
        else:
            self._validate_generated(name)
        try:
            cat = self.build_catalog()
        except (ValueError, KeyError) as exc:
            field = "catalog_file" if self.catalog_file else "bases"
            raise ConfigError(f"{name}.{field}={getattr(self, field)!r}: {exc}") from exc
        self._check_range("capacity_fraction", 0.0, 1.0, lo_open=True)
        self._check_range("capacity_bytes", 0.0, 1e18)
        if 0.0 < self.capacity_bytes < 1.0:
            raise ConfigError(
                f"{name}.capacity_bytes={self.capacity_bytes!r}: must be 0 (use "
                "capacity_fraction) or at least 1 byte"
            )
        self._check_range("zipf_exponent", 0.0, 5.0)
        self._check_range("drift_rate", 0.0, 1.0)
        self._check_range("phase_count", 1, 1000, integer=True)
        self._check_range("phase_length", 1, 10_000_000, integer=True)
        if self.phase_count > 1 and self.trace_file:
            raise ConfigError(
                f"{name}.phase_count={self.phase_count}: regimes need generated requests, but "
                f"trace_file={self.trace_file!r} is set (use phase_count=1 with a trace)"
            )
        if self.obs_regime_features and self.phase_count == 1:
            raise ConfigError(
                f"{name}.obs_regime_features=True: needs demand regimes (phase_count > 1), "
                f"but phase_count={self.phase_count}"
            )
        self._check_range("requests_per_episode", 1, 10_000_000, integer=True)
        self._check_range("backhaul_rate_bps", 0.0, 1e15, lo_open=True)
        self._check_range("user_rate_bps", 0.0, 1e15, lo_open=True)
        self._check_range("cloud_rtt_s", 0.0, 60.0)
        self._check_range("fetch_deadline_s", 0.0, 1e6)
        self._check_choice("reward", REWARDS)
        self._check_choice("invalid_action", INVALID_ACTIONS)
        self._check_choice("info", INFO_LEVELS)
        if not 1 <= len(self.half_lives) <= 8:
            raise ConfigError(f"{name}.half_lives={list(self.half_lives)!r}: need 1 to 8 values")
        for h in self.half_lives:
            if isinstance(h, bool) or not isinstance(h, (int, float)) or not 1.0 <= h <= 1e7:
                raise ConfigError(
                    f"{name}.half_lives={list(self.half_lives)!r}: each must be in [1, 1e7]"
                )
        if self.trace_file:
            if not os.path.isfile(self.trace_file):
                raise ConfigError(f"{name}.trace_file={self.trace_file!r}: no such file")
            try:
                trace = _load_trace(self.trace_file, _file_stamp(self.trace_file), tuple(cat.names))
            except ValueError as exc:
                raise ConfigError(f"{name}.trace_file={self.trace_file!r}: {exc}") from exc
            if len(trace) < self.requests_per_episode:
                raise ConfigError(
                    f"{name}.requests_per_episode={self.requests_per_episode}: the trace "
                    f"{self.trace_file!r} holds only {len(trace)} requests"
                )

    def _validate_generated(self, name: str) -> None:
        if not self.bases:
            raise ConfigError(f"{name}.bases=[]: need at least one foundation model")
        archs = []
        for b in self.bases:
            if not isinstance(b, str):
                raise ConfigError(f"{name}.bases: {b!r} must be a model name")
            try:
                archs.append(llm_catalog.get_architecture(b))
            except (KeyError, ValueError, OSError) as exc:
                raise ConfigError(
                    f"{name}.bases: {b!r} unknown ({exc}); use catalog models "
                    f"{llm_catalog.list_models()} or architecture JSON paths"
                ) from exc
        if len({a.name for a in archs}) != len(archs):
            raise ConfigError(f"{name}.bases={list(self.bases)!r}: a model is listed twice")
        self._check_choice("base_precision", costs.PRECISION_BITS)
        self._check_choice("adapter_precision", costs.PRECISION_BITS)
        for r in self.lora_ranks:
            if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 4096:
                raise ConfigError(
                    f"{name}.lora_ranks={list(self.lora_ranks)!r}: each must be an integer "
                    "in [1, 4096]"
                )
        if len(set(self.lora_ranks)) != len(self.lora_ranks):
            raise ConfigError(f"{name}.lora_ranks={list(self.lora_ranks)!r}: repeated rank")
        if self.lora_ranks and not self.lora_targets:
            raise ConfigError(f"{name}.lora_targets=[]: LoRA ranks need at least one target set")
        tags = set()
        for t in self.lora_targets:
            parsed = cache.parse_targets(t) if isinstance(t, str) else ()
            if not parsed:
                raise ConfigError(f"{name}.lora_targets: {t!r} must be names like 'q,v'")
            for a in archs:
                try:
                    resolved = costs.resolve_lora_targets(a, parsed)
                except ValueError as exc:
                    raise ConfigError(f"{name}.lora_targets: {t!r}: {exc}") from exc
            tags.add(resolved)
        if len(tags) != len(self.lora_targets):
            raise ConfigError(
                f"{name}.lora_targets={list(self.lora_targets)!r}: two entries name the same "
                "matrices"
            )
        min_layers = min(a.n_layers for a in archs)
        for k in self.partial_top_layers:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min_layers:
                raise ConfigError(
                    f"{name}.partial_top_layers={list(self.partial_top_layers)!r}: each must "
                    f"be an integer in [1, {min_layers}] (the smallest base's layers)"
                )
        if len(set(self.partial_top_layers)) != len(self.partial_top_layers):
            raise ConfigError(
                f"{name}.partial_top_layers={list(self.partial_top_layers)!r}: repeated value"
            )
        for p in self.quant_precisions:
            if p not in costs.PRECISION_BITS or p == self.base_precision:
                allowed = [q for q in costs.PRECISION_BITS if q != self.base_precision]
                raise ConfigError(
                    f"{name}.quant_precisions: {p!r} must be one of {allowed} "
                    "(not the base precision)"
                )
        if len(set(self.quant_precisions)) != len(self.quant_precisions):
            raise ConfigError(
                f"{name}.quant_precisions={list(self.quant_precisions)!r}: repeated precision"
            )

    def build_catalog(self) -> cache.Catalog:
        """The catalog this config describes (with sharing; see :attr:`sharing`)."""
        if self.catalog_file:
            return _load_catalog(self.catalog_file, _file_stamp(self.catalog_file))
        return _build_catalog(
            tuple(self.bases),
            self.base_precision,
            tuple(self.lora_ranks),
            tuple(self.lora_targets),
            self.adapter_precision,
            tuple(self.partial_top_layers),
            tuple(self.quant_precisions),
        )


@functools.lru_cache(maxsize=64)
def _build_catalog(*args: Any) -> cache.Catalog:
    bases, bp, ranks, targets, ap, partial, quant = args
    return cache.build_catalog(
        bases,
        base_precision=bp,
        lora_ranks=ranks,
        lora_targets=targets,
        adapter_precision=ap,
        partial_top_layers=partial,
        quant_precisions=quant,
    )


def _file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


# Files are read once per (path, modification time, size): configs are validated and envs
# built many times (vector envs, property tests).
@functools.lru_cache(maxsize=16)
def _load_catalog(path: str, stamp: tuple[int, int]) -> cache.Catalog:
    return cache.load_catalog(path)


@functools.lru_cache(maxsize=16)
def _load_trace(path: str, stamp: tuple[int, int], names: tuple[str, ...]) -> np.ndarray:
    return cache.load_trace(path, names)


class EdgeLLMCacheEnv(MeiEnv[np.ndarray, int]):
    """Replace LLMs in an edge server's cache, where models share parameter blocks.

    ## Description

    An edge server stores LLMs that users download. Models fine-tuned from one foundation
    model share blocks: a LoRA child shares the whole frozen base, a partial fine-tune its
    embedding, bottom layers and head; quantised variants share nothing. A shared block is
    stored once (TrimCaching, Qu et al., ICDCS 2024). A model is cached when all its blocks
    are held; on a miss only the missing blocks travel over the backhaul. Every size comes
    from the cost tables (`mei_envs.llm.costs`): see `mei_envs.cache.build_catalog`.

    Requests follow a Zipf popularity over models (exponent 1: S-LoRA) whose ranking drifts
    (two models swap ranks with probability `drift_rate` per request), or replay a trace.
    With `phase_count > 1` the popularity cycles through that many regimes (own rankings,
    `phase_length` requests each; periodic demand, preset `diurnal`).
    The whole episode's request sequence is drawn at `reset` from `np_random`, so every
    policy sees the same requests for a seed (and offline oracles can read it).

    Default scenario (how it was chosen): three Llama-class bases (0.5B/1B/3B) with 8 LoRA
    children, 3 partial fine-tunes and 3 quantised variants each (45 models, 25.8 GB of
    unique bytes, 129.6 GB stored whole). A capacity sweep on 8-10 episodes (hit ratio of
    lru / trim_greedy / belady_shared) gave 23/44/45% at 0.15, 33/57/57% at 0.2 and
    24/56/63% at 0.3 of the unique bytes: 0.3 is the smallest tested capacity where the
    offline oracle leaves room above the best online heuristic while LRU, which admits the
    3B models and flushes everything else for them, stays far below. The presets cover the
    other regimes, including ones where heuristics are near the oracle (small_cache).

    The env fast-forwards over hits, over misses that fit in the free space (admitted), over
    models larger than the cache and over misses where no cached model can free anything
    (bypassed). It stops only on a miss that needs space while a choice exists, and keeps
    asking until the requested model fits or the agent bypasses it.

    ## Action Space

    `Discrete(M + 1)` for a catalog of M models: action `i < M` evicts cached model `i`,
    freeing its blocks that no other cached model uses (blocks the requested model needs are
    kept); action `M` bypasses (serves the request from the cloud without caching it). Legal
    actions: cached models that free at least one byte, and bypass; `action_masks()` and
    `info["action_mask"]` give them (sb3-contrib MaskablePPO). A masked action (evicting a
    model that is not cached or frees nothing now) raises `ValueError` naming the legal
    actions and leaves the state unchanged (`invalid_action="raise"`, the default). Agents
    that act without masks (PPO, A2C, DQN, random `action_space.sample()`, `check_env`)
    need `invalid_action="bypass"`: a masked eviction is then served as a bypass and counted
    in `info["invalid_actions"]`. A non-integer or out-of-range action always raises.

    ## Observation Space

    `Box(0, 1, (F * M + 3,), float32)` with `F = 9 + len(half_lives)` features per model,
    feature-major (entry `k*M + m` is feature `k` of model `m`):

    | feature | meaning | min | max |
    |---|---|---|---|
    | 0 | cached | 0 | 1 |
    | 1 | requested now | 0 | 1 |
    | 2 | model bytes / capacity (clipped) | 0 | 1 |
    | 3 | bytes evicting it frees now / capacity | 0 | 1 |
    | 4 | bytes missing if requested now / capacity (clipped) | 0 | 1 |
    | 5 | share of its bytes in blocks other catalog models use | 0 | 1 |
    | 6 | evictable now (legal action) | 0 | 1 |
    | 7 | recency: 1 - log(1 + requests since its last request) / log(1 + T); 0 if never | 0 | 1 |
    | 8 | time cached: 1 - log(1 + requests since cached) / log(1 + T); 0 if not cached | 0 | 1 |
    | 9.. | moving average of its request indicator, one per half-life | 0 | 1 |

    followed by free bytes / capacity, bytes still needed for the request / capacity
    (clipped) and the share of the episode's requests served. When demand cycles
    (`phase_count > 1`) two more entries end the vector, the clock a server reads: with
    `x = (t mod (phase_count * phase_length)) / (phase_count * phase_length)` the position of
    the pending request `t` in the cycle, `0.5 + 0.5 sin(2 pi x)` and `0.5 + 0.5 cos(2 pi x)`
    (both in [0, 1]); the size is then `F * M + 5`. With `phase_count = 1` (the default)
    there is no clock.

    With `obs_regime_features=True` (needs `phase_count > 1`) `2 * M + 3` more entries end
    the vector (size `F * M + 5 + 2 * M + 3`), per-regime memory such as `phase_knapsack`
    keeps. Let `n = t + 1` while request `t` is pending (it is counted, as in the moving
    averages above) and `n = t` otherwise; the requests `0..n-1` of the log
    (`decision_state()["past_requests"]` plus the pending one) are split by the regime
    `(i // phase_length) % phase_count` they fell in. For regime `k` with `n_k` of them, the
    moving average of the request indicator over those requests only, with `d = 0.5 **
    (1 / 200)` (half-life 200 requests of that regime, `REGIME_HALF_LIFE`), is `e_k[m] = sum
    (1 - d) d ** (n_k - r)` over the regime's requests `r = 1..n_k` that asked for `m`; the
    estimate is bias-corrected, `e_k / (1 - d ** n_k)` (a distribution over models; all 0
    when `n_k = 0`). With `k = (t // phase_length) % phase_count` the regime in force:

    | entries | meaning | min | max |
    |---|---|---|---|
    | `M` | estimate of regime `k` per model | 0 | 1 |
    | `M` | estimate of regime `(k + 1) % phase_count` (the next) per model | 0 | 1 |
    | 1 | weight of the current estimate, `1 - d ** n_k` | 0 | 1 |
    | 1 | weight of the next estimate, `1 - d ** n_(k+1)` | 0 | 1 |
    | 1 | share of the current regime elapsed, `(t mod phase_length) / phase_length` | 0 | 1 |

    ## Rewards

    Summed over the requests a step completes (the decided one and those fast-forwarded to
    the next decision). `reward="hits"` (default): 1 per hit. `"bytes"`: bytes served from
    the cache (requested minus fetched) / mean model bytes. `"latency"`: minus the fetch
    delay (`cloud_rtt_s` + fetched bytes / `backhaul_rate_bps` on a miss) / the mean fetch
    delay of a whole model; the delivery to the user (model bytes / `user_rate_bps`) is the
    same for every policy and is only reported in `info`.

    `info` (`info="full"`, the default) carries, per step: `requests`, `hits`,
    `bytes_requested`, `bytes_hit`, `backhaul_bytes`, `latency_s` (fetch + delivery),
    `deadline_met`, `evictions`, `bypasses`, `invalid_actions`; the episode so far:
    `hit_ratio`, `byte_hit_ratio`, `mean_latency_s`, `deadline_satisfaction`; and the state:
    `t` (requests served), `model` (the pending request, -1 if none), `used_bytes` and
    `action_mask`. `info="lean"` carries only the keys of `metadata["info_metrics"]`: the
    four episode-so-far ratios and the per-step `backhaul_bytes`, `requests`, `hits`,
    `evictions`, `bypasses`, `invalid_actions`; on the step that ends the episode also
    `episode_<key>` for each of them (the ratios' final values, the others' episode sums).
    Masks then come from `action_masks()` only.

    ## Starting State

    An empty cache. `reset` fast-forwards to the first decision; the requests it serves are
    charged in the first `step`'s reward and `info`.

    ## Episode End

    Terminates when all `requests_per_episode` requests are served. If no decision arises in
    an episode, one `step` (its action is ignored) delivers the episode's outcome. No
    truncation.

    ## Arguments

    `gym.make("mei_envs/EdgeLLMCache-v0", preset="small_cache")`, `config={...}` or keyword
    arguments; keys and defaults are the fields of :class:`EdgeLLMCacheConfig`.
    `reset(options={"requests": [...]})` replays a given sequence of model ids or names
    (any length >= 1).

    `gym.make_vec("mei_envs/EdgeLLMCache-v0", num_envs=n,
    vectorization_mode="vector_entry_point")` builds the native vector version
    (`mei_envs.envs.edge_llm_cache_vector.EdgeLLMCacheVectorEnv`: numpy over the n caches,
    or one of this env per sub-env up to 32 sub-envs, where the batch does not pay;
    SAME_STEP autoreset, lean infos, `action_masks()` of shape `(n, M + 1)`); sub-env `i`
    seeded `seed + i` reproduces this env seeded `seed + i`. Its batched matrix products
    are small: run it with `OMP_NUM_THREADS=1` (multi-threaded OpenBLAS made a 256-env
    step 2.4x slower on the 2-core dev machine).

    ## Version History

    * v0: initial version. (Issue 10 later made `invalid_action="raise"` the default; a
      legal action's results did not change.)
    * v0, session 7: periodic demand (`phase_count`, `phase_length`, preset `diurnal`), the
      clock entries when `phase_count > 1`, and `decision_state()["past_requests"]`; with the
      default `phase_count=1` every trajectory and observation is unchanged (pinned tests).
    * v0, session 9: `obs_regime_features` (off by default: nothing changes unless set).
    """

    config_class = EdgeLLMCacheConfig
    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": [],
        "info_metrics": {
            "hit_ratio": "last",
            "byte_hit_ratio": "last",
            "mean_latency_s": "last",
            "deadline_satisfaction": "last",
            "backhaul_bytes": "sum",
            "requests": "sum",
            "hits": "sum",
            "evictions": "sum",
            "bypasses": "sum",
            "invalid_actions": "sum",
        },
    }

    def _setup(self, cfg: EdgeLLMCacheConfig) -> None:
        shared = cfg.build_catalog()
        self.catalog = shared if cfg.sharing else shared.without_sharing()
        cat = self.catalog
        M = cat.n_models
        self.n_models = M
        self.capacity_bytes = (
            float(cfg.capacity_bytes)
            if cfg.capacity_bytes > 0
            else cfg.capacity_fraction * shared.unique_bytes
        )
        self.state = cache.CacheState(cat, self.capacity_bytes)
        self.stats = cache.RequestStats(M, cfg.half_lives, pad_rows=2)
        self.generator = cache.ZipfDriftRequests(
            M, cfg.zipf_exponent, cfg.drift_rate, int(cfg.phase_count), int(cfg.phase_length)
        )
        # The clock (time within the demand cycle) ends the observation when demand cycles.
        self.n_clock = N_CLOCK_FEATURES if cfg.phase_count > 1 else 0
        self._cycle = int(cfg.phase_count) * int(cfg.phase_length)
        self._trace = (
            _load_trace(cfg.trace_file, _file_stamp(cfg.trace_file), tuple(cat.names))
            if cfg.trace_file
            else None
        )
        self.n_features = N_MODEL_FEATURES_BASE + len(cfg.half_lives)
        # Per-regime rows after the clock (obs_regime_features; 0 entries when off).
        self.n_regime = N_REGIME_ROWS * M + N_REGIME_GLOBALS if cfg.obs_regime_features else 0
        self._reg_K, self._reg_L = int(cfg.phase_count), int(cfg.phase_length)
        self._reg_d = 0.5 ** (1.0 / REGIME_HALF_LIFE)
        self._reg_inv_d = 1.0 / self._reg_d
        self._reg_scratch = np.empty(M)
        self._reg_log: np.ndarray | None = None  # the episode the averages were folded from
        self._reg_seen = 0  # requests folded into them
        self.action_space = spaces.Discrete(M + 1)
        self.observation_space = spaces.Box(
            0.0,
            1.0,
            shape=(M * self.n_features + N_GLOBAL_FEATURES + self.n_clock + self.n_regime,),
            dtype=np.float32,
        )
        self.bypass_action = M
        # Per-model constants as Python lists for the per-request hot path.
        self._model_bytes = cat.model_bytes.tolist()
        self._delivery_s = (8.0 * cat.model_bytes / cfg.user_rate_bps).tolist()
        self._too_large = (cat.model_bytes > self.capacity_bytes * (1 + 1e-12)).tolist()
        self._rate = float(cfg.backhaul_rate_bps)
        self._rtt = float(cfg.cloud_rtt_s)
        self._deadline = float(cfg.fetch_deadline_s)
        self._reward_mode = REWARDS.index(cfg.reward)
        self._lean = cfg.info == "lean"
        self.bytes_ref = float(cat.model_bytes.mean())
        self.latency_ref_s = self._rtt + 8.0 * self.bytes_ref / self._rate
        self._inv_cap = 1.0 / self.capacity_bytes
        # The observation is kept in one float32 buffer (feature-major rows, then the three
        # globals); rows change only when what they show changes (see _obs).
        F = self.n_features
        self._static_rows = np.vstack(
            [np.minimum(cat.model_bytes * self._inv_cap, 1.0), cat.shared_fraction]
        )
        self._ob = np.zeros(
            F * M + N_GLOBAL_FEATURES + self.n_clock + self.n_regime, dtype=np.float32
        )
        self._rows = self._ob[: F * M].reshape(F, M)
        self._rows[[2, 5]] = self._static_rows
        self._scratch = np.empty(M)
        # Constants as arrays: numpy ufuncs convert Python scalars on every call.
        self._inv_cap_arr = np.full(M, self._inv_cap)
        self._ones = np.ones(M)
        S = len(cfg.half_lives)
        self._idx = np.empty((2 + S, M), dtype=np.int64)  # look-up indices of rows 7..
        self._looked = np.empty((2 + S, M))  # their looked-up values
        self._time_rows = np.empty((2 + S, M))
        self._no_freed = np.zeros(M)
        self._no_freed.flags.writeable = False
        self._exact = cat.exact_sums
        self._bypass_only = np.zeros(M + 1, dtype=bool)
        self._bypass_only[M] = True
        self._bypass_only.flags.writeable = False
        self._requests: np.ndarray | None = None
        self._done = True
        self._final_pending = False

    # ---- Gymnasium API -----------------------------------------------------------------
    def _reset(self, options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        requests = self._draw_requests(options)
        self._requests = requests
        self._past_view = requests.view()
        self._past_view.flags.writeable = False
        self._req_list = requests.tolist()
        self._next_use: np.ndarray | None = None
        self.state.clear()
        self.stats.clear()
        self._t = 0
        self._pending = -1
        self._freed = self._no_freed
        self._mask = self._bypass_only
        T = len(self._req_list)
        if T != getattr(self, "_T", None) or getattr(self, "_src0", None) is None:
            self._set_horizon(T)
        else:  # the same horizon: back to the start values, in the same buffer
            self._src[:] = self._src0
        self._drawn: tuple[int, Any] = (-1, None)  # state version and freed array drawn
        self._rows[1] = 0.0
        self._done = False
        self._tot = dict.fromkeys(_TOTAL_KEYS, 0.0)
        self._acc = _zero_acc()
        self._ep_sums = dict.fromkeys(LEAN_SUM_KEYS, 0.0)
        self._advance()
        self._final_pending = self._done
        return self._obs(), self._info()

    def _set_horizon(self, T: int) -> None:
        """The per-episode-length constants of the observation's time rows (kept while
        episodes keep the same length)."""
        self._T = T
        self._log_T = math.log1p(T)
        decay = tuple(self.stats.decay)
        self._tables = _time_tables(T, decay)
        self._lookup = _time_lookup(T, decay) if self._tables is not None else None
        # Rows 7.. of the observation are lookup[t - src] * stats' [1, 1, averages]: src
        # rows 0-1 are the last-request and cached-since marks, where -1 ("never", "not
        # cached") is stored as _never (its look-up is the zero the formula gives); row
        # 2 + s is the averages' last update time minus the offset of decay s's powers.
        self._never = -(T + 3)
        src = np.full((2 + len(decay), self.n_models), self._never, dtype=np.int64)
        src[2:] = -(2 * T + 4 + T * np.arange(len(decay)))[:, None]
        src.flags.writeable = False
        self._src0 = src
        self._src = src.copy()
        self._mk = self._src[:2]
        self._ema_src = self._src[2:]
        self._ema_off = (2 * T + 4 + T * np.arange(len(decay))).tolist()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._requests is None:
            raise RuntimeError("EdgeLLMCacheEnv.step called before reset()")
        if self._done and not self._final_pending:
            raise RuntimeError("EdgeLLMCacheEnv.step called after the episode ended; reset()")
        a = check_discrete_action(action, self.n_models + 1)
        acc = self._acc
        if self._final_pending:
            self._final_pending = False
        else:
            j = self._pending
            if a != self.bypass_action and not self._mask[a]:
                if self.config.invalid_action == "raise":
                    why = "not cached" if not self.state.cached[a] else "frees no bytes now"
                    raise ValueError(
                        f"action={a}: evicting model {a} ({self.catalog.names[a]!r}) is masked "
                        f"({why}); legal actions: {np.flatnonzero(self.action_masks()).tolist()}"
                    )
                acc["invalid_actions"] += 1.0
                a = self.bypass_action
            if a == self.bypass_action:
                self._bypass(j)
            else:
                self.state.evict(a, pinned=j)
                acc["evictions"] += 1.0
                if not self.state._cached[a]:
                    self.stats.since[a] = -1
                    self._mk[1, a] = self._never
                self._decide(j)
            if self._pending < 0:
                self._advance()
        reward = acc["reward"]
        info = self._info(step=True)
        self._acc = _zero_acc()
        return self._obs(), reward, self._done, False, info

    def action_masks(self) -> np.ndarray:
        """Legal actions: cached models whose eviction frees bytes now, and bypass.

        A read-only array, computed once per decision (copy it to change it)."""
        return self._mask

    def obs_item_layout(self) -> dict[str, Any]:
        """The observation as a table of items, for policies that share weights across
        models (``mei_envs.agents.item_policy``).

        Returns ``{"n_items": M, "n_features": F', "request_feature": 1, "item_blocks":
        [[offset, rows], ...]}``: each block is ``rows`` per-model features stored
        feature-major from ``offset`` (entry ``offset + k * M + m`` is feature ``k`` of model
        ``m``); the table's ``F'`` features are the blocks' rows in order, and every other
        entry is global. The first block is the ``F`` features of the class docstring's
        table at offset 0; with ``obs_regime_features`` a second block holds the two
        per-regime rows. Action ``m < M`` acts on model ``m`` and action ``M`` (bypass) on
        none; table feature 1 marks the pending request. ``"item_relation"``: an ``(M, M)``
        list of lists, entry ``[m][n]`` the share of model ``m``'s bytes in blocks model
        ``n`` also uses (0 on the diagonal), for a policy that pools over related models.
        """
        M, F = self.n_models, self.n_features
        cat = self.catalog
        shared = cat.member_bytes @ cat.member_f.T  # [bytes]: m's bytes that n also uses
        relation = shared / cat.model_bytes[:, None]
        np.fill_diagonal(relation, 0.0)
        blocks = [[0, F]]
        if self.n_regime:
            blocks.append([self.observation_space.shape[0] - self.n_regime, N_REGIME_ROWS])
        return {
            "n_items": M,
            "n_features": sum(rows for _, rows in blocks),
            "request_feature": 1,
            "item_blocks": blocks,
            "item_relation": relation.tolist(),
        }

    def decision_state(self) -> dict[str, Any]:
        """What an online cache knows at the current decision (read by baselines).

        Keys: ``t`` (request index), ``model`` (requested model, -1 if no decision is
        pending), ``decision``, ``cached`` / ``freed_bytes`` / ``missing_bytes`` (arrays over
        models), ``needed_bytes`` (bytes still to free), ``free_bytes``, ``last_request``,
        ``count``, ``cached_since`` (request indices, -1 = never), ``ema`` (moving
        averages, one row per half-life) and ``past_requests``, the model ids of the requests
        before ``t`` (the server's request log; a read-only view). Other arrays are copies.
        """
        st, t = self.state, min(self._t, max(self._T - 1, 0))
        j = self._pending
        missing = st.missing_bytes_all()
        need = st.used_bytes + missing[j] - st.capacity if j >= 0 else 0.0
        return {
            "t": self._t,
            "model": j,
            "decision": j >= 0,
            "cached": st.cached.copy(),
            "freed_bytes": self._freed.copy(),
            "missing_bytes": missing,
            "needed_bytes": float(max(need, 0.0)),
            "free_bytes": st.free_bytes,
            "capacity_bytes": st.capacity,
            "model_bytes": self.catalog.model_bytes.copy(),
            "last_request": self.stats.last.copy(),
            "count": self.stats.count.copy(),
            "cached_since": self.stats.since.copy(),
            "ema": self.stats.ema(t),
            "past_requests": self._past_view[: self._t],
        }

    @property
    def requests(self) -> np.ndarray:
        """The episode's request sequence (model ids); offline oracles read it."""
        if self._requests is None:
            raise RuntimeError("EdgeLLMCacheEnv.requests: call reset() first")
        return self._requests

    def next_use(self) -> np.ndarray:
        """``nxt[t]``: the next request index of ``requests[t]``'s model (``T`` if never)."""
        if self._next_use is None:
            self._next_use = cache.next_use(self.requests, self.n_models)
        return self._next_use

    def snapshot(self) -> tuple:
        """A copy of the mutable state; :meth:`restore` returns to it (oracles' search)."""
        return (
            self.state.copy(),
            self.stats.copy(),
            self._t,
            self._pending,
            self._freed,  # never written in place
            self._done,
            self._final_pending,
            dict(self._tot),
            dict(self._acc),
            dict(self._ep_sums),
        )

    def restore(self, snap: tuple) -> None:
        """Return to a :meth:`snapshot` taken in the same episode."""
        st, stats, t, pend, freed, done, fin, tot, acc, ep_sums = snap
        self.state, self.stats = st.copy(), stats.copy()
        self._t, self._pending, self._freed = t, pend, freed
        self._mask = self._mask_of(freed) if pend >= 0 else self._bypass_only
        self._rows[1] = 0.0
        if pend >= 0:
            self._rows[1, pend] = 1.0
        marks = self.stats.marks
        self._mk[:] = np.where(marks < 0, self._never, marks)
        self._ema_src[:] = self.stats.ema_times - np.asarray(self._ema_off)[:, None]
        self._drawn = (-1, None)
        self._done, self._final_pending = done, fin
        self._tot, self._acc, self._ep_sums = dict(tot), dict(acc), dict(ep_sums)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickle copies views as separate arrays: make the row view share the buffer again.
        self.__dict__.update(state)
        self._rows = self._ob[: self.n_features * self.n_models].reshape(self.n_features, -1)
        if "_src" in state:
            self._mk, self._ema_src = self._src[:2], self._src[2:]
        if state.get("_requests") is not None:
            self._past_view = self._requests.view()
            self._past_view.flags.writeable = False

    # ---- internals ---------------------------------------------------------------------
    def _draw_requests(self, options: Mapping[str, Any] | None) -> np.ndarray:
        cfg, rng = self.config, self.np_random
        if options:
            unknown = sorted(set(options) - {"requests"})
            if unknown:
                raise ValueError(f"reset options {unknown}: unknown; allowed: ['requests']")
            if "requests" in options:
                return self._parse_requests(options["requests"])
        if self._trace is not None:
            start = int(rng.integers(0, len(self._trace) - cfg.requests_per_episode + 1))
            return self._trace[start : start + cfg.requests_per_episode].copy()
        return self.generator.sample(rng, cfg.requests_per_episode)

    def _parse_requests(self, seq: Any) -> np.ndarray:
        M, index = self.n_models, self.catalog.index
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (Sequence, np.ndarray)):
            raise ValueError(
                f"reset option requests={seq!r}: must be a sequence of model ids or names"
            )
        if len(seq) == 0:
            raise ValueError("reset option requests=[]: needs at least one request")
        out = np.empty(len(seq), dtype=np.int64)
        for i, r in enumerate(seq):
            if isinstance(r, str) and r in index:
                out[i] = index[r]
            elif isinstance(r, (int, np.integer)) and not isinstance(r, bool) and 0 <= r < M:
                out[i] = int(r)
            else:
                raise ValueError(
                    f"reset option requests[{i}]={r!r}: must be a model name or an id in "
                    f"[0, {M - 1}]"
                )
        return out

    def _serve(self, j: int, missing: float) -> None:
        """Account request ``j`` served with ``missing`` bytes fetched from the cloud."""
        acc = self._acc
        size = self._model_bytes[j]
        hit = missing <= 0.0
        fetch_s = cache.fetch_delay_s(missing, self._rtt, self._rate)
        met = fetch_s <= self._deadline
        latency = fetch_s + self._delivery_s[j]
        hit_bytes = size - missing
        # This step's sums and the episode's totals grow by the same amounts, each in
        # request order (latency sums are not exact, so neither is derived from the other).
        for d in (acc, self._tot):
            d["requests"] += 1.0
            d["hits"] += hit
            d["bytes_requested"] += size
            d["bytes_hit"] += hit_bytes
            d["latency_s"] += latency
            d["deadline_met"] += met
        acc["backhaul_bytes"] += missing
        mode = self._reward_mode
        if mode == 0:
            acc["reward"] += hit
        elif mode == 1:
            acc["reward"] += hit_bytes / self.bytes_ref
        else:
            acc["reward"] -= fetch_s / self.latency_ref_s
        self._t += 1

    def _bypass(self, j: int) -> None:
        self._acc["bypasses"] += 1.0
        self._serve(j, self.state.missing_bytes(j))
        self.state.drop_orphans()
        self._set_pending(-1)

    def _admit(self, j: int, missing: float) -> None:
        t = self._t
        new = self.state.admit_ids(j)
        since, mk = self.stats.marks[1], self._mk[1]
        for m in new:
            since[m] = t
            mk[m] = t
        self._serve(j, missing)
        self._set_pending(-1)

    def _set_pending(self, j: int) -> None:
        row = self._rows[1]
        if self._pending >= 0:
            row[self._pending] = 0.0
        if j >= 0:
            row[j] = 1.0
        self._pending = j

    def _mask_of(self, freed: np.ndarray) -> np.ndarray:
        M = self.n_models
        mask = np.empty(M + 1, dtype=bool)
        np.greater(freed, 0.0, out=mask[:M])
        mask[M] = True  # the bypass is legal
        mask.setflags(write=False)
        return mask

    def _decide(self, j: int) -> bool:
        """Handle a miss of ``j``: admit if it fits, bypass if no choice exists, else make
        it the pending decision. Returns True when a decision is pending."""
        st = self.state
        missing = st.missing_bytes(j)
        if self._too_large[j]:
            self._bypass(j)
            return False
        if st.used_bytes + missing <= st.capacity * (1 + 1e-12):
            self._admit(j, missing)
            return False
        if self._exact:
            freed_list = st.freed_list(pinned=j)
            if max(freed_list) <= 0.0:  # only the bypass
                self._bypass(j)
                return False
            # fromiter: ~25% fewer instructions than np.array on a list of floats
            freed = np.fromiter(freed_list, np.float64, len(freed_list))
            mask = self._mask_of(freed)
        else:
            freed = st.freed_bytes(pinned=j)
            mask = self._mask_of(freed)
            if not mask[:-1].any():  # only the bypass
                self._bypass(j)
                return False
        self._set_pending(j)
        self._freed = freed
        self._mask = mask
        return True

    def _advance(self) -> None:
        """Serve requests until one needs a decision or the episode ends."""
        reqs, T, record, cached = self._req_list, self._T, self.stats.record, self.state._cached
        last, ema_src, offs = self._mk[0], self._ema_src, self._ema_off
        self._freed, self._mask = self._no_freed, self._bypass_only
        while self._t < T:
            t = self._t
            j = reqs[t]
            record(j, t)
            last[j] = t
            for s, off in enumerate(offs):
                ema_src[s, j] = t - off
            if cached[j]:
                self._serve(j, 0.0)
                continue
            if self._decide(j):
                return
        self._set_pending(-1)
        self._done = True

    def _obs(self) -> np.ndarray:
        st, M, F = self.state, self.n_models, self.n_features
        t, cap, j, T = self._t, st.capacity, self._pending, self._T
        rows, scratch = self._rows, self._scratch  # row 1 is kept by _set_pending
        drawn_version, drawn_freed = self._drawn
        # Values are computed in float64 and then cast to float32 (a ufunc writing float32
        # output directly is slower: it buffers the cast).
        if drawn_version != st.version:  # the cache changed: rows 0 and 4
            touched = st.drain_touched()
            if drawn_version < 0 or touched is None or len(touched) > TOUCHED_MAX:
                # Lists to arrays: bytes() and fromiter convert ~2x / ~1.3x cheaper than
                # numpy's own list conversion (the same values).
                rows[0] = np.frombuffer(bytes(st._cached), dtype=np.bool_)
                np.multiply(np.fromiter(st._miss, np.float64, M), self._inv_cap_arr, out=scratch)
                np.minimum(scratch, self._ones, out=scratch)
                rows[4] = scratch
            else:  # the same float64 values, cast to float32 entry by entry
                r0, r4, cached, miss, inv_cap = (
                    rows[0],
                    rows[4],
                    st._cached,
                    st._miss,
                    self._inv_cap,
                )
                for u in touched:
                    r0[u] = cached[u]
                    r4[u] = min(miss[u] * inv_cap, 1.0)
        if drawn_freed is not self._freed:  # a new decision: rows 3 and 6
            # freed <= used <= capacity * (1 + 1e-12), so the clip at 1 that the
            # docstring's table states never changes a float32 value here.
            np.multiply(self._freed, self._inv_cap_arr, out=scratch)
            rows[3] = scratch
            rows[6] = self._mask[:M]
        self._drawn = (st.version, self._freed)
        stats, tables = self.stats, self._tables
        if self._lookup is not None and t < T:
            # Table look-ups of the same values the formulas below give: recency, and the
            # powers decay ** (t - last update) that scale the averages. (Indices are in
            # range; mode="wrap" only spares take's buffered copy.)
            np.subtract(t, self._src, out=self._idx)
            self._lookup.take(self._idx, out=self._looked, mode="wrap")
            np.multiply(self._looked, stats._padded, out=self._time_rows)
            rows[7:] = self._time_rows
        elif tables is not None:  # the episode's end (averages at T - 1), or a restore
            log_tab, pow_tab = tables
            rec = np.take(log_tab, t - stats.marks)
            rec[0] *= stats.count > 0
            rec[1] *= st.cached
            rows[7:9] = rec
            rows[9:] = stats._ema * pow_tab.take(min(t, T - 1) - stats.ema_times, axis=1)
        else:
            marks = stats.marks  # last request, cached since
            rec = np.log1p(np.maximum(t - marks, 0))
            rec *= -1.0 / self._log_T
            rec += 1.0
            np.maximum(rec, 0.0, out=rec)  # as _log_table: no rounding below 0
            rec[marks < 0] = 0.0
            rows[7:9] = rec
            rows[9:] = stats.ema(min(t, T - 1))
        out = self._ob
        need = st.used_bytes + st._miss[j] - cap if j >= 0 else 0.0
        out[F * M] = min(max((cap - st.used_bytes) / cap, 0.0), 1.0)
        out[F * M + 1] = min(max(need / cap, 0.0), 1.0)
        out[F * M + 2] = t / T
        if self.n_clock:
            out[F * M + N_GLOBAL_FEATURES : F * M + N_GLOBAL_FEATURES + N_CLOCK_FEATURES] = (
                self.clock_features(t)
            )
        if self.n_regime:
            self._write_regime_features(out[out.size - self.n_regime :])
        return out.copy()

    def clock_features(self, t: int) -> tuple[float, float]:
        """The observation's clock at request index ``t`` (``phase_count > 1``): the position
        ``x = (t mod cycle) / cycle`` in the demand cycle of ``phase_count * phase_length``
        requests as ``(0.5 + 0.5 sin 2 pi x, 0.5 + 0.5 cos 2 pi x)`` (plain floats; the vector
        env calls this per sub-env, so both give the same bits)."""
        angle = 2.0 * math.pi * (t % self._cycle) / self._cycle
        return 0.5 + 0.5 * math.sin(angle), 0.5 + 0.5 * math.cos(angle)

    def _write_regime_features(self, out: np.ndarray) -> None:
        """Write the ``obs_regime_features`` entries (see the class docstring) into ``out``.

        The per-regime averages are folded in lazily from the request log, each request once
        and in O(1): regime ``k`` keeps ``s_k`` with ``e_k = s_k * d ** (n_k - b_k)``, so a
        request adds ``(1 - d) * d ** (b_k - r)`` to its model's entry only (``r`` its count
        in the regime) and the row is one scaling of ``s_k``; ``b_k`` moves up (one O(M)
        rescale) every ``REGIME_REBASE`` requests of the regime so ``d ** (b_k - r)`` stays
        finite. A row is rewritten only when its regime got a request since it was drawn. A
        new episode or a :meth:`restore` to an earlier request starts the fold again."""
        n_rec = self._t + (self._pending >= 0)
        K, L, M = self._reg_K, self._reg_L, self.n_models
        if self._reg_log is not self._requests or n_rec < self._reg_seen:
            self._reg_log = self._requests
            self._reg_seen = 0
            self._reg_s = np.zeros((K, M))  # scaled sums (above)
            self._reg_b = [0] * K  # their reference counts b_k
            self._reg_n = [0] * K  # requests seen per regime
            self._reg_drawn = [None, None]  # (regime, count) each row slot shows
        d, inv_d, one_minus = self._reg_d, self._reg_inv_d, 1.0 - self._reg_d
        ssum, base, cnt, reqs = self._reg_s, self._reg_b, self._reg_n, self._req_list
        for i in range(self._reg_seen, n_rec):
            k = (i // L) % K
            r = cnt[k] + 1
            if r - base[k] > REGIME_REBASE:
                ssum[k] *= d ** (r - 1 - base[k])
                base[k] = r - 1
            ssum[k, reqs[i]] += one_minus * inv_d ** (r - base[k])
            cnt[k] = r
        self._reg_seen = max(self._reg_seen, n_rec)
        t = self._t
        k = (t // L) % K
        for row, reg in enumerate((k, (k + 1) % K)):
            n = cnt[reg]
            if self._reg_drawn[row] == (reg, n):
                continue
            self._reg_drawn[row] = (reg, n)
            weight = 1.0 - d**n
            seg = out[row * M : (row + 1) * M]
            if n == 0:
                seg[:] = 0.0
            else:
                scratch = self._reg_scratch
                np.multiply(ssum[reg], d ** (n - base[reg]) / weight, out=scratch)
                np.minimum(scratch, 1.0, out=scratch)
                seg[:] = scratch
            out[N_REGIME_ROWS * M + row] = weight
        out[N_REGIME_ROWS * M + 2] = (t % L) / L

    def _info(self, step: bool = False) -> dict[str, Any]:
        tot = self._tot
        n = max(tot["requests"], 1.0)
        if self._lean:
            return self._lean_info(tot, n, step)
        # A step hands its sums over (step() starts new ones); reset keeps them for step 1.
        info = self._acc if step else dict(self._acc)
        del info["reward"]
        info["hit_ratio"] = tot["hits"] / n
        info["byte_hit_ratio"] = tot["bytes_hit"] / max(tot["bytes_requested"], 1e-300)
        info["mean_latency_s"] = tot["latency_s"] / n
        info["deadline_satisfaction"] = tot["deadline_met"] / n
        info["t"] = self._t
        info["model"] = self._pending
        info["used_bytes"] = self.state.used_bytes
        info["action_mask"] = self._mask
        return info

    def _lean_info(self, tot: dict[str, float], n: float, step: bool) -> dict[str, Any]:
        acc = self._acc
        info = {
            "hit_ratio": tot["hits"] / n,
            "byte_hit_ratio": tot["bytes_hit"] / max(tot["bytes_requested"], 1e-300),
            "mean_latency_s": tot["latency_s"] / n,
            "deadline_satisfaction": tot["deadline_met"] / n,
        }
        sums = self._ep_sums
        for k in LEAN_SUM_KEYS:
            info[k] = acc[k]
        if not step:  # reset: its requests are charged (and summed) in the first step
            return info
        for k in LEAN_SUM_KEYS:
            sums[k] += acc[k]
        if self._done:
            for k in LEAN_LAST_KEYS:
                info["episode_" + k] = info[k]
            for k in LEAN_SUM_KEYS:
                info["episode_" + k] = sums[k]
        return info


# Up to this many changed models (with repeats), the observation's cache rows are updated
# entry by entry instead of rebuilt.
TOUCHED_MAX = 24

# Episodes up to this many requests get per-episode look-up tables for the time features.
MAX_TABLE_REQUESTS = 1 << 17


@functools.lru_cache(maxsize=8)
def _time_tables(T: int, decay: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Read-only tables of the observation's time features for episodes of ``T`` requests:
    ``log_tab[k] = 1 - log(1 + k) / log(1 + T)`` (recency after k requests, k <= T + 1) and
    ``pow_tab[s, k] = decay[s] ** k`` (k < T); None when ``T`` is too long to tabulate.

    Computed by the same numpy float64 operations as the per-step formulas, so a look-up
    returns the same bits."""
    if T > MAX_TABLE_REQUESTS:
        return None
    log_tab = _log_table(T)
    pow_tab = np.asarray(decay)[:, None] ** np.arange(T)[None, :]
    log_tab.flags.writeable = False
    pow_tab.flags.writeable = False
    return log_tab, pow_tab


def _log_table(T: int) -> np.ndarray:
    log_tab = np.log1p(np.arange(T + 2))
    log_tab *= -1.0 / math.log1p(T)
    log_tab += 1.0
    # k = T gives 1 - log(1 + T) / log(1 + T), which rounds to -2.2e-16 for some T (e.g. 2),
    # and k = T + 1 is below 0 (only read for never-requested models, whose row is zeroed):
    # the observation's bound is 0.
    np.maximum(log_tab, 0.0, out=log_tab)
    return log_tab


@functools.lru_cache(maxsize=8)
def _time_lookup(T: int, decay: tuple[float, ...]) -> np.ndarray:
    """One flat read-only table for the observation's time rows in episodes of ``T``
    requests (values of :func:`_time_tables`): entry ``k`` is ``log_tab[k]`` (recency after
    ``k`` requests, k <= T + 1); entry ``T + 2 + k`` is ``log_tab[k] * 0.0`` (the row's
    value for a model never requested / not cached, whose mark -1 gives ``k = t + 1``; the
    sign of that zero is the formula's); entry ``2T + 4 + sT + k`` is ``pow_tab[s, k]``."""
    log_tab, pow_tab = _time_tables(T, decay)
    tab = np.concatenate([log_tab, log_tab * 0.0, pow_tab.reshape(-1)])
    tab.flags.writeable = False
    return tab


# The keys of info="lean" (EdgeLLMCacheEnv.metadata["info_metrics"], by aggregation).
LEAN_LAST_KEYS = ("hit_ratio", "byte_hit_ratio", "mean_latency_s", "deadline_satisfaction")
LEAN_SUM_KEYS = ("backhaul_bytes", "requests", "hits", "evictions", "bypasses", "invalid_actions")

# The per-step sums of info="full" (the step's reward is summed beside them).
STEP_SUM_KEYS = (
    "requests",
    "hits",
    "bytes_requested",
    "bytes_hit",
    "backhaul_bytes",
    "latency_s",
    "deadline_met",
    "evictions",
    "bypasses",
    "invalid_actions",
)
# Every key of info="full" but action_mask, in the order the info dict has them.
FULL_INFO_KEYS = (*STEP_SUM_KEYS, *LEAN_LAST_KEYS, "t", "model", "used_bytes")
_ACC_KEYS = ("reward", *STEP_SUM_KEYS)
_TOTAL_KEYS = ("requests", "hits", "bytes_requested", "bytes_hit", "latency_s", "deadline_met")


def _zero_acc() -> dict[str, float]:
    return dict.fromkeys(_ACC_KEYS, 0.0)
