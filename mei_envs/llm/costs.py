"""Analytic cost model of decoder-only LLMs: parameters, FLOPs, bytes and device memory.

Formulas are REFERENCE.md section 2, checked against ``torch.utils.flop_counter.
FlopCounterMode`` on the real Hugging Face modules (see :mod:`mei_envs.llm.profile` and the
shipped ``data/profiles/*.json``). Notation per layer: h hidden size, q = n_heads*d_head,
k = n_kv_heads*d_head, f FFN size, m = 3 (gated FFN) or 2, s new tokens, c cached tokens,
b batch, V vocabulary.

FLOP convention (FlopCounterMode's): a matmul (m x k) @ (k x n) costs 2*m*n*k; attention
scores are counted for the full s x (c+s) block (no causal discount); norms, activations,
softmax, RoPE, bias adds and embedding lookups cost nothing.

Functions accept an :class:`~mei_envs.llm.catalog.Architecture`, a catalog name or a dict.
Token counts in :func:`forward_flops` and :func:`forward_bytes` may be numpy arrays (they
broadcast); a scalar input gives a float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import numpy as np

from mei_envs.checks import as_output, check_array, check_int
from mei_envs.llm.catalog import Architecture, get_architecture

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Bits per stored element. q8_0 / q4_0: llama.cpp block formats, 32 weights + one fp16 scale
# per block -> 8.5 and 4.5 bits/weight (REFERENCE.md section 2).
PRECISION_BITS: dict[str, float] = {
    "fp32": 32,
    "fp16": 16,
    "bf16": 16,
    "int8": 8,
    "int4": 4,
    "q8_0": 8.5,
    "q4_0": 4.5,
}

# Logical LoRA target names; aliases map the OPT/Phi/GPT-2 names onto them.
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_TARGET_ALIASES = {"fc1": "up", "fc2": "down", "dense": "o", "out": "o", "c_fc": "up"}
# Trainable parameters (adapters, or all weights in full fine-tuning) are kept in fp32
# (mixed-precision training, Micikevicius et al. 2018, arXiv 1710.03740) [bytes].
_TRAINABLE_BYTES = 4.0
# Adam keeps two fp32 moments per trainable parameter, plus an fp32 master copy when the
# weights are stored below 32 bits (ZeRO, Rajbhandari et al. 2020, arXiv 1910.02054) [bytes].
_OPTIMIZERS = ("adam", "adamw", "sgd")
_MODES = ("inference", "lora", "full")

ArchSpec = Architecture | str | Mapping[str, Any]


# ---- helpers ---------------------------------------------------------------------------
def _arch(arch: ArchSpec) -> Architecture:
    return get_architecture(arch)


def bytes_per_element(precision: str) -> float:
    """Bytes per element of ``precision`` (one of :data:`PRECISION_BITS`).

    Raises:
        ValueError: for an unknown precision (lists the allowed ones).
    """
    if precision not in PRECISION_BITS:
        raise ValueError(f"precision={precision!r}: must be one of {list(PRECISION_BITS)}")
    return PRECISION_BITS[precision] / 8.0


def _layer_range(arch: Architecture, layers: tuple[int, int] | None) -> tuple[int, int]:
    if layers is None:
        return 0, arch.n_layers
    try:
        start, end = (int(x) for x in layers)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layers={layers!r}: must be a pair (start, end) of integers") from exc
    if not 0 <= start <= end <= arch.n_layers:
        raise ValueError(
            f"layers={layers!r}: need 0 <= start <= end <= n_layers={arch.n_layers} "
            f"for {arch.name!r}"
        )
    return start, end


def _count(name: str, value: Any, *, lo: float, strict: bool) -> np.ndarray:
    """Validate a (possibly array) size: numeric, finite and > lo (strict) or >= lo."""
    return check_array(name, value, lo=lo, lo_open=strict)


_int = check_int
_out = as_output


# ---- parameters ------------------------------------------------------------------------
def _attn_params(a: Architecture) -> int:
    h, q, k = a.d_model, a.q_dim, a.kv_dim
    n = h * q + 2 * h * k + q * h
    if a.qkv_bias:
        n += q + 2 * k
    if a.o_bias:
        n += h
    return n


def _ffn_params(a: Architecture) -> int:
    m = a.ffn_matrices
    n = m * a.d_model * a.d_ff
    if a.mlp_bias:
        n += (m - 1) * a.d_ff + a.d_model
    return n


def block_params(arch: ArchSpec) -> int:
    """Parameters of one transformer block (attention + FFN + its norms)."""
    a = _arch(arch)
    return _attn_params(a) + _ffn_params(a) + a.norms_per_layer * a.norm_params


def param_breakdown(arch: ArchSpec) -> dict[str, int]:
    """Exact parameter counts by part (a tied LM head counts 0 beyond its bias)."""
    a = _arch(arch)
    per_layer = block_params(a)
    embedding = a.vocab_size * a.d_model
    position = a.position_rows * a.d_model
    final_norm = a.norm_params if a.final_norm else 0
    lm_head = (0 if a.tied_embeddings else a.vocab_size * a.d_model) + (
        a.vocab_size if a.lm_head_bias else 0
    )
    layers = per_layer * a.n_layers
    return {
        "embedding": embedding,
        "position_embedding": position,
        "per_layer": per_layer,
        "layers": layers,
        "final_norm": final_norm,
        "lm_head": lm_head,
        "total": embedding + position + layers + final_norm + lm_head,
    }


def total_params(arch: ArchSpec) -> int:
    """Exact total parameter count (equals the published count for catalog models)."""
    return param_breakdown(arch)["total"]


# ---- FLOPs -----------------------------------------------------------------------------
def _layer_linear_flops_per_token(a: Architecture) -> int:
    """Projection + FFN matmul FLOPs of one block for one token: 2*(2hq + 2hk) + 2*m*h*f."""
    h, q, k = a.d_model, a.q_dim, a.kv_dim
    return 2 * (2 * h * q + 2 * h * k) + 2 * a.ffn_matrices * h * a.d_ff


class ForwardShape(TypedDict, total=False):
    """Keywords of one forward pass, shared by :func:`forward_flops`, :func:`forward_bytes`,
    :func:`prefill_flops` and :func:`decode_flops` (defaults in brackets)."""

    layers: tuple[int, int] | None  # blocks [start, end) [None: all]
    lm_head_tokens: Any  # tokens per sequence through the LM head, <= new_tokens [0]
    batch: int  # sequences [1]


def _forward_args(
    arch: ArchSpec,
    new_tokens: Any,
    cached_tokens: Any = 0,
    *,
    layers: tuple[int, int] | None = None,
    lm_head_tokens: Any = 0,
    batch: int = 1,
) -> tuple[Any, Any, Any, Any, int, tuple[int, int]]:
    """Validated arguments of :func:`forward_flops` and :func:`forward_bytes`, with the
    defaults of :class:`ForwardShape`."""
    a = _arch(arch)
    s = _count("new_tokens", new_tokens, lo=0, strict=True)
    c = _count("cached_tokens", cached_tokens, lo=0, strict=False)
    t = _count("lm_head_tokens", lm_head_tokens, lo=0, strict=False)
    if np.any(t > s):
        raise ValueError(f"lm_head_tokens={lm_head_tokens!r}: must be <= new_tokens={new_tokens!r}")
    b = _int("batch", batch, lo=1)
    return a, s, c, t, b, _layer_range(a, layers)


def forward_flops(
    arch: ArchSpec, new_tokens: Any, cached_tokens: Any = 0, **shape: Unpack[ForwardShape]
) -> float | np.ndarray:
    """Matmul FLOPs of blocks ``layers=(start, end)`` for ``new_tokens`` new tokens per sequence
    with ``cached_tokens`` already in the KV cache, plus the LM head for ``lm_head_tokens``
    tokens per sequence, for ``batch`` sequences (``shape``: the keywords of
    :class:`ForwardShape`).

    Per block: ``2*b*s*(2hq + 2hk) + 4*b*s*(c+s)*q + 2*m*b*s*h*f``; LM head ``2*b*t*h*V``.
    Token arguments may be numpy arrays (broadcast together).

    Raises:
        ValueError: new_tokens <= 0, cached_tokens < 0, lm_head_tokens < 0 or > new_tokens,
            batch < 1, or a bad layer range (each names the argument).
    """
    a, s, c, t, b, (start, end) = _forward_args(arch, new_tokens, cached_tokens, **shape)
    n = end - start
    per_layer = s * _layer_linear_flops_per_token(a) + 4.0 * s * (c + s) * a.q_dim
    head = 2.0 * t * a.d_model * a.vocab_size
    return _out(b * (n * per_layer + head))


def prefill_flops(
    arch: ArchSpec, seq_len: Any, **shape: Unpack[ForwardShape]
) -> float | np.ndarray:
    """FLOPs to process a ``seq_len``-token prompt from an empty cache (see forward_flops)."""
    return forward_flops(arch, seq_len, 0, **shape)


def decode_flops(
    arch: ArchSpec, cached_tokens: Any, **shape: Unpack[ForwardShape]
) -> float | np.ndarray:
    """FLOPs to generate one token with ``cached_tokens`` in the cache (see forward_flops)."""
    return forward_flops(arch, 1, cached_tokens, **shape)


# ---- LoRA ------------------------------------------------------------------------------
def lora_matrix_shapes(arch: ArchSpec) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each adaptable matrix of one block, keyed by logical name.

    GPT-2 fuses q, k, v into one ``c_attn`` matrix, exposed as ``"qkv"``.
    """
    a = _arch(arch)
    h, q, k, f = a.d_model, a.q_dim, a.kv_dim, a.d_ff
    shapes: dict[str, tuple[int, int]] = {}
    if a.family == "gpt2":
        shapes["qkv"] = (h, q + 2 * k)
    else:
        shapes.update(q=(h, q), k=(h, k), v=(h, k))
    shapes["o"] = (q, h)
    if a.ffn_type == "gated":
        shapes["gate"] = (h, f)
    shapes["up"] = (h, f)
    shapes["down"] = (f, h)
    return shapes


