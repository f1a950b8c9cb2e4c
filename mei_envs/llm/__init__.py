"""LLM cost model: architecture catalog, exact parameter counts, FLOPs, bytes and memory.

numpy + stdlib only; the torch-based profiler lives in :mod:`mei_envs.llm.profile` and is
not imported here.
"""

from __future__ import annotations

from mei_envs.llm.catalog import (
    Architecture,
    get_architecture,
    list_models,
    load_architectures,
)
from mei_envs.llm.costs import (
    PRECISION_BITS,
    block_params,
    bytes_per_element,
    cost_table,
    decode_flops,
    device_memory_bytes,
    forward_bytes,
    forward_flops,
    hidden_state_bytes,
    kv_bytes_per_token,
    lora_params,
    param_breakdown,
    prefill_flops,
    total_params,
    train_flops,
    weight_bytes,
)

__all__ = [
    "PRECISION_BITS",
    "Architecture",
    "block_params",
    "bytes_per_element",
    "cost_table",
    "decode_flops",
    "device_memory_bytes",
    "forward_bytes",
    "forward_flops",
    "get_architecture",
    "hidden_state_bytes",
    "kv_bytes_per_token",
    "list_models",
    "load_architectures",
    "lora_params",
    "param_breakdown",
    "prefill_flops",
    "total_params",
    "train_flops",
    "weight_bytes",
]
