"""``mei-envs bench``: how fast every registered env, its vector version and its policies run,
as ratios to CartPole-v1 measured in the same process, and how their cost grows with size.

What is measured, for each registered env at each preset (``"default"`` is the default
config):

- **single env**: env-steps/s through ``gym.make`` (default wrappers), resets included, with
  legal actions. Actions are recorded beforehand from a seeded run (masked sampling where the
  env has ``action_masks()``) and replayed from the same seed, so the timed loop holds no
  policy at all. Reported as a ratio to CartPole-v1 (random actions, same method);
- **reset** cost [us] (``env.reset()`` without a seed, as in training) against CartPole's;
- **native vector env** (``gym.make_vec(id, num_envs=n, vectorization_mode=
  "vector_entry_point")``, ``"none"`` when the registration has no ``vector_entry_point``)
  at 1, 16 and 256 envs: env-steps/s, its ratio to CartPole-v1's native vector env at the
  same ``n``, and to the env's own single-env steps/s;
- **policies** (every baseline and oracle of :mod:`mei_envs.baselines.registry`): build time
  (an oracle's solve or a tuner's search happens there), per-episode ``reset`` time (offline
  oracles solve there) and time per decision (``act``) over one episode;
- **scaling**: step and oracle cost against the scenario's size (EdgeLLMCache catalog
  size, SplitFedAlloc devices, EarlyExitUpload tokens / backlog limit / FSMC states for the
  DP), with the exponent of a log-log least-squares fit; sizes the config validator refuses
  are reported as not reachable, with its message;
- **PPO** (``ppo=True``; needs torch and SB3): env-steps/s of PPO training against PPO on
  CartPole-v1 with the same settings.

Method: each timed quantity is measured in blocks of about ``block_s`` seconds, the env's
block and CartPole's alternated (which goes first alternates too), ``repeats`` times; the
headline ratio is the median of the per-repeat ratios, and the steps/s are medians. This
machine is shared and its speed drifts, which both sides of a ratio share.

This module imports numpy and gymnasium only; SB3/torch are imported inside the PPO part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

REFERENCE_ID = "CartPole-v1"
VECTOR_SIZES = (1, 16, 256)
RECORD_SEED = 12345  # seed of the recorded action sequences (any fixed value)


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """Budgets of one benchmark run (:data:`FULL` or :data:`QUICK`)."""

    block_s: float  # target duration of one timed block [s]
    repeats: int  # interleaved repeats per measured quantity
    vector_sizes: tuple[int, ...] = VECTOR_SIZES
    max_decisions: int = 200  # decisions per policy episode (an episode may end earlier)
    policy_limit_s: float = 10.0  # wall-clock cap on building + running one policy [s]
    preset_policy_limit_s: float = 3.0  # the same cap at the presets other than "default"
    scaling_block_s: float = 0.1  # timed block of a scaling point [s]
    scaling_repeats: int = 3
    scaling_max_record_s: float = 20.0  # a scaling point's recording stops mid-episode here
    # PPO: same settings for every env and CartPole.
    ppo_n_envs: int = 4
    ppo_n_steps: int = 256
    ppo_batch_size: int = 64
    ppo_n_epochs: int = 10
    ppo_timesteps: int = 4096
    ppo_repeats: int = 3


FULL = BenchSettings(block_s=0.1, repeats=5)
QUICK = BenchSettings(
    block_s=0.003,
    repeats=3,
    max_decisions=10,
    policy_limit_s=3.0,
    preset_policy_limit_s=3.0,
    scaling_block_s=0.003,
    scaling_repeats=2,
    scaling_max_record_s=0.5,
    ppo_n_envs=2,
    ppo_n_steps=64,
    ppo_batch_size=32,
    ppo_n_epochs=1,
    ppo_timesteps=256,
    ppo_repeats=1,
)
PARTS = ("single", "vector", "policies", "scaling")


# ---- machine description ----------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, cores, load, Python/numpy/gymnasium versions and the UTC date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_avg_1_5_15": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "platform": platform.platform(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---- small helpers ----------------------------------------------------------------------------
class BudgetExceeded(Exception):
    """A measurement ran past its wall-clock cap."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` inside the block after ``seconds`` (SIGALRM; only in the
    main thread on POSIX, elsewhere the block runs uncapped)."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise BudgetExceeded(f"over the {seconds:g} s budget")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


def fit_exponent(sizes: Sequence[float], times: Sequence[float]) -> dict[str, float] | None:
    """Least-squares fit of ``log(time) = a + b log(size)``: ``{"exponent": b, "coef": e^a,
    "r2": ...}``, or None with fewer than two distinct positive points."""
    x = np.asarray(sizes, dtype=float)
    y = np.asarray(times, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y = np.log(x[ok]), np.log(y[ok])
    if np.unique(x).size < 2:
        return None
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
    return {"exponent": float(b), "coef": float(math.exp(a)), "r2": r2}


def _median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=float)))


def _err(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}"[:300]


