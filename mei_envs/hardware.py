"""Hardware profiles and a roofline latency / energy model.

A :class:`HardwareProfile` holds a device's datasheet peaks (dense, no sparsity), memory
bandwidth and size, power, and two efficiency factors that turn peaks into what real kernels
reach. Profiles ship in ``mei_envs/data/hardware.csv`` (one row per device, with a ``source``
and ``notes`` column that say where each figure comes from and which are unverified).

The roofline latency of an operation (REFERENCE.md section 2) is::

    latency_s = max(flops / (peak_flops(dtype) * compute_efficiency),
                    bytes_moved / (memory_bandwidth_Bps * memory_efficiency))

and its energy is ``(idle_power_W + utilization * (active_power_W - idle_power_W)) *
latency_s``. Every function here is vectorised over numpy arrays and needs numpy and the
standard library only.

Example:
    >>> from mei_envs.hardware import get_hardware, roofline
    >>> hw = get_hardware("jetson_orin_nano")
    >>> out = roofline(hw, flops=2 * 1.1e9, bytes_moved=1.1e9 * 2, dtype="fp16")
    >>> out["bound"]
    'memory'
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mei_envs.checks import as_output, check_array
from mei_envs.config import ConfigError
from mei_envs.llm import costs

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DTYPES",
    "KINDS",
    "HardwareProfile",
    "compute_dtype_for",
    "custom_hardware",
    "energy_j",
    "get_hardware",
    "list_hardware",
    "load_hardware_csv",
    "roofline",
    "roofline_latency_s",
    "time_layers",
    "time_train_step",
]

HARDWARE_CSV = Path(__file__).parent / "data" / "hardware.csv"

DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
KINDS: tuple[str, ...] = ("phone", "embedded", "edge_gpu", "datacenter_gpu", "cpu")

# Where a device has no native rate for a dtype (empty CSV cell), the computation runs in
# the next type of this chain: bf16 -> fp16 -> fp32 (e.g. phone GPUs without bf16 units);
# int8 -> fp16 -> fp32 (int8 weights dequantised to a float type, e.g. a Cortex-A72 with no
# int8 dot product). fp32 is required for every device.
_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "fp16": ("fp16", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "int8": ("int8", "fp16", "fp32"),
}
_PEAK_FIELD = {
    "fp32": "peak_fp32_flops",
    "fp16": "peak_fp16_flops",
    "bf16": "peak_bf16_flops",
    "int8": "peak_int8_ops",
}

# Weight storage format -> dtype the matmuls run in. Weight-only quantised formats (int4,
# llama.cpp Q4_0 / Q8_0) are dequantised to fp16 inside the kernel on phones, Jetsons and
# GPUs (llama.cpp, MLC, TensorRT-LLM weight-only paths), so their compute rate is fp16; their
# bytes are still the quantised size (REFERENCE.md section 2: Q4_0 4.5, Q8_0 8.5 bits/weight).
_COMPUTE_DTYPE: dict[str, str] = {
    "fp32": "fp32",
    "fp16": "fp16",
    "bf16": "bf16",
    "int8": "int8",
    "int4": "fp16",
    "q4_0": "fp16",
    "q8_0": "fp16",
}

_FLOAT_FIELDS = (
    "peak_fp32_flops",
    "peak_fp16_flops",
    "peak_bf16_flops",
    "peak_int8_ops",
    "memory_bandwidth_Bps",
    "memory_bytes",
    "active_power_W",
    "idle_power_W",
    "compute_efficiency",
    "memory_efficiency",
)
_OPTIONAL_FIELDS = ("peak_fp16_flops", "peak_bf16_flops", "peak_int8_ops")


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
    """One device: datasheet peaks, memory, power and efficiency factors.

    Attributes:
        name: Identifier, e.g. ``"a100_80gb"``.
        kind: One of :data:`KINDS`.
        peak_fp32_flops: Dense fp32 peak [FLOP/s]. Required.
        peak_fp16_flops: Dense fp16 peak [FLOP/s], or None (falls back to fp32).
        peak_bf16_flops: Dense bf16 peak [FLOP/s], or None (falls back to fp16, then fp32).
        peak_int8_ops: Dense int8 peak [op/s], or None (falls back to fp16, then fp32).
        memory_bandwidth_Bps: Peak DRAM/HBM bandwidth [B/s].
        memory_bytes: Memory capacity [B].
        active_power_W: Power at full load (TDP / power mode) [W].
        idle_power_W: Power when idle [W], at most ``active_power_W``.
        compute_efficiency: Fraction of peak FLOP/s reached by real kernels, in (0, 1].
        memory_efficiency: Fraction of peak bandwidth reached by real kernels, in (0, 1].
        source: Where the figures come from.
        notes: Derivations and which figures are unverified.
    """

    name: str
    kind: str
    peak_fp32_flops: float
    peak_fp16_flops: float | None
    peak_bf16_flops: float | None
    peak_int8_ops: float | None
    memory_bandwidth_Bps: float
    memory_bytes: float
    active_power_W: float
    idle_power_W: float
    compute_efficiency: float
    memory_efficiency: float
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        _validate_profile(self)

    def peak_flops(self, dtype: str = "fp16") -> float:
        """Dense peak rate for ``dtype`` [FLOP/s or op/s], using the fallback chain."""
        for candidate in _FALLBACK[_check_dtype(dtype)]:
            value = getattr(self, _PEAK_FIELD[candidate])
            if value is not None:
                return float(value)
        return float(self.peak_fp32_flops)  # every chain ends in fp32, which is required

    def effective_flops(self, dtype: str = "fp16") -> float:
        """``peak_flops(dtype) * compute_efficiency`` [FLOP/s]."""
        return self.peak_flops(dtype) * self.compute_efficiency

    @property
    def effective_bandwidth_Bps(self) -> float:
        """``memory_bandwidth_Bps * memory_efficiency`` [B/s]."""
        return self.memory_bandwidth_Bps * self.memory_efficiency

    def ridge_point(self, dtype: str = "fp16") -> float:
        """Arithmetic intensity [FLOP/B] above which an op is compute-bound."""
        return self.effective_flops(dtype) / self.effective_bandwidth_Bps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(HardwareProfile)]


def _validate_profile(p: HardwareProfile) -> None:
    where = f"HardwareProfile({p.name!r})" if isinstance(p.name, str) else "HardwareProfile"
    if not isinstance(p.name, str) or not p.name.strip():
        raise ConfigError(f"{where}.name={p.name!r}: must be a non-empty string")
    if p.kind not in KINDS:
        raise ConfigError(f"{where}.kind={p.kind!r}: must be one of {list(KINDS)}")
    for name in _FLOAT_FIELDS:
        v = getattr(p, name)
        if v is None and name in _OPTIONAL_FIELDS:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            allowed = "a finite number or None" if name in _OPTIONAL_FIELDS else "a finite number"
            raise ConfigError(f"{where}.{name}={v!r}: must be {allowed}")
        if name.endswith("_efficiency"):
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"{where}.{name}={v!r}: must be in (0, 1]")
        elif name.endswith("_power_W"):
            if v < 0.0:
                raise ConfigError(f"{where}.{name}={v!r}: must be >= 0")
        elif v <= 0.0:
            raise ConfigError(f"{where}.{name}={v!r}: must be > 0")
    if p.idle_power_W > p.active_power_W:
        raise ConfigError(
            f"{where}.idle_power_W={p.idle_power_W!r}: must be <= "
            f"active_power_W={p.active_power_W!r}"
        )
    for name in ("source", "notes"):
        if not isinstance(getattr(p, name), str):
            raise ConfigError(f"{where}.{name}={getattr(p, name)!r}: must be a string")


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {list(DTYPES)}")
    return dtype


# ---- catalogue ---------------------------------------------------------------------------
def load_hardware_csv(path: str | Path) -> dict[str, HardwareProfile]:
    """Read profiles from a CSV with the columns of ``mei_envs/data/hardware.csv``.

    Empty cells of the optional peak columns mean "no native rate" (see
    :meth:`HardwareProfile.peak_flops`).

    Raises:
        ConfigError: on a missing/unknown column, a bad value (naming row and column) or a
            duplicate name.
    """
    path = Path(path)
    expected = _field_names()
    profiles: dict[str, HardwareProfile] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if sorted(columns) != sorted(expected):
            missing = sorted(set(expected) - set(columns))
            unknown = sorted(set(columns) - set(expected))
            raise ConfigError(f"{path}: missing columns {missing}, unknown columns {unknown}")
        for line, row in enumerate(reader, start=2):
            values: dict[str, Any] = dict(row)
            for name in _FLOAT_FIELDS:
                raw = (row[name] or "").strip()
                if raw == "" and name in _OPTIONAL_FIELDS:
                    values[name] = None
                    continue
                try:
                    values[name] = float(raw)
                except ValueError as exc:
                    raise ConfigError(
                        f"{path}:{line} ({row.get('name')!r}) {name}={raw!r}: must be a number"
                    ) from exc
            profile = HardwareProfile(**values)
            if profile.name in profiles:
                raise ConfigError(f"{path}:{line}: duplicate name {profile.name!r}")
            profiles[profile.name] = profile
    return profiles


@functools.lru_cache(maxsize=1)
def _catalogue() -> dict[str, HardwareProfile]:
    return load_hardware_csv(HARDWARE_CSV)


def list_hardware() -> list[str]:
    """Names of the shipped profiles, in CSV order."""
    return list(_catalogue())


def get_hardware(name_or_profile: str | HardwareProfile) -> HardwareProfile:
    """A shipped profile by name; a :class:`HardwareProfile` is returned unchanged.

    Raises:
        KeyError: unknown name (the message lists the known names).
        TypeError: neither a string nor a profile.
    """
    if isinstance(name_or_profile, HardwareProfile):
        return name_or_profile
    if not isinstance(name_or_profile, str):
        raise TypeError(f"hardware={name_or_profile!r}: must be a device name or a HardwareProfile")
    catalogue = _catalogue()
    if name_or_profile not in catalogue:
        raise KeyError(f"unknown hardware {name_or_profile!r}; known: {list(catalogue)}")
    return catalogue[name_or_profile]


_CUSTOM_DEFAULTS: dict[str, Any] = {
    "kind": "cpu",
    "peak_fp16_flops": None,
    "peak_bf16_flops": None,
    "peak_int8_ops": None,
    "compute_efficiency": 1.0,
    "memory_efficiency": 1.0,
    "source": "custom",
    "notes": "",
}


def custom_hardware(base: str | HardwareProfile | None = None, **fields: Any) -> HardwareProfile:
    """Build a validated profile from keyword fields, optionally on top of ``base``.

    Without ``base``, ``name``, ``peak_fp32_flops``, ``memory_bandwidth_Bps``,
    ``memory_bytes``, ``active_power_W`` and ``idle_power_W`` are required; the rest default
    to ``kind="cpu"``, no fp16/bf16/int8 rate (fp32 fallback) and efficiencies of 1.

    Example:
        >>> hw = custom_hardware("l4", name="l4_tuned", memory_efficiency=0.8)

    Raises:
        ConfigError: unknown or missing fields (named, with the allowed ones) or an invalid
            value (named, with the allowed range).
    """
    allowed = _field_names()
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ConfigError(f"custom_hardware: unknown field(s) {unknown}; allowed: {allowed}")
    if base is not None:
        values = get_hardware(base).to_dict()
    else:
        values = dict(_CUSTOM_DEFAULTS)
    values.update(fields)
    missing = [name for name in allowed if name not in values]
    if missing:
        raise ConfigError(f"custom_hardware: missing required field(s) {missing}")
    for name in _FLOAT_FIELDS:
        v = values[name]
        # Accept ints and numpy scalars; leave anything else to the validator's message.
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            values[name] = float(v)
    return HardwareProfile(**values)


def compute_dtype_for(weight_precision: str) -> str:
    """The dtype whose peak rate applies to matmuls on weights stored as ``weight_precision``.

    fp32/fp16/bf16/int8 compute natively; weight-only quantised formats (``int4``, llama.cpp
    ``q4_0`` and ``q8_0``) are dequantised to fp16 for the matmul, so they map to ``"fp16"``.

    Raises:
        ValueError: unknown precision (the message lists the known ones).
    """
    if weight_precision not in _COMPUTE_DTYPE:
        raise ValueError(
            f"weight_precision={weight_precision!r}: must be one of {list(_COMPUTE_DTYPE)}"
        )
    return _COMPUTE_DTYPE[weight_precision]


# ---- roofline ----------------------------------------------------------------------------
def _nonneg(name: str, value: Any) -> np.ndarray:
    return check_array(name, value, lo=0.0)


_out = as_output


def _times(hw: HardwareProfile, flops: Any, bytes_moved: Any, dtype: str):
    f = _nonneg("flops", flops)
    b = _nonneg("bytes_moved", bytes_moved)
    compute_s = f / hw.effective_flops(dtype)
    memory_s = b / hw.effective_bandwidth_Bps
    compute_s, memory_s = np.broadcast_arrays(compute_s, memory_s)
    return compute_s, memory_s


def roofline_latency_s(
    hw: str | HardwareProfile, flops: Any, bytes_moved: Any, dtype: str = "fp16"
) -> float | np.ndarray:
    """Roofline latency [s]: ``max(flops / effective_flops, bytes / effective_bandwidth)``.

    Args:
        hw: Device name or profile.
        flops: FLOPs (or int8 ops) of the operation; scalar or array, >= 0.
        bytes_moved: Bytes read and written from memory; scalar or array, >= 0.
        dtype: Compute dtype (see :func:`compute_dtype_for`).

    Returns:
        A float for scalar inputs, else an array with the broadcast shape.
    """
    compute_s, memory_s = _times(get_hardware(hw), flops, bytes_moved, _check_dtype(dtype))
    return _out(np.maximum(compute_s, memory_s))


def roofline(
    hw: str | HardwareProfile, flops: Any, bytes_moved: Any, dtype: str = "fp16"
) -> dict[str, Any]:
    """Roofline breakdown: ``latency_s``, ``compute_s``, ``memory_s`` [s] and ``bound``.

    ``bound`` is ``"compute"`` where compute time exceeds memory time, else ``"memory"``
    (ties count as memory-bound); a string for scalar inputs, an array of strings otherwise.
    """
    compute_s, memory_s = _times(get_hardware(hw), flops, bytes_moved, _check_dtype(dtype))
    bound = np.where(compute_s > memory_s, "compute", "memory")
    return {
        "latency_s": _out(np.maximum(compute_s, memory_s)),
        "compute_s": _out(compute_s),
        "memory_s": _out(memory_s),
        "bound": str(bound) if bound.ndim == 0 else bound,
    }


def energy_j(
    hw: str | HardwareProfile, latency_s: Any, utilization: Any = 1.0
) -> float | np.ndarray:
    """Energy [J] = ``(idle_power_W + utilization * (active_power_W - idle_power_W)) * latency_s``.

    Args:
        hw: Device name or profile.
        latency_s: Busy time [s]; scalar or array, >= 0.
        utilization: Load in [0, 1]; scalar or array (broadcast against ``latency_s``).
    """
    profile = get_hardware(hw)
    t = _nonneg("latency_s", latency_s)
    u = check_array("utilization", utilization, lo=0.0, hi=1.0)
    power_W = profile.idle_power_W + u * (profile.active_power_W - profile.idle_power_W)
    return _out(power_W * t)


# ---- timing a layer range of a model ---------------------------------------------------------
def time_layers(
    hw: str | HardwareProfile,
    arch: Any,
    layers: tuple[int, int],
    *,
    new_tokens: Any = 1,
    cached_tokens: Any = 0,
    batch: int = 1,
    lm_head_tokens: Any = 0,
    weight_precision: str = "fp16",
    kv_precision: str = "fp16",
    act_precision: str = "fp16",
) -> dict[str, Any]:
    """Roofline time of an inference forward pass of blocks ``layers = (a, b)`` on ``hw``.

    FLOPs and bytes come from :func:`mei_envs.llm.costs.forward_flops` and
    :func:`~mei_envs.llm.costs.forward_bytes` (``new_tokens`` per sequence after
    ``cached_tokens`` in the KV cache, ``batch`` sequences, the LM head for
    ``lm_head_tokens`` tokens); matmuls run in :func:`compute_dtype_for`
    ``(weight_precision)``. Token counts broadcast as numpy arrays.

    Returns:
        ``{"latency_s", "compute_s", "memory_s", "bound", "flops", "bytes"}``.
    """
    return _timed(
        hw,
        (costs.forward_flops, costs.forward_bytes),
        (arch, new_tokens, cached_tokens),
        dict(layers=layers, lm_head_tokens=lm_head_tokens, batch=batch),
        weight_precision=weight_precision,
        kv_precision=kv_precision,
        act_precision=act_precision,
    )


def _timed(
    hw: Any,
    counts: tuple[Callable[..., Any], Callable[..., Any]],
    args: tuple[Any, ...],
    shape: dict[str, Any],
    **precision: str,
) -> dict[str, Any]:
    """Roofline time of the work ``counts = (flops_fn, bytes_fn)`` count for
    ``(*args, **shape)`` (bytes also get the ``precision`` keywords); matmuls run in
    :func:`compute_dtype_for` ``(precision["weight_precision"])``."""
    count_flops, count_bytes = counts
    flops = count_flops(*args, **shape)
    nbytes = count_bytes(*args, **shape, **precision)
    out = roofline(hw, flops, nbytes, dtype=compute_dtype_for(precision["weight_precision"]))
    out.update(flops=flops, bytes=nbytes)
    return out


def time_train_step(
    hw: str | HardwareProfile,
    arch: Any,
    layers: tuple[int, int],
    *,
    seq_len: Any,
    input_requires_grad: bool | None = None,
    weight_precision: str = "fp16",
    act_precision: str = "fp16",
    optimizer: str = "adam",
    **step: Unpack[costs.TrainStep],
) -> dict[str, Any]:
    """Roofline time of one training step (forward + backward + optimizer) of blocks
    ``layers = (a, b)`` on ``hw``: full fine-tuning (``mode="full"``) or LoRA (the default
    here) with ``lora_rank`` on ``lora_targets``. ``step``: the keywords of
    :class:`mei_envs.llm.costs.TrainStep` but ``layers``; here ``mode`` defaults to
    ``"lora"`` and ``lm_head`` to False.

    FLOPs: :func:`mei_envs.llm.costs.train_flops` (``input_requires_grad`` defaults to
    ``a > 0``: a split-learning server returns the cut layer's gradient to the device);
    bytes: :func:`mei_envs.llm.costs.train_bytes`. Matmuls run in
    :func:`compute_dtype_for` ``(weight_precision)``. ``lm_head=True`` for the range that
    holds the LM head and the loss (e.g. ``(c, L)`` on a split-learning server).

    Returns:
        ``{"latency_s", "compute_s", "memory_s", "bound", "flops", "bytes"}``.
    """
    count_flops = functools.partial(costs.train_flops, input_requires_grad=input_requires_grad)
    return _timed(
        hw,
        (count_flops, costs.train_bytes),
        (arch, seq_len),
        {"mode": "lora", "lm_head": False, **step, "layers": layers},
        weight_precision=weight_precision,
        act_precision=act_precision,
        optimizer=optimizer,
    )