def resolve_lora_targets(arch: ArchSpec, targets: str | Iterable[str]) -> tuple[str, ...]:
    """Map user target names to this family's logical matrices (see lora_matrix_shapes).

    Accepts q, k, v, o, gate, up, down, the aliases fc1 (up), fc2 (down), dense (o), qkv
    (GPT-2), or ``"all_linear"``. On GPT-2, q, k and v all map to the fused ``qkv``.

    Raises:
        ValueError: unknown name or a name this architecture lacks (e.g. gate on GPT-2).
    """
    a = _arch(arch)
    shapes = lora_matrix_shapes(a)
    if isinstance(targets, str):
        targets = (targets,)
    names = list(targets)
    if not names:
        raise ValueError("lora_targets=(): must name at least one matrix")
    out: set[str] = set()
    for name in names:
        if name == "all_linear":
            out.update(shapes)
            continue
        key = _TARGET_ALIASES.get(name, name)
        if a.family == "gpt2" and key in ("q", "k", "v"):
            key = "qkv"
        if key not in shapes:
            allowed = sorted(set(shapes) | {"all_linear"} | set(_TARGET_ALIASES))
            if a.family == "gpt2":
                allowed = sorted(set(allowed) | {"q", "k", "v"})
            raise ValueError(
                f"lora_targets: {name!r} is not a linear layer of {a.name!r} "
                f"({a.family}); allowed: {allowed}"
            )
        out.add(key)
    return tuple(k for k in shapes if k in out)