class LegalSampler:
    """Legal random actions for a single env (``vector=False``) or a vector env: masked
    sampling where the env has ``action_masks()`` and a ``Discrete``/``MultiDiscrete`` action
    space, otherwise ``action_space.sample()``."""

    def __init__(self, env: Any, seed: int, vector: bool = False) -> None:
        self.env = env
        self.vector = vector
        self.rng = np.random.default_rng(seed)
        space = env.single_action_space if vector else env.action_space
        self.space = space
        self.batch_space = env.action_space
        self.batch_space.seed(seed)
        self.masks = getattr(env, "action_masks", None) or getattr(
            env.unwrapped, "action_masks", None
        )
        if isinstance(space, gym.spaces.Discrete):
            self.nvec = np.array([int(space.n)])
        elif isinstance(space, gym.spaces.MultiDiscrete):
            self.nvec = np.asarray(space.nvec).reshape(-1)
        else:
            self.masks = None
        self.masked = self.masks is not None

    def _pick(self, mask: np.ndarray) -> np.ndarray:
        """One index per row of ``mask`` (rows, n), uniform over its True entries (a row with
        none: index 0)."""
        counts = mask.sum(axis=1)
        k = np.floor(self.rng.random(mask.shape[0]) * np.maximum(counts, 1)).astype(np.int64)
        return np.argmax(np.cumsum(mask, axis=1) > k[:, None], axis=1)

    def sample(self) -> Any:
        if not self.masked:
            return self.batch_space.sample()
        mask = np.asarray(self.masks(), dtype=bool)
        if not self.vector:
            mask = mask[None, :]
        parts = np.split(mask, np.cumsum(self.nvec)[:-1], axis=1)
        picks = np.stack([self._pick(p) for p in parts], axis=1)  # (rows, dims)
        if isinstance(self.space, gym.spaces.Discrete):
            out = picks[:, 0] + int(self.space.start)
            return int(out[0]) if not self.vector else out
        out = picks + np.asarray(self.space.start).reshape(-1)
        return out[0] if not self.vector else out


@dataclasses.dataclass
class Recording:
    """Actions of a seeded run, to be replayed from the same seed with no policy."""

    actions: list[Any]
    episodes_ended: int
    seconds: float


def record_single(
    env: gym.Env,
    seed: int,
    block_s: float,
    max_steps: int = 200_000,
    max_s: float | None = None,
    min_steps: int = 1,
) -> Recording:
    """Legal actions from ``reset(seed)`` on (later episodes by ``reset()``) until at least
    ``block_s`` seconds have passed, at least ``min_steps`` were taken and an episode has
    ended; or ``max_steps`` steps, or ``max_s`` seconds (default 20 blocks) mid-episode."""
    sampler = LegalSampler(env, seed)
    max_s = 20 * block_s if max_s is None else max_s
    env.reset(seed=seed)
    actions: list[Any] = []
    ends = 0
    t0 = time.perf_counter()
    while len(actions) < max_steps:
        a = sampler.sample()
        actions.append(a)
        _, _, term, trunc, _ = env.step(a)
        elapsed = time.perf_counter() - t0
        if term or trunc:
            ends += 1
            env.reset()
            if elapsed >= block_s and len(actions) >= min_steps:
                break
        elif elapsed >= max_s:
            break
    return Recording(actions, ends, time.perf_counter() - t0)


def calibrated_recording(
    env: gym.Env, seed: int, block_s: float, max_s: float | None = None
) -> Recording:
    """A recording whose *replay* lasts about ``block_s`` (recording is slower: it samples
    the actions). A block much shorter than the scheduler's time slice would time the
    machine's other processes, not the env."""
    rec = record_single(env, seed, block_s, max_s=max_s)
    t = replay_single(env, seed, rec)
    if t < block_s:
        need = int(len(rec.actions) * block_s / max(t, 1e-9)) + 1
        long_s = max(40 * block_s, 5.0, max_s or 0.0)
        rec = record_single(env, seed, 0.0, min_steps=need, max_s=long_s)
    return rec


def replay_single(env: gym.Env, seed: int, rec: Recording) -> float:
    """Seconds to replay ``rec`` (resets included); checks the episodes end where they did."""
    env.reset(seed=seed)
    step, reset = env.step, env.reset
    ends = 0
    t0 = time.perf_counter()
    for a in rec.actions:
        _, _, term, trunc, _ = step(a)
        if term or trunc:
            ends += 1
            reset()
    dt = time.perf_counter() - t0
    if ends != rec.episodes_ended:
        raise RuntimeError(
            f"replay ended {ends} episodes where the recording ended {rec.episodes_ended}: "
            "the env is not deterministic for a fixed seed"
        )
    return dt


def calibrated_vector_recording(env: Any, seed: int, block_s: float) -> Recording:
    """:func:`record_vector` sized so that its replay lasts about ``block_s``."""
    rec = record_vector(env, seed, block_s)
    t = replay_vector(env, seed, rec)
    if t < block_s:
        need = int(len(rec.actions) * block_s / max(t, 1e-9)) + 1
        rec = record_vector(env, seed, 0.0, min_steps=need)
    return rec


def record_vector(env: Any, seed: int, block_s: float, min_steps: int = 8) -> Recording:
    """Legal batched actions of a vector env from ``reset(seed)`` for about ``block_s`` s
    (and at least ``min_steps`` steps)."""
    sampler = LegalSampler(env, seed, vector=True)
    env.reset(seed=seed)
    actions: list[Any] = []
    t0 = time.perf_counter()
    while len(actions) < min_steps or time.perf_counter() - t0 < block_s:
        a = sampler.sample()
        actions.append(a)
        env.step(a)
    return Recording(actions, 0, time.perf_counter() - t0)


def replay_vector(env: Any, seed: int, rec: Recording) -> float:
    env.reset(seed=seed)
    step = env.step
    t0 = time.perf_counter()
    for a in rec.actions:
        step(a)
    return time.perf_counter() - t0


def _paired(
    run_env: Callable[[], float],
    run_ref: Callable[[], float],
    repeats: int,
) -> tuple[list[float], list[float]]:
    """Per repeat, one env block and one reference block, alternating which goes first.
    Each callable returns a rate (higher is faster) or a cost; returned as lists."""
    run_env(), run_ref()  # warm-up (first-call checks, caches)
    env_v, ref_v = [], []
    for r in range(repeats):
        if r % 2 == 0:
            env_v.append(run_env())
            ref_v.append(run_ref())
        else:
            ref_v.append(run_ref())
            env_v.append(run_env())
    return env_v, ref_v


