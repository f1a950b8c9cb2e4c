"""A tiny custom architecture shared by the catalog and profiler tests."""

from __future__ import annotations

from typing import Any


def tiny_arch_dict(**changes: Any) -> dict[str, Any]:
    """A 2-layer Llama-style architecture dict (GQA, gated FFN, untied embeddings)."""
    d: dict[str, Any] = {
        "name": "tiny",
        "family": "llama",
        "n_layers": 2,
        "d_model": 64,
        "n_heads": 4,
        "n_kv_heads": 2,
        "head_dim": 16,
        "d_ff": 128,
        "ffn_type": "gated",
        "activation": "silu",
        "vocab_size": 100,
        "tied_embeddings": False,
    }
    d.update(changes)
    return d