def lora_params(
    arch: ArchSpec,
    rank: int,
    targets: str | Iterable[str] = ("q", "v"),
    layers: tuple[int, int] | None = None,
) -> int:
    """LoRA adapter parameters: ``r*(d_in + d_out)`` per adapted matrix per layer."""
    a = _arch(arch)
    r = _int("rank", rank, lo=1)
    start, end = _layer_range(a, layers)
    shapes = lora_matrix_shapes(a)
    per_layer = sum(r * sum(shapes[t]) for t in resolve_lora_targets(a, targets))
    return per_layer * (end - start)


def _lora_block_train_flops(
    a: Architecture, s: np.ndarray, targets: tuple[str, ...], r: int, x_rg: bool
) -> tuple[np.ndarray, bool]:
    """Forward + backward FLOPs of one block with frozen base weights and LoRA adapters.

    Autograd computes a gradient only for tensors that require it: a frozen matmul
    ``y = x W`` costs its forward again in backward iff ``x`` requires grad; an attention
    bmm costs one forward-sized bmm per operand that requires grad. An adapter
    ``B(A(x))`` costs ``2sr(d_in+d_out)`` forward and ``2sr(d_in + 2 d_out)`` backward (grads
    of A, B and of A's output), plus ``2sr*d_in`` if ``x`` requires grad. Returns the FLOPs
    (per sequence) and whether the block output requires grad.
    """
    shapes = lora_matrix_shapes(a)
    lin = {name: 2.0 * s * din * dout for name, (din, dout) in shapes.items()}
    attn_bmm = 2.0 * s * s * a.q_dim  # one of the two attention bmms (scores, or probs @ V)
    flops = np.zeros_like(s)

    def matmul(name: str, in_rg: bool) -> bool:
        nonlocal flops
        flops = flops + lin[name] * (2.0 if in_rg else 1.0)
        adapted = name in targets
        if adapted:
            din, dout = shapes[name]
            flops = flops + 2.0 * s * r * (din + dout)  # forward A, B
            flops = flops + 2.0 * s * r * (din + 2 * dout)  # grad A, grad B, grad A-output
            if in_rg:
                flops = flops + 2.0 * s * r * din
        return in_rg or adapted

    def attention(in_rg: bool) -> bool:
        nonlocal flops
        if "qkv" in shapes:
            q_rg = k_rg = v_rg = matmul("qkv", in_rg)
        else:
            q_rg, k_rg, v_rg = [matmul(n, in_rg) for n in ("q", "k", "v")]
        p_rg = q_rg or k_rg
        flops = flops + attn_bmm * (1 + q_rg + k_rg)
        o_rg = p_rg or v_rg
        flops = flops + attn_bmm * (1 + p_rg + v_rg)
        return matmul("o", o_rg)

    def ffn(in_rg: bool) -> bool:
        if "gate" in shapes:
            gate_rg = matmul("gate", in_rg)
            up_rg = matmul("up", in_rg)
            mid_rg = gate_rg or up_rg
        else:
            mid_rg = matmul("up", in_rg)
        return matmul("down", mid_rg)

    if a.parallel_block:
        attn_rg = attention(x_rg)
        ffn_rg = ffn(x_rg)
        return flops, x_rg or attn_rg or ffn_rg
    attn_rg = attention(x_rg)
    h1_rg = x_rg or attn_rg
    mlp_rg = ffn(h1_rg)
    return flops, h1_rg or mlp_rg