# ---- single env, reset, vector env ------------------------------------------------------------
def single_env_speed(
    env_id: str, kwargs: Mapping[str, Any], settings: BenchSettings
) -> dict[str, Any]:
    """Steps/s through ``gym.make`` (and reset cost) against CartPole-v1, interleaved."""
    env = gym.make(env_id, **kwargs)
    ref = gym.make(REFERENCE_ID)
    rec = calibrated_recording(env, RECORD_SEED, settings.block_s)
    rec_ref = calibrated_recording(ref, RECORD_SEED, settings.block_s)
    env_sps, ref_sps = _paired(
        lambda: len(rec.actions) / replay_single(env, RECORD_SEED, rec),
        lambda: len(rec_ref.actions) / replay_single(ref, RECORD_SEED, rec_ref),
        settings.repeats,
    )
    ratios = [a / b for a, b in zip(env_sps, ref_sps, strict=True)]
    steps_per_episode = len(rec.actions) / max(rec.episodes_ended, 1)
    masked = LegalSampler(env, 0).masked

    def reset_us(e: gym.Env, n: int) -> Callable[[], float]:
        def run() -> float:
            reset = e.reset
            t0 = time.perf_counter()
            for _ in range(n):
                reset()
            return 1e6 * (time.perf_counter() - t0) / n

        return run

    # Calls per reset block: about block_s of the env's resets (at least 20).
    e_probe = reset_us(env, 5)()
    n_env = max(20, int(settings.block_s / max(e_probe * 1e-6, 1e-7)))
    r_probe = reset_us(ref, 5)()
    n_ref = max(20, int(settings.block_s / max(r_probe * 1e-6, 1e-7)))
    env_us, ref_us = _paired(reset_us(env, n_env), reset_us(ref, n_ref), settings.repeats)
    env.close()
    ref.close()
    return {
        "steps_per_s": _median(env_sps),
        "us_per_step": 1e6 / _median(env_sps),
        "cartpole_steps_per_s": _median(ref_sps),
        "ratio_to_cartpole": _median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
        "steps_per_block": len(rec.actions),
        "steps_per_episode": steps_per_episode,
        "masked_actions": masked,
        "reset_us": _median(env_us),
        "cartpole_reset_us": _median(ref_us),
        "reset_ratio_to_cartpole": _median([a / b for a, b in zip(env_us, ref_us, strict=True)]),
    }


def has_vector_entry_point(env_id: str) -> bool:
    return gym.spec(env_id).vector_entry_point is not None


def vector_env_speed(
    env_id: str,
    kwargs: Mapping[str, Any],
    n: int,
    settings: BenchSettings,
    single_steps_per_s: float | None = None,
) -> dict[str, Any] | str:
    """Env-steps/s of the native vector env at ``n`` sub-envs against CartPole-v1's native
    vector env at the same ``n``; ``"none"`` without a ``vector_entry_point``."""
    if not has_vector_entry_point(env_id):
        return "none"
    mode = "vector_entry_point"
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode=mode, **kwargs)
    ref = gym.make_vec(REFERENCE_ID, num_envs=n, vectorization_mode=mode)
    rec = calibrated_vector_recording(env, RECORD_SEED, settings.block_s)
    rec_ref = calibrated_vector_recording(ref, RECORD_SEED, settings.block_s)
    env_sps, ref_sps = _paired(
        lambda: n * len(rec.actions) / replay_vector(env, RECORD_SEED, rec),
        lambda: n * len(rec_ref.actions) / replay_vector(ref, RECORD_SEED, rec_ref),
        settings.repeats,
    )
    masked = LegalSampler(env, 0, vector=True).masked
    env.close()
    ref.close()
    ratios = [a / b for a, b in zip(env_sps, ref_sps, strict=True)]
    out: dict[str, Any] = {
        "num_envs": n,
        "env_steps_per_s": _median(env_sps),
        "cartpole_env_steps_per_s": _median(ref_sps),
        "ratio_to_cartpole_vector": _median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
        "masked_actions": masked,
    }
    if single_steps_per_s:
        out["ratio_to_own_single"] = out["env_steps_per_s"] / single_steps_per_s
    return out


