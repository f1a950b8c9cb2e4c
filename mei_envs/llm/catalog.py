"""Transformer architecture descriptions and the built-in catalog of public LLM configs.

An :class:`Architecture` is a flat, frozen description of a decoder-only transformer: enough
to count its parameters exactly and its matmul FLOPs and memory traffic (see
:mod:`mei_envs.llm.costs`). The catalog (``mei_envs/data/architectures.json``) holds the
public Hugging Face configs of the models in REFERENCE.md section 3; each entry carries its
``source`` and the published parameter count, which :func:`mei_envs.llm.costs.total_params`
reproduces exactly.

Custom models: pass a dict, an :class:`Architecture` or a path to a JSON file (one model, or
``{"models": [...]}``) to :func:`get_architecture`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from mei_envs.config import Config

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CATALOG_PATH = DATA_DIR / "architectures.json"

FAMILIES = ("gpt2", "opt", "llama", "mistral", "phi", "qwen2", "gemma", "mobilellm")
FFN_TYPES = ("gated", "mlp")  # gated = SwiGLU/GeGLU (gate, up, down); mlp = fc1, fc2
NORMS = ("layernorm", "rmsnorm")  # layernorm has weight + bias, rmsnorm weight only
POS_EMBEDDINGS = ("rope", "learned")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")


@dataclasses.dataclass(frozen=True)
class Architecture(Config):
    """A decoder-only transformer, described by its public config.

    Attributes:
        name: Catalog name (free text for custom models).
        family: One of :data:`FAMILIES`; selects module names (LoRA targets, builders).
        n_layers: Number of transformer blocks L.
        d_model: Hidden size h [elements].
        n_heads: Query heads.
        n_kv_heads: Key/value heads (== n_heads for MHA; fewer for GQA/MQA).
        head_dim: Per-head size d_head; q = n_heads*d_head, k = n_kv_heads*d_head.
        d_ff: FFN inner size f.
        ffn_type: "gated" (3 matrices h x f) or "mlp" (2 matrices).
        activation: FFN activation (no FLOPs are counted for it).
        vocab_size: V (LM head outputs and embedding rows).
        tied_embeddings: LM head shares the input embedding matrix.
        qkv_bias: q/k/v projections have biases.
        o_bias: Attention output projection has a bias.
        mlp_bias: FFN matrices have biases.
        lm_head_bias: LM head has a bias (Phi-2).
        norm: "layernorm" (weight + bias) or "rmsnorm" (weight).
        pos_embedding: "rope" (no parameters) or "learned" (a position table).
        max_positions: Context length of the config [tokens].
        position_offset: Extra rows of a learned position table (OPT uses 2).
        parallel_block: Attention and FFN read the same single norm (Phi-2); otherwise two
            norms per block.
        final_norm: A norm after the last block.
        rope_theta: RoPE base (only used to build the real module).
        partial_rotary_factor: Share of head_dim rotated by RoPE (Phi-2: 0.4).
        norm_eps: Norm epsilon (only used to build the real module).
        source: Where the config comes from.
        published_params: Published exact parameter count, if known.
    """

    name: str
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    ffn_type: str
    activation: str
    vocab_size: int
    tied_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    norm: str = "rmsnorm"
    pos_embedding: str = "rope"
    max_positions: int = 2048
    position_offset: int = 0
    parallel_block: bool = False
    final_norm: bool = True
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0
    norm_eps: float = 1e-5
    source: str = "custom"
    published_params: int | None = None

    # ---- derived sizes ---------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Query projection width q = n_heads * head_dim."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Key (or value) projection width k = n_kv_heads * head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def ffn_matrices(self) -> int:
        """m: 3 for gated FFNs, 2 otherwise."""
        return 3 if self.ffn_type == "gated" else 2

    @property
    def norms_per_layer(self) -> int:
        return 1 if self.parallel_block else 2

    @property
    def norm_params(self) -> int:
        """Parameters of one norm over h."""
        return (2 if self.norm == "layernorm" else 1) * self.d_model

    @property
    def position_rows(self) -> int:
        """Rows of the learned position table (0 for RoPE)."""
        if self.pos_embedding != "learned":
            return 0
        return self.max_positions + self.position_offset

    # ---- construction: mei_envs.config.Config.from_dict (unknown and missing keys named;
    # values taken as given, validate() checks them) ------------------------------------
    COERCE: ClassVar[bool] = False

    @classmethod
    def required_fields(cls) -> list[str]:
        return [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and what is allowed."""
        where = f"Architecture {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Architecture.name={self.name!r}: must be a non-empty string")
        for fname, allowed in (
            ("family", FAMILIES),
            ("ffn_type", FFN_TYPES),
            ("norm", NORMS),
            ("pos_embedding", POS_EMBEDDINGS),
            ("activation", ACTIVATIONS),
        ):
            v = getattr(self, fname)
            if v not in allowed:
                raise ValueError(f"{where}: {fname}={v!r} must be one of {list(allowed)}")
        for fname in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
            _check_int(where, fname, getattr(self, fname), lo=1)
        _check_int(where, "vocab_size", self.vocab_size, lo=1)
        _check_int(where, "max_positions", self.max_positions, lo=1)
        _check_int(where, "position_offset", self.position_offset, lo=0)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"{where}: n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        for fname in (
            "tied_embeddings",
            "qkv_bias",
            "o_bias",
            "mlp_bias",
            "lm_head_bias",
            "parallel_block",
            "final_norm",
        ):
            v = getattr(self, fname)
            if not isinstance(v, bool):
                raise ValueError(f"{where}: {fname}={v!r} must be true or false")
        for fname, lo, hi in (
            ("rope_theta", 0.0, math.inf),
            ("partial_rotary_factor", 0.0, 1.0),
            ("norm_eps", 0.0, 1.0),
        ):
            v = getattr(self, fname)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo < v <= hi
            if not ok:
                raise ValueError(f"{where}: {fname}={v!r} must be a number in ({lo:g}, {hi:g}]")
        if self.published_params is not None:
            _check_int(where, "published_params", self.published_params, lo=1)
        if not isinstance(self.source, str):
            raise ValueError(f"{where}: source={self.source!r} must be a string")