class TrainStep(TypedDict, total=False):
    """Keywords of one training step, shared by :func:`train_flops`, :func:`train_bytes` and
    :func:`mei_envs.hardware.time_train_step` (defaults in brackets)."""

    batch: int  # sequences per step [1]
    mode: str  # "full" (every weight trained) or "lora" (frozen base, adapters) ["full"]
    lora_rank: int  # adapter rank [8]
    lora_targets: str | Iterable[str]  # matrices that get adapters [("q", "v")]
    layers: tuple[int, int] | None  # blocks [start, end) in the step [None: all]
    lm_head: bool  # the LM head over all ``seq_len`` tokens is part of the step [True]


class _Step(NamedTuple):
    arch: Architecture
    seq_len: np.ndarray
    batch: int
    mode: str
    lora_rank: Any  # validated where used (LoRA mode only)
    lora_targets: Any
    start: int
    end: int
    lm_head: bool


def _train_step(
    arch: ArchSpec,
    seq_len: Any,
    *,
    batch: int = 1,
    mode: str = "full",
    lora_rank: int = 8,
    lora_targets: str | Iterable[str] = ("q", "v"),
    layers: tuple[int, int] | None = None,
    lm_head: bool = True,
) -> _Step:
    """The settings of one training step (:class:`TrainStep`) with their defaults; mode,
    sizes and layer range validated (each error names the argument)."""
    a = _arch(arch)
    if mode not in ("full", "lora"):
        raise ValueError(f"mode={mode!r}: must be one of ['full', 'lora']")
    s = _count("seq_len", seq_len, lo=0, strict=True)
    b = _int("batch", batch, lo=1)
    start, end = _layer_range(a, layers)
    return _Step(a, s, b, mode, lora_rank, lora_targets, start, end, lm_head)