# ---- policies ----------------------------------------------------------------------------------
def policy_cost(
    env_id: str,
    kwargs: Mapping[str, Any],
    name: str,
    settings: BenchSettings,
    seed: int = 0,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """Build time, per-episode reset time and time per decision of one registered policy over
    (up to ``max_decisions`` decisions of) one episode, capped at ``limit_s`` (default
    ``policy_limit_s``) of wall-clock time."""
    from mei_envs.baselines.registry import get_policy_spec, make_policy

    spec = get_policy_spec(env_id, name)
    out: dict[str, Any] = {"policy": name, "kind": spec.kind}
    act_s: list[float] = []
    limit_s = settings.policy_limit_s if limit_s is None else limit_s
    try:
        with time_limit(limit_s):
            env = gym.make(env_id, **kwargs)
            t0 = time.perf_counter()
            pol = make_policy(env_id, name, env)
            out["build_s"] = time.perf_counter() - t0
            obs, info = env.reset(seed=seed)
            t0 = time.perf_counter()
            pol.reset(obs, info)
            out["episode_reset_s"] = time.perf_counter() - t0
            done = False
            while not done and len(act_s) < settings.max_decisions:
                t0 = time.perf_counter()
                a = pol.act(obs, info)
                act_s.append(time.perf_counter() - t0)
                obs, _, term, trunc, info = env.step(a)
                done = term or trunc
            out["episode_done"] = bool(done)
    except BudgetExceeded:
        if "build_s" not in out:
            where = "while building (build > cap)"
        elif "episode_reset_s" not in out:
            where = "in the episode reset (reset > cap)"
        elif not act_s:
            where = "in the first decision"
        else:
            where = f"after {len(act_s)} decisions"
        out["error"] = f"stopped by the {limit_s:g} s cap {where}"
    except (ValueError, MemoryError, RuntimeError) as exc:
        out["error"] = _err(exc)
    if act_s:
        out["decisions"] = len(act_s)
        out["us_per_decision_median"] = 1e6 * _median(act_s)
        out["us_per_decision_mean"] = 1e6 * float(np.mean(act_s))
    return out


def env_policies(env_id: str) -> list[str]:
    from mei_envs.baselines.registry import list_policies

    return [s.name for s in list_policies(env_id)[env_id]]


# ---- scaling -----------------------------------------------------------------------------------
def scaled_catalog_doc(n_models: int) -> dict[str, Any]:
    """A catalog of exactly ``n_models`` models shaped like EdgeLLMCache-v0's default: its
    three bases, each with LoRA children (q,v and all_linear targets, ranks 1, 2, 3, ...),
    partial fine-tunes of the top 2/4/8 layers and int8/int4/q4_0 variants, taken family by
    family in turn (base first) until ``n_models`` are chosen. Sizes come from
    :func:`mei_envs.cache.build_catalog` (the cost tables), as for the default catalog."""
    from mei_envs import cache
    from mei_envs.envs.edge_llm_cache import EdgeLLMCacheConfig

    if n_models < 1:
        raise ValueError(f"n_models={n_models!r}: must be >= 1")
    d = EdgeLLMCacheConfig()
    per_base_fixed = 1 + len(d.partial_top_layers) + len(d.quant_precisions)
    n_bases = len(d.bases)
    need_lora = max(0, math.ceil(n_models / n_bases) - per_base_fixed)
    ranks = range(1, math.ceil(need_lora / len(d.lora_targets)) + 1)
    cat = cache.build_catalog(
        d.bases,
        base_precision=d.base_precision,
        lora_ranks=ranks,
        lora_targets=d.lora_targets,
        adapter_precision=d.adapter_precision,
        partial_top_layers=d.partial_top_layers,
        quant_precisions=d.quant_precisions,
    )
    doc = cat.to_dict()
    by_family: dict[str, list[dict[str, Any]]] = {}
    for m in doc["models"]:
        by_family.setdefault(m["family"], []).append(m)
    # Within a family: base, then alternate kinds so small sizes keep the default's mix.
    order_kind = {"base": 0, "partial": 1, "quantised": 2, "lora": 3}
    for fam, ms in by_family.items():
        head = [m for m in ms if m["kind"] == "base"]
        rest = [m for m in ms if m["kind"] != "base"]
        groups: dict[str, list[dict[str, Any]]] = {}
        for m in rest:
            groups.setdefault(m["kind"], []).append(m)
        mixed = []
        kinds = sorted(groups, key=lambda k: order_kind.get(k, 9))
        while any(groups[k] for k in kinds):
            for k in kinds:
                if groups[k]:
                    mixed.append(groups[k].pop(0))
        by_family[fam] = head + mixed
    chosen: list[dict[str, Any]] = []
    fams = list(by_family)
    i = 0
    while len(chosen) < n_models:
        fam = fams[i % len(fams)]
        if by_family[fam]:
            chosen.append(by_family[fam].pop(0))
        i += 1
    used = {b for m in chosen for b in m["blocks"]}
    return {"blocks": {b: s for b, s in doc["blocks"].items() if b in used}, "models": chosen}


@dataclasses.dataclass
class ScalingAxis:
    """One size axis: the env, the sizes, how a size becomes a config, and the policies whose
    per-decision and build/reset cost are measured along it."""

    env_id: str
    name: str  # what the size counts
    sizes: tuple[int, ...]
    config: Callable[[int], dict[str, Any]]
    policies: tuple[str, ...] = ()
    per_unit: str | None = None  # config field: work units per episode (us per unit reported)
    step: bool = True  # measure the env step (False: only the policies)


def scaling_axes(tmpdir: Path) -> list[ScalingAxis]:
    """The size axes of issue 12 (catalog, devices, tokens/backlog/FSMC states)."""

    def cache_cfg(n: int) -> dict[str, Any]:
        path = tmpdir / f"catalog_{n}.json"
        if not path.exists():
            path.write_text(json.dumps(scaled_catalog_doc(n)))
        return {"catalog_file": str(path)}

    def tiny_cfg(n: int) -> dict[str, Any]:
        from mei_envs.cache import random_tiny_catalog

        path = tmpdir / "tiny_catalog.json"
        doc, capacity = random_tiny_catalog(np.random.default_rng(0))
        if not path.exists():
            path.write_text(json.dumps(doc))
        return {"catalog_file": str(path), "capacity_bytes": capacity, "requests_per_episode": n}

    ee, cache_id, sf = (
        "mei_envs/EarlyExitUpload-v1",
        "mei_envs/EdgeLLMCache-v0",
        "mei_envs/SplitFedAlloc-v0",
    )
    cache_axes = [
        ScalingAxis(
            cache_id,
            "catalog models",
            (10, 50, 200, 1000),
            cache_cfg,
            ("lru", "belady", "belady_shared"),
            per_unit="requests_per_episode",
        ),
        ScalingAxis(
            cache_id,
            "requests (tiny random catalog)",
            (10, 20, 40, 80),
            tiny_cfg,
            ("offline_opt",),
            step=False,
        ),
    ]
    # Axes whose size is the value of one config field:
    # (env, field, what the size counts, sizes, oracle, per-unit field, step timed)
    field_axes = [
        (sf, "n_devices", "devices", (2, 10, 50, 200), "myopic_oracle", None, True),
        (ee, "tokens", "tokens", (16, 64, 256, 1024), "dp_oracle", "tokens", True),
        (ee, "backlog_limit", "backlog limit", (4, 16, 64, 256), "dp_oracle", None, False),
        (ee, "fsmc_states", "FSMC states", (2, 8, 32, 64), "dp_oracle", None, False),
    ]
    return cache_axes + [
        ScalingAxis(env_id, name, sizes, _field_config(field), (oracle,), per_unit, step)
        for env_id, field, name, sizes, oracle, per_unit, step in field_axes
    ]


def _field_config(field: str) -> Callable[[int], dict[str, Any]]:
    """The config of a size on an axis whose size is the value of config field ``field``."""
    return lambda n: {field: n}


def scaling_point(axis: ScalingAxis, size: int, settings: BenchSettings) -> dict[str, Any]:
    """Step cost and the axis' policies' costs at one size."""
    from mei_envs.config import ConfigError

    out: dict[str, Any] = {"size": size}
    try:
        cfg = axis.config(size)
        env = gym.make(axis.env_id, config=cfg)
    except ConfigError as exc:
        out["not_reachable"] = _err(exc)
        return out
    if axis.step:
        # The recording (same steps) is the warm-up; it runs whole episodes when it can, so
        # the per-unit cost includes resets.
        rec = calibrated_recording(
            env, RECORD_SEED, settings.scaling_block_s, max_s=settings.scaling_max_record_s
        )
        secs = [replay_single(env, RECORD_SEED, rec) for _ in range(settings.scaling_repeats)]
        us_step = 1e6 * _median(secs) / len(rec.actions)
        out["us_per_step"] = us_step
        out["steps_timed"] = len(rec.actions)
        if rec.episodes_ended:
            out["steps_per_episode"] = len(rec.actions) / rec.episodes_ended
            if axis.per_unit:
                units = getattr(env.unwrapped.config, axis.per_unit)
                out["us_per_unit"] = us_step * out["steps_per_episode"] / units
    env.close()
    kw = {"config": cfg}
    for name in axis.policies:
        out[name] = policy_cost(axis.env_id, kw, name, settings)
    return out


def _scaling_fits(axis: ScalingAxis, points: list[dict[str, Any]]) -> dict[str, Any]:
    fits: dict[str, Any] = {}

    def fit(key: Callable[[dict[str, Any]], float | None]) -> dict[str, float] | None:
        xs, ys = [], []
        for p in points:
            v = key(p)
            if v is not None:
                xs.append(p["size"])
                ys.append(v)
        return fit_exponent(xs, ys)

    if axis.step:
        fits["us_per_step"] = fit(lambda p: p.get("us_per_step"))
        if axis.per_unit:
            fits["us_per_unit"] = fit(lambda p: p.get("us_per_unit"))
    for name in axis.policies:
        fits[f"{name}.us_per_decision"] = fit(
            lambda p, n=name: p.get(n, {}).get("us_per_decision_median")
        )
        # Build and reset are fitted only where they do work (a solve or a search): a
        # quantity that stays under a millisecond is timer noise and overhead.
        for key in ("build_s", "episode_reset_s"):
            values = [p.get(name, {}).get(key) for p in points]
            if max((v for v in values if v is not None), default=0.0) >= 1e-3:
                fits[f"{name}.{key}"] = fit(lambda p, n=name, k=key: p.get(n, {}).get(k))
    return {k: v for k, v in fits.items() if v is not None}


# ---- PPO --------------------------------------------------------------------------------------
def ppo_speed(env_ids: Sequence[str], settings: BenchSettings) -> dict[str, Any]:
    """PPO training env-steps/s on each env against CartPole-v1 with the same settings.

    Uses ``mei_envs.agents.throughput.ppo_steps_per_s`` when it is importable (it runs the
    interleaved comparison itself, through the SB3 adapter where the env has a native vector
    env, as ``mei-envs train`` does, and adds CartPole-v1 with the env's network: padded
    observation, the env's action space); otherwise SB3 directly: PPO ``MlpPolicy`` on a
    ``DummyVecEnv`` of each, alternated, ``ppo_repeats`` times, ``learn()`` wall time. Plain
    PPO runs an env with action masks in its unmasked mode (``invalid_action="bypass"``); the
    helper also times ``MaskablePPO`` with the masks there (``"maskable_ppo"`` in its row)."""
    try:
        import stable_baselines3  # noqa: F401
        import torch
    except ImportError as exc:
        return {"skipped": f"PPO part needs torch and stable-baselines3 ({_err(exc)})"}
    s = settings
    params = {
        "n_envs": s.ppo_n_envs,
        "n_steps": s.ppo_n_steps,
        "batch_size": s.ppo_batch_size,
        "n_epochs": s.ppo_n_epochs,
        "total_timesteps": s.ppo_timesteps,
        "repeats": s.ppo_repeats,
        "policy": "MlpPolicy, default net (pi [64, 64], vf [64, 64])",
        "seed": 0,
    }
    helper = _throughput_helper()
    out: dict[str, Any] = {
        "settings": params,
        "method": (
            "mei_envs.agents.throughput.ppo_steps_per_s"
            if helper
            else "SB3 PPO('MlpPolicy') on make_vec_env (DummyVecEnv), learn() wall time"
        ),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "envs": {},
    }
    for env_id in env_ids:
        try:
            out["envs"][env_id] = (
                _ppo_via_helper(helper, env_id, params) if helper else _ppo_direct(env_id, params)
            )
        except Exception as exc:  # noqa: BLE001 - one env's failure is reported, not fatal
            out["envs"][env_id] = {"error": _err(exc)}
    return out


def _throughput_helper() -> Callable[..., Any] | None:
    try:
        from mei_envs.agents.throughput import ppo_steps_per_s  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ppo_steps_per_s


def _ppo_via_helper(
    helper: Callable[..., Any], env_id: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """PPO on ``env_id`` (its unmasked mode where it has one) and, where the env has action
    masks and the helper takes ``algo``, also MaskablePPO with the masks (under
    ``"maskable_ppo"``), each against CartPole-v1 with the same settings."""
    import inspect

    sig = inspect.signature(helper)
    base = {
        "n_envs": params["n_envs"],
        "total_steps": params["total_timesteps"],
        "repeats": params["repeats"],
        "ppo_kwargs": {k: params[k] for k in ("n_steps", "batch_size", "n_epochs")},
        "seed": 0,
    }

    def one(algo: str, env_config: dict[str, Any]) -> dict[str, Any]:
        kw = {**base, "env_config": env_config or None, "algo": algo}
        res = helper(env_id, **{k: v for k, v in kw.items() if k in sig.parameters})
        ref = res.get("reference_steps_per_s")
        row = {
            "algo": res.get("algo", "ppo"),
            "env_steps_per_s": float(res["env_steps_per_s"]),
            "cartpole_env_steps_per_s": float(ref) if ref is not None else None,
            "ratio_to_cartpole": float(res.get("ratio", res["env_steps_per_s"] / ref)),
            "vec_env": res.get("vec_env"),
            "env_kwargs": env_config,
        }
        for key in (
            "policy",
            "clock",
            "env_runs",
            "reference_runs",
            "matched_runs",
            "matched_skipped",
        ):
            if key in res:
                row[key] = res[key]
        if "matched_steps_per_s" in res:
            row["cartpole_matched_env_steps_per_s"] = float(res["matched_steps_per_s"])
            row["ratio_to_matched"] = float(res["ratio_to_matched"])
            row["network_factor"] = float(res["network_factor"])
        return row

    out = one("ppo", _unmasked_config(env_id))
    if "algo" in sig.parameters and _has_action_masks(env_id):
        try:
            out["maskable_ppo"] = one("maskable_ppo", {})
        except Exception as exc:  # noqa: BLE001 - reported in its row
            out["maskable_ppo"] = {"error": _err(exc)}
    return out


def _has_action_masks(env_id: str) -> bool:
    """Whether MaskablePPO can train ``env_id`` at its default config: ``action_masks()`` and
    a discrete action space (SplitFedAlloc's masks are for its discrete mode only)."""
    env = gym.make(env_id)
    try:
        discrete = isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        return discrete and callable(getattr(env.unwrapped, "action_masks", None))
    finally:
        env.close()


def _unmasked_config(env_id: str) -> dict[str, Any]:
    """Plain PPO ignores action masks: an env that can refuse illegal actions is asked to
    serve them its documented unmasked way (EdgeLLMCache: ``invalid_action="bypass"``)."""
    env_cls = gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point)
    fields = getattr(getattr(env_cls, "config_class", None), "__dataclass_fields__", {})
    return {"invalid_action": "bypass"} if "invalid_action" in fields else {}


def _ppo_direct(env_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    unmasked = _unmasked_config(env_id)

    def measure(eid: str, seed: int) -> float:
        kw = unmasked if eid == env_id else {}
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env

        # A callable, so SB3 passes no render_mode (our envs do not render).
        venv = make_vec_env(lambda: gym.make(eid, **kw), n_envs=params["n_envs"], seed=seed)
        try:
            model = PPO(
                "MlpPolicy",
                venv,
                n_steps=params["n_steps"],
                batch_size=params["batch_size"],
                n_epochs=params["n_epochs"],
                seed=seed,
                device="cpu",
                verbose=0,
            )
            t0 = time.perf_counter()
            model.learn(total_timesteps=params["total_timesteps"])
            return model.num_timesteps / (time.perf_counter() - t0)
        finally:
            venv.close()

    env_v, ref_v = [], []
    for r in range(params["repeats"]):
        pair = [(env_v, env_id), (ref_v, REFERENCE_ID)]
        for dst, eid in pair if r % 2 == 0 else pair[::-1]:
            dst.append(measure(eid, seed=r))
    ratios = [a / b for a, b in zip(env_v, ref_v, strict=True)]
    return {
        "env_steps_per_s": _median(env_v),
        "cartpole_env_steps_per_s": _median(ref_v),
        "ratio_to_cartpole": _median(ratios),
        "algo": "ppo",
        "vec_env": "dummy",
        "env_kwargs": unmasked,
    }


# ---- the whole run -----------------------------------------------------------------------------
def env_presets(env_id: str) -> list[str]:
    from mei_envs.registration import env_presets as _presets

    return _presets(env_id) or ["default"]


def run(
    settings: BenchSettings = FULL,
    env_ids: Sequence[str] | None = None,
    *,
    parts: Sequence[str] = PARTS,
    presets: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
    ppo: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result (see :func:`to_markdown`).

    Args:
        settings: budgets (:data:`FULL` or :data:`QUICK`).
        env_ids: envs to measure (default: every registered env).
        parts: any of ``"single", "vector", "policies", "scaling"``.
        presets: only these preset names (default: every preset of each env).
        policies: only these policy names (default: every registered policy).
        ppo: also run the PPO comparison (torch + SB3).
        log: called with one line per finished measurement (progress).
    """
    import mei_envs

    log = log or (lambda line: None)
    env_ids = list(env_ids or mei_envs.ENV_IDS)
    for e in env_ids:
        if e not in mei_envs.ENV_IDS:
            raise ValueError(f"--env {e!r}: unknown env; registered: {list(mei_envs.ENV_IDS)}")
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise ValueError(f"--parts {bad}: allowed are {list(PARTS)}")
    if presets is not None:
        known = {p for e in env_ids for p in env_presets(e)}
        bad = sorted(set(presets) - known)
        if bad:
            raise ValueError(f"--preset {bad}: no such preset; the envs have {sorted(known)}")
    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": dataclasses.asdict(settings),
        "reference": REFERENCE_ID,
        "envs": {},
    }
    for env_id in env_ids:
        entry: dict[str, Any] = {
            "vector_entry_point": gym.spec(env_id).vector_entry_point,
            "presets": {},
        }
        names = [p for p in env_presets(env_id) if presets is None or p in presets]
        for preset in names:
            kw = {"preset": preset} if preset != "default" else {}
            row: dict[str, Any] = {}
            single_sps = None
            if "single" in parts:
                try:
                    row["single"] = single_env_speed(env_id, kw, settings)
                except Exception as exc:  # noqa: BLE001 - reported in the row, run goes on
                    row["single"] = {"error": _err(exc)}
                    log(f"{env_id} [{preset}] single FAILED: {_err(exc)}")
                else:
                    single_sps = row["single"]["steps_per_s"]
                    log(
                        f"{env_id} [{preset}] single {row['single']['ratio_to_cartpole']:.2f}x "
                        f"CartPole, reset {row['single']['reset_us']:.1f} us"
                    )
            if "vector" in parts:
                row["vector"] = {}
                for n in settings.vector_sizes:
                    try:
                        v = vector_env_speed(env_id, kw, n, settings, single_sps)
                    except Exception as exc:  # noqa: BLE001 - reported in the row
                        v = {"num_envs": n, "error": _err(exc)}
                    row["vector"][str(n)] = v
                    if isinstance(v, dict):
                        log(
                            f"{env_id} [{preset}] vector n={n}: "
                            + (
                                f"FAILED: {v['error']}"
                                if "error" in v
                                else f"{v['env_steps_per_s']:.0f} env-steps/s, "
                                f"{v['ratio_to_cartpole_vector']:.3f}x CartPole vec"
                            )
                        )
            if "policies" in parts:
                row["policies"] = {}
                for name in env_policies(env_id):
                    if policies is not None and name not in policies:
                        continue
                    limit = (
                        settings.policy_limit_s
                        if preset == "default"
                        else settings.preset_policy_limit_s
                    )
                    row["policies"][name] = policy_cost(env_id, kw, name, settings, limit_s=limit)
                    log(f"{env_id} [{preset}] policy {name}: {_policy_cell(row['policies'][name])}")
            entry["presets"][preset] = row
        result["envs"][env_id] = entry
    if "scaling" in parts:
        result["scaling"] = []
        with tempfile.TemporaryDirectory(prefix="mei_bench_") as tmp:
            for axis in scaling_axes(Path(tmp)):
                if axis.env_id not in env_ids:
                    continue
                points = []
                for size in axis.sizes:
                    try:
                        points.append(scaling_point(axis, size, settings))
                    except Exception as exc:  # noqa: BLE001 - reported in the table
                        points.append({"size": size, "error": _err(exc)})
                    log(f"scaling {axis.env_id} {axis.name}={size}: {_scaling_log(points[-1])}")
                result["scaling"].append(
                    {
                        "env_id": axis.env_id,
                        "axis": axis.name,
                        "per_unit": axis.per_unit,
                        "step": axis.step,
                        "points": points,
                        "fits": _scaling_fits(axis, points),
                    }
                )
    if ppo:
        result["ppo"] = ppo_speed(env_ids, settings)
        log(f"ppo: {json.dumps(result['ppo'].get('envs', result['ppo']))}")
    return result


def _scaling_log(p: dict[str, Any]) -> str:
    if "not_reachable" in p or "error" in p:
        return p.get("not_reachable") or p["error"]
    cells = [f"{k}={v:.3g}" for k, v in p.items() if k.startswith("us_per")]
    cells += [f"{k}: {_policy_cell(v)}" for k, v in p.items() if isinstance(v, dict)]
    return ", ".join(cells)


# ---- Markdown ---------------------------------------------------------------------------------
def _f(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _policy_cell(p: dict[str, Any]) -> str:
    parts = []
    if "build_s" in p:
        parts.append(f"build {_dur(p['build_s'])}")
    if "episode_reset_s" in p:
        parts.append(f"reset {_dur(p['episode_reset_s'])}")
    if "us_per_decision_median" in p:
        parts.append(f"{p['us_per_decision_median']:.1f} us/decision")
    if "error" in p:
        parts.append(p["error"])
    return ", ".join(parts)


def to_markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: machine line, then one table per part that was run."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, load "
        f"{m['load_avg_1_5_15']}; Python {m['python']}, numpy {m['numpy']}, gymnasium "
        f"{m['gymnasium']}; {m['date_utc']}. Medians of {result['settings']['repeats']} "
        f"interleaved repeats; ratios are to {result['reference']} in the same process.",
        "",
    ]
    envs = result["envs"]
    rows = [(e, p, r) for e, d in envs.items() for p, r in d["presets"].items()]
    if any("single" in r or "vector" in r for _, _, r in rows):
        sizes = [str(n) for n in result["settings"]["vector_sizes"]]
        head = [
            "env",
            "preset",
            "step x CartPole",
            "us/step",
            "reset us (CartPole)",
            "reset / CartPole's",
        ]
        head += [f"vec{n} x CartPole vec{n}" for n in sizes]
        head += [f"vec{sizes[-1]} env-steps/s", f"vec{sizes[-1]} x own single"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        errors = []
        for env_id, preset, r in rows:
            s = r.get("single", {})
            v = r.get("vector", {})
            for what, x in [("single", s), *((f"vec{n}", v.get(n)) for n in sizes)]:
                if isinstance(x, dict) and "error" in x:
                    errors.append(f"{env_id} [{preset}] {what}: {x['error']}")
            cells = [
                env_id.split("/")[-1],
                preset,
                _f(s.get("ratio_to_cartpole")),
                _f(s.get("us_per_step"), ".1f"),
                f"{_f(s.get('reset_us'), '.1f')} ({_f(s.get('cartpole_reset_us'), '.1f')})"
                if s
                else "-",
                _f(s.get("reset_ratio_to_cartpole"), ".1f"),
            ]
            for n in sizes:
                x = v.get(n)
                cells.append(
                    x
                    if isinstance(x, str)
                    else _f((x or {}).get("ratio_to_cartpole_vector"), ".3f")
                )
            last = v.get(sizes[-1])
            if isinstance(last, dict):
                cells += [
                    _si(last.get("env_steps_per_s")),
                    _f(last.get("ratio_to_own_single"), ".1f"),
                ]
            else:
                cells += [last or "-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
        if errors:
            lines += ["", "Failed: " + "; ".join(errors) + "."]
        ref = [r["single"] for _, _, r in rows if "cartpole_steps_per_s" in r.get("single", {})]
        if ref:
            cp = _median([x["cartpole_steps_per_s"] for x in ref])
            cp_reset = _median([x["cartpole_reset_us"] for x in ref])
            lines.append(
                f"\nCartPole-v1 single env: {_si(cp)} steps/s, reset {cp_reset:.1f} us (medians "
                "over the rows above)."
            )
        lines.append("")
    if any("policies" in r for _, _, r in rows):
        lines += [
            "| env | preset | policy | kind | build | episode reset | us/decision (median) |",
            "|---|---|---|---|---|---|---|",
        ]
        for env_id, preset, r in rows:
            for name, p in r.get("policies", {}).items():
                note = f" ({p['error']})" if "error" in p else ""
                lines.append(
                    f"| {env_id.split('/')[-1]} | {preset} | {name} | {p['kind']} | "
                    f"{_dur(p.get('build_s'))} | {_dur(p.get('episode_reset_s'))} | "
                    f"{_f(p.get('us_per_decision_median'), '.1f')}{note} |"
                )
        lines.append("")
    for ax in result.get("scaling", []):
        pols = sorted({k for p in ax["points"] for k, v in p.items() if isinstance(v, dict)})
        step = ax.get("step", True)
        head = [ax["axis"]] + (["us/step"] if step else [])
        if ax["per_unit"]:
            head.append(f"us per {ax['per_unit'].replace('_per_episode', '').rstrip('s')}")
        for name in pols:
            head += [f"{name} build", f"{name} reset", f"{name} us/decision"]
        lines += [
            f"Scaling: {ax['env_id']} vs {ax['axis']}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for p in ax["points"]:
            if "not_reachable" in p:
                lines.append(
                    f"| {p['size']} | not reachable through the config: {p['not_reachable']} |"
                )
                continue
            if "error" in p:
                lines.append(f"| {p['size']} | failed: {p['error']} |")
                continue
            cells = [str(p["size"])] + ([_f(p.get("us_per_step"), ".1f")] if step else [])
            if ax["per_unit"]:
                cells.append(_f(p.get("us_per_unit"), ".2f"))
            for name in pols:
                q = p.get(name, {})
                err = f" ({q['error']})" if "error" in q else ""
                cells += [
                    _dur(q.get("build_s")),
                    _dur(q.get("episode_reset_s")),
                    _f(q.get("us_per_decision_median"), ".1f") + err,
                ]
            lines.append("| " + " | ".join(cells) + " |")
        if ax["fits"]:
            fits = "; ".join(
                f"{k}: {v['exponent']:.2f} (R^2 {v['r2']:.2f})" for k, v in ax["fits"].items()
            )
            lines.append(f"\nFitted exponents (log-log least squares): {fits}.")
        lines.append("")
    ppo = result.get("ppo")
    if ppo:
        if "skipped" in ppo:
            lines.append(f"PPO: skipped: {ppo['skipped']}")
        else:
            lines += [
                f"PPO ({ppo['method']}; {json.dumps(ppo['settings'])}; torch "
                f"{ppo['torch']}, {ppo['torch_threads']} threads)",
                "",
                "Timed: `model.learn` (rollouts and updates), in the process's CPU time where "
                "the row's clock is cpu (the default: waiting for a core on a shared machine "
                "does not count). Ratios are medians of per-repeat ratios (each pair timed "
                "back to back). "
                "'CartPole w/ env net': CartPole-v1 with the env's observation shape (zero "
                "padding) and action space, so the env's policy network; 'net factor' = its "
                "rate / CartPole's (what the bigger network alone costs); 'x net-matched' = "
                "the env's rate / its (what the env's step and vectorisation cost). "
                "maskable_ppo rows: sb3-contrib MaskablePPO with the env's masks, against "
                "MaskablePPO on CartPole-v1 with all-legal masks.",
                "",
                "| env | algo | vec env | env-steps/s | CartPole | **x CartPole** | "
                "CartPole w/ env net | net factor | x net-matched |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for env_id, p in ppo["envs"].items():
                name = env_id.split("/")[-1]
                if "error" in p:
                    lines.append(f"| {name} | | {p['error']} | | | | | | |")
                    continue
                for row in (p, p.get("maskable_ppo")):
                    if not row:
                        continue
                    if "error" in row:
                        lines.append(f"| {name} | | {row['error']} | | | | | | |")
                        continue
                    algo = row.get("algo", "ppo")
                    if row.get("env_kwargs"):
                        algo += " (" + ", ".join(f"{k}={v}" for k, v in row["env_kwargs"].items())
                        algo += ")"
                    matched = row.get("cartpole_matched_env_steps_per_s")
                    lines.append(
                        f"| {name} | {algo} | {row.get('vec_env') or '-'} | "
                        f"{_si(row['env_steps_per_s'])} | {_si(row['cartpole_env_steps_per_s'])} "
                        f"| **{row['ratio_to_cartpole']:.2f}** | "
                        + (
                            f"{_si(matched)} | {row['network_factor']:.2f} | "
                            f"{row['ratio_to_matched']:.2f} |"
                            if matched is not None
                            else "- | - | - |"
                        )
                    )
        lines.append("")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(to_markdown(result) + "\n")
    return js, md


def main_from_args(
    *,
    quick: bool,
    env_ids: Sequence[str] | None,
    out: str,
    ppo: bool,
    parts: Sequence[str] | None = None,
    presets: Sequence[str] | None = None,
    quiet: bool = False,
    command: str | None = None,
) -> int:
    """What ``mei-envs bench`` and ``benchmarks/bench.py`` run: the benchmark, its files and
    the Markdown on stdout."""
    settings = QUICK if quick else FULL
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run(
        settings,
        env_ids,
        parts=tuple(parts or PARTS),
        presets=presets,
        ppo=ppo,
        log=log,
    )
    result["command"] = command
    js, md = write_outputs(result, out)
    print(to_markdown(result))
    print(f"wrote {js} and {md}", file=sys.stderr)
    return 0