def _check_int(where: str, name: str, v: Any, *, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{where}: {name}={v!r} must be an integer >= {lo}")


# ---- catalog ------------------------------------------------------------------------------
def load_architectures(path: str | Path) -> dict[str, Architecture]:
    """Read architectures from a JSON file: one model, a list, or ``{"models": [...]}``.

    Raises:
        ValueError: if the file is not valid JSON or an entry is malformed (names the field).
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(doc, Mapping) and "models" in doc:
        entries = doc["models"]
    elif isinstance(doc, list):
        entries = doc
    else:
        entries = [doc]
    out: dict[str, Architecture] = {}
    for entry in entries:
        arch = Architecture.from_dict(entry)
        if arch.name in out:
            raise ValueError(f"{path}: duplicate model name {arch.name!r}")
        out[arch.name] = arch
    return out


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Architecture]:
    return load_architectures(CATALOG_PATH)


def list_models() -> list[str]:
    """Names of the catalog models, in catalog order."""
    return list(_catalog())


def get_architecture(spec: str | Path | Mapping[str, Any] | Architecture) -> Architecture:
    """Resolve a catalog name, a dict, an :class:`Architecture` or a JSON file path.

    Raises:
        KeyError: for an unknown name (lists the known names).
        ValueError: for a malformed custom architecture (names the field).
    """
    if isinstance(spec, Architecture):
        return spec
    if isinstance(spec, Mapping):
        return Architecture.from_dict(spec)
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith(".json")):
        archs = load_architectures(spec)
        if len(archs) != 1:
            raise ValueError(
                f"{spec}: holds {len(archs)} models {list(archs)}; expected exactly one"
            )
        return next(iter(archs.values()))
    if isinstance(spec, str):
        catalog = _catalog()
        if spec not in catalog:
            raise KeyError(f"unknown model {spec!r}; known models: {list(catalog)}")
        return catalog[spec]
    raise TypeError(
        f"get_architecture: spec of type {type(spec).__name__} must be a model name, "
        "a dict, an Architecture or a path to a JSON file"
    )