def train_flops(
    arch: ArchSpec,
    seq_len: Any,
    *,
    input_requires_grad: bool | None = None,
    **step: Unpack[TrainStep],
) -> float | np.ndarray:
    """FLOPs of one training step (forward + backward) on ``batch`` sequences of ``seq_len``
    (``step``: the keywords of :class:`TrainStep`).

    ``mode="full"``: 3 x forward (every matmul's backward computes grads of both inputs).
    ``mode="lora"``: frozen base with adapters on ``lora_targets`` in every trained block;
    counted op by op as autograd runs it (see ``_lora_block_train_flops``), which is what
    FlopCounterMode measures with peft. ``lm_head`` adds the LM head for all ``seq_len``
    tokens. ``input_requires_grad`` says whether the gradient w.r.t. the input of block
    ``start`` is needed; default: only when ``start > 0`` (a split-learning server returns it
    to the device; block 0's input comes from the frozen embedding).

    Raises:
        ValueError: bad mode, sizes, targets or layer range (each names the argument).
    """
    st = _train_step(arch, seq_len, **step)
    a, s, b, start, end, lm_head = st.arch, st.seq_len, st.batch, st.start, st.end, st.lm_head
    if st.mode == "full":
        fwd = forward_flops(a, s, 0, layers=(start, end), lm_head_tokens=s if lm_head else 0)
        return _out(3.0 * b * np.asarray(fwd))
    r = _int("lora_rank", st.lora_rank, lo=1)
    targets = resolve_lora_targets(a, st.lora_targets)
    rg = (start > 0) if input_requires_grad is None else bool(input_requires_grad)
    total = np.zeros_like(s)
    for _ in range(start, end):
        layer_flops, rg = _lora_block_train_flops(a, s, targets, r, rg)
        total = total + layer_flops
    if lm_head:
        total = total + 2.0 * s * a.d_model * a.vocab_size * (2.0 if rg else 1.0)
    return _out(b * total)


# ---- bytes -----------------------------------------------------------------------------
def weight_bytes(
    arch: ArchSpec,
    precision: str = "fp16",
    *,
    layers: tuple[int, int] | None = None,
    include_embedding: bool = False,
    include_lm_head: bool = False,
) -> float:
    """Bytes of the weights of blocks ``layers`` (default all), ``N*bits/8``.

    ``include_embedding`` adds the token (and learned position) embedding and the final norm;
    ``include_lm_head`` adds the LM head (a tied head counts once when both are included).
    """
    a = _arch(arch)
    nbytes = bytes_per_element(precision)
    start, end = _layer_range(a, layers)
    bd = param_breakdown(a)
    n = bd["per_layer"] * (end - start)
    if include_embedding:
        n += bd["embedding"] + bd["position_embedding"] + bd["final_norm"]
    if include_lm_head:
        if a.tied_embeddings and not include_embedding:
            n += bd["embedding"]
        n += bd["lm_head"]
    return float(n * nbytes)


def _lm_head_weight_elems(a: Architecture) -> int:
    return a.vocab_size * a.d_model + (a.vocab_size if a.lm_head_bias else 0)


def kv_bytes_per_token(
    arch: ArchSpec, precision: str = "fp16", *, layers: tuple[int, int] | None = None
) -> float:
    """KV-cache bytes per token: ``2*n_kv_heads*d_head*bytes`` per layer."""
    a = _arch(arch)
    start, end = _layer_range(a, layers)
    return float(2 * a.kv_dim * (end - start) * bytes_per_element(precision))


def hidden_state_bytes(
    arch: ArchSpec, tokens: Any = 1, precision: str = "fp16", batch: int = 1
) -> float | np.ndarray:
    """Smashed data at any cut: ``b*s*h*bytes`` (the hidden size is the same at every cut)."""
    a = _arch(arch)
    s = _count("tokens", tokens, lo=0, strict=True)
    b = _int("batch", batch, lo=1)
    return _out(b * s * a.d_model * bytes_per_element(precision))


def forward_bytes(
    arch: ArchSpec,
    new_tokens: Any,
    cached_tokens: Any = 0,
    *,
    weight_precision: str = "fp16",
    kv_precision: str = "fp16",
    act_precision: str = "fp16",
    **shape: Unpack[ForwardShape],
) -> float | np.ndarray:
    """Memory traffic of one forward pass, for a roofline model [bytes] (``shape``: the
    keywords of :class:`ForwardShape`).

    Weights of the blocks (and of the LM head when ``lm_head_tokens > 0``) are read once;
    the KV of ``cached_tokens`` is read and the KV of ``new_tokens`` written; the input and
    output hidden states (``2*b*s*h``) and the logits (``b*t*V``) move once. Arrays broadcast.
    """
    a, s, c, t, b, (start, end) = _forward_args(arch, new_tokens, cached_tokens, **shape)
    w = weight_bytes(a, weight_precision, layers=(start, end))
    head_w = _lm_head_weight_elems(a) * bytes_per_element(weight_precision)
    kv = kv_bytes_per_token(a, kv_precision, layers=(start, end))
    act = bytes_per_element(act_precision)
    total = (
        w
        + np.where(t > 0, head_w, 0.0)
        + b * (c + s) * kv
        + b * 2.0 * s * a.d_model * act
        + b * t * a.vocab_size * act
    )
    return _out(total)


def train_bytes(
    arch: ArchSpec,
    seq_len: Any,
    *,
    weight_precision: str = "fp16",
    act_precision: str = "fp16",
    optimizer: str = "adam",
    **step: Unpack[TrainStep],
) -> float | np.ndarray:
    """Memory traffic of one training step (forward, backward, optimizer) [bytes]
    (``step``: the keywords of :class:`TrainStep`).

    A roofline estimate to pair with :func:`train_flops`, term by term:

    * forward: :func:`forward_bytes` for ``seq_len`` new tokens from an empty cache (K/V
      written in ``act_precision``), the LM head over all tokens when ``lm_head``;
    * stored activations: :func:`activation_elems_per_token` per trained block, written in
      the forward pass and read in the backward pass (2x);
    * backward: the frozen or trained weights read once more (for the input gradients) and
      the block input/output gradients moved once (``2*b*s*h`` per block);
    * optimizer, per trainable parameter (LoRA adapters in fp32, or all weights): gradient
      written and read; parameters read and written (a 4 B fp32 master copy plus the write
      of the ``weight_precision`` copy when weights are below 32 bits); Adam's two fp32
      moments read and written (SGD: none).

    Raises:
        ValueError: bad optimizer, mode, sizes, targets or layer range.
    """
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: must be one of {list(_OPTIMIZERS)}")
    st = _train_step(arch, seq_len, **step)
    a, s, b, start, end, lm_head = st.arch, st.seq_len, st.batch, st.start, st.end, st.lm_head
    n = end - start
    act = bytes_per_element(act_precision)
    w_el = bytes_per_element(weight_precision)
    fwd = np.asarray(
        forward_bytes(
            a,
            s,
            0,
            layers=(start, end),
            lm_head_tokens=s if lm_head else 0,
            weight_precision=weight_precision,
            kv_precision=act_precision,
            act_precision=act_precision,
            batch=b,
        )
    )
    # Elements one block keeps per token with a context of s tokens (softmax: n_heads * s).
    per_token = activation_elems_per_token(a, 0) + a.n_heads * s
    stored = 2.0 * n * per_token * b * s * act
    w = weight_bytes(a, weight_precision, layers=(start, end))
    if lm_head:
        w += _lm_head_weight_elems(a) * w_el
    backward = w + n * b * 2.0 * s * a.d_model * act
    moments = 16.0 if optimizer in ("adam", "adamw") else 0.0
    if st.mode == "lora":
        n_train = float(lora_params(a, st.lora_rank, st.lora_targets, layers=(start, end)))
        per_param = 2.0 * _TRAINABLE_BYTES + 2.0 * _TRAINABLE_BYTES + moments
    else:
        n_train = w / w_el
        master = PRECISION_BITS[weight_precision] < 32
        params_rw = 2.0 * 4.0 + w_el if master else 2.0 * w_el
        per_param = 2.0 * w_el + params_rw + moments
    return _out(fwd + stored + backward + n_train * per_param)


# ---- device memory ---------------------------------------------------------------------
def activation_elems_per_token(arch: ArchSpec, context_tokens: int) -> float:
    """Activations one block keeps for backward, per token [elements].

    Norm inputs (h each), the QKV input (h), Q and K/V after head expansion (3q), the
    softmax output (n_heads * context), the output-projection input (q), the FFN input (h)
    and its intermediates (3f gated: gate, activation, up; 2f otherwise). No dropout masks
    (fine-tuning LLMs runs without dropout). Generalises Korthikanti et al. 2022
    (arXiv 2205.05198) eq. (1) to GQA and gated FFNs.
    """
    a = _arch(arch)
    h, q = a.d_model, a.q_dim
    ffn = (3 if a.ffn_type == "gated" else 2) * a.d_ff
    return float(a.norms_per_layer * h + h + 3 * q + a.n_heads * context_tokens + q + h + ffn)


def device_memory_bytes(
    arch: ArchSpec,
    cut_layer: int,
    *,
    mode: str = "inference",
    seq_len: int = 512,
    batch: int = 1,
    weight_precision: str = "fp16",
    act_precision: str = "fp16",
    lora_rank: int = 8,
    lora_targets: str | Iterable[str] = ("q", "v"),
    include_embedding: bool = True,
    include_lm_head: bool = False,
    optimizer: str = "adam",
) -> dict[str, float]:
    """Memory of a device holding blocks ``[0, cut_layer)`` [bytes].

    * ``inference``: weights, a KV cache of ``seq_len`` tokens (act precision) and one
      block's activation working set.
    * ``lora``: frozen weights, stored activations of every held block, fp32 adapters, their
      grads and optimizer states.
    * ``full``: weights, weight grads (weight precision), optimizer states, activations.

    Adam keeps 8 B/parameter (two fp32 moments) plus a 4 B fp32 master copy when weights
    are below 32 bits; SGD keeps only the master copy.
    """
    a = _arch(arch)
    cut = _int("cut_layer", cut_layer, lo=0)
    if cut > a.n_layers:
        raise ValueError(f"cut_layer={cut_layer!r}: must be <= n_layers={a.n_layers}")
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}: must be one of {list(_MODES)}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: must be one of {list(_OPTIMIZERS)}")
    s = _int("seq_len", seq_len, lo=1)
    b = _int("batch", batch, lo=1)
    act = bytes_per_element(act_precision)
    w_bytes = bytes_per_element(weight_precision)
    weights = weight_bytes(
        a,
        weight_precision,
        layers=(0, cut),
        include_embedding=include_embedding,
        include_lm_head=include_lm_head,
    )
    master = 4.0 if PRECISION_BITS[weight_precision] < 32 else 0.0
    opt_per_param = (8.0 if optimizer in ("adam", "adamw") else 0.0) + master
    out = {
        "weights": weights,
        "kv_cache": 0.0,
        "activations": 0.0,
        "adapter": 0.0,
        "adapter_grads": 0.0,
        "weight_grads": 0.0,
        "optimizer_states": 0.0,
    }
    per_block = activation_elems_per_token(a, s) * b * s * act
    if mode == "inference":
        out["kv_cache"] = b * s * kv_bytes_per_token(a, act_precision, layers=(0, cut))
        out["activations"] = per_block if cut > 0 else 0.0
    else:
        out["activations"] = cut * per_block + b * s * a.d_model * act
        if mode == "lora":
            n_adapter = lora_params(a, lora_rank, lora_targets, layers=(0, cut))
            out["adapter"] = n_adapter * _TRAINABLE_BYTES
            out["adapter_grads"] = n_adapter * _TRAINABLE_BYTES
            # Adapters are fp32 already, so no master copy: only the Adam moments.
            out["optimizer_states"] = n_adapter * (8.0 if optimizer != "sgd" else 0.0)
        else:
            n_trainable = weights / w_bytes
            out["weight_grads"] = weights
            out["optimizer_states"] = n_trainable * opt_per_param
    out["total"] = float(sum(out.values()))
    return out


# ---- summary table ---------------------------------------------------------------------
def cost_table(
    arch: ArchSpec, *, seq_len: int = 128, cached_tokens: int = 128, lora_rank: int = 8
) -> dict[str, Any]:
    """Per-model summary and per-layer rows (used by ``mei-envs profile show``).

    Row ``i`` describes block ``i`` and the cut after it (device holds blocks ``[0, i+1)``).
    Whole-model prefill/decode FLOPs include the LM head for the one token that needs
    logits.
    """
    a = _arch(arch)
    s = _int("seq_len", seq_len, lo=1)
    c = _int("cached_tokens", cached_tokens, lo=0)
    r = _int("lora_rank", lora_rank, lo=1)
    bd = param_breakdown(a)
    precisions = list(PRECISION_BITS)
    summary = {
        "name": a.name,
        "family": a.family,
        "source": a.source,
        "n_layers": a.n_layers,
        "d_model": a.d_model,
        "n_heads": a.n_heads,
        "n_kv_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "d_ff": a.d_ff,
        "vocab_size": a.vocab_size,
        "params": bd,
        "published_params": a.published_params,
        "seq_len": s,
        "cached_tokens": c,
        "lora_rank": r,
        "prefill_flops": prefill_flops(a, s, lm_head_tokens=1),
        "decode_flops": decode_flops(a, c, lm_head_tokens=1),
        "train_flops_full": train_flops(a, s, mode="full"),
        "train_flops_lora_qv": train_flops(a, s, mode="lora", lora_rank=r),
        "lora_params_qv": lora_params(a, r, ("q", "v")),
        "lora_params_all_linear": lora_params(a, r, "all_linear"),
        "weight_bytes": {
            p: weight_bytes(a, p, include_embedding=True, include_lm_head=True) for p in precisions
        },
        "kv_bytes_per_token_fp16": kv_bytes_per_token(a, "fp16"),
        "hidden_state_bytes_per_token_fp16": hidden_state_bytes(a, 1, "fp16"),
    }
    layer_prefill = prefill_flops(a, s, layers=(0, 1))
    layer_decode = decode_flops(a, c, layers=(0, 1))
    layer_w = {p: weight_bytes(a, p, layers=(0, 1)) for p in precisions}
    rows = []
    for i in range(a.n_layers):
        cut = i + 1
        rows.append(
            {
                "layer": i,
                "params": bd["per_layer"],
                "prefill_flops": layer_prefill,
                "decode_flops": layer_decode,
                "weight_bytes": dict(layer_w),
                "kv_bytes_per_token_fp16": kv_bytes_per_token(a, "fp16", layers=(i, cut)),
                "cut": cut,
                "device_prefill_flops": prefill_flops(a, s, layers=(0, cut)),
                "smashed_bytes_per_token_fp16": hidden_state_bytes(a, 1, "fp16"),
                "device_memory_inference": device_memory_bytes(a, cut, mode="inference", seq_len=s)[
                    "total"
                ],
                "device_memory_lora": device_memory_bytes(
                    a, cut, mode="lora", seq_len=s, lora_rank=r
                )["total"],
            }
        )
    return {"summary": summary, "layers": rows}
