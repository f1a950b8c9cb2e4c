"""Measure FLOPs and parameters of the real Hugging Face modules and compare with the formulas.

Every catalog model is built from its config alone (no download, random or no weights) with
eager attention, on the ``meta`` device by default: no memory is allocated and no arithmetic
runs, but every aten op is dispatched, so ``torch.utils.flop_counter.FlopCounterMode`` sees
exactly the matmuls a real run would issue (REFERENCE.md section 2). Four runs per model:

* prefill of ``prefill_seq`` tokens (logits for every token, as ``model(ids)`` computes them);
* one decode step with ``decode_cached`` tokens in the KV cache (``past_key_values``);
* one full fine-tuning step (forward + ``loss.backward()``);
* one LoRA step with a frozen base (peft adapters on ``lora_targets``).

The measured counts, the analytic ones from :mod:`mei_envs.llm.costs` and their relative
errors are written to ``mei_envs/data/profiles/<model>.json`` with provenance.

torch, transformers and peft are imported inside the functions only (``pip install
mei-envs[profile]``); importing this module needs numpy alone.
"""

from __future__ import annotations

import datetime
import inspect
import json
import platform
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mei_envs.llm.catalog import DATA_DIR, Architecture, get_architecture, list_models
from mei_envs.llm.costs import (
    decode_flops,
    lora_params,
    prefill_flops,
    resolve_lora_targets,
    total_params,
    train_flops,
)

PROFILES_DIR = DATA_DIR / "profiles"
# Measured and analytic counts must agree within this relative error (brief: 0.5 %).
TOLERANCE = 0.005
PROFILE_FORMAT = 1

# Module names (suffixes, as peft's target_modules matches them) of each logical matrix.
_LLAMA_LIKE = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
_MODULE_NAMES: dict[str, dict[str, str]] = {
    "gpt2": {"qkv": "c_attn", "o": "attn.c_proj", "up": "c_fc", "down": "mlp.c_proj"},
    "opt": {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "o": "out_proj",
        "up": "fc1",
        "down": "fc2",
    },
    "phi": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "dense", "up": "fc1", "down": "fc2"},
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "mobilellm": _LLAMA_LIKE,
}

# The keyword of an Architecture field in each Hugging Face config class: GPT2Config,
# OPTConfig, and the standard names that PhiConfig, LlamaConfig and its kin (MistralConfig,
# Qwen2Config, GemmaConfig) share. None: the class has no such keyword (GPT-2 and OPT are
# multi-head with learned positions). The norm epsilon is named differently by Phi and Llama
# and passed by each builder.
_HF_KEYWORDS: dict[str, tuple[str | None, str | None, str]] = {
    "d_model": ("n_embd", "hidden_size", "hidden_size"),
    "d_ff": ("n_inner", "ffn_dim", "intermediate_size"),
    "n_layers": ("n_layer", "num_hidden_layers", "num_hidden_layers"),
    "n_heads": ("n_head", "num_attention_heads", "num_attention_heads"),
    "n_kv_heads": (None, None, "num_key_value_heads"),
    "activation": ("activation_function", "activation_function", "hidden_act"),
    "max_positions": ("n_positions", "max_position_embeddings", "max_position_embeddings"),
    "rope_theta": (None, None, "rope_theta"),
}
_HF_COLUMN = {"gpt2": 0, "opt": 1}  # every other family: the standard names


def _hf_keywords(a: Architecture) -> dict[str, Any]:
    """``a``'s sizes as keywords of its family's Hugging Face config class."""
    col = _HF_COLUMN.get(a.family, 2)
    return {keys[col]: getattr(a, field) for field, keys in _HF_KEYWORDS.items() if keys[col]}


MEASURED_KEYS = (
    "params",
    "prefill_flops",
    "decode_flops",
    "train_full_flops",
    "train_lora_flops",
    "lora_trainable_params",
)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"profiling needs {module!r}; install with `pip install mei-envs[profile]`"
        ) from exc


# ---- building modules --------------------------------------------------------------------
def hf_config(arch: Architecture | str | Mapping[str, Any]) -> Any:
    """A transformers config object describing ``arch`` (no download).

    Raises:
        ValueError: when the family's Hugging Face class cannot express the architecture
            (e.g. Llama with q/k/v biases but no output bias).
    """
    a = get_architecture(arch)
    _require("transformers")
    import transformers as tf

    common = {
        "vocab_size": a.vocab_size,
        "tie_word_embeddings": a.tied_embeddings,
        "use_cache": True,
    }
    fam = a.family
    if fam == "gpt2":
        _expect(a, qkv_bias=True, o_bias=True, mlp_bias=True, norm="layernorm", ffn_type="mlp")
        _expect(a, pos_embedding="learned", position_offset=0, n_kv_heads=a.n_heads)
        _expect_head_dim(a)
        return tf.GPT2Config(
            **_hf_keywords(a),
            layer_norm_epsilon=a.norm_eps,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if fam == "opt":
        _expect(a, norm="layernorm", ffn_type="mlp", pos_embedding="learned", position_offset=2)
        _expect(a, n_kv_heads=a.n_heads, o_bias=a.qkv_bias, mlp_bias=a.qkv_bias)
        _expect_head_dim(a)
        return tf.OPTConfig(
            **_hf_keywords(a),
            do_layer_norm_before=True,
            word_embed_proj_dim=a.d_model,
            enable_bias=a.qkv_bias,
            dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    if fam == "phi":
        _expect(a, norm="layernorm", ffn_type="mlp", pos_embedding="rope", parallel_block=True)
        _expect(a, qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=True)
        _expect_head_dim(a)
        return tf.PhiConfig(
            **_hf_keywords(a),
            layer_norm_eps=a.norm_eps,
            partial_rotary_factor=a.partial_rotary_factor,
            qk_layernorm=False,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            **common,
        )
    _expect(a, norm="rmsnorm", ffn_type="gated", pos_embedding="rope", parallel_block=False)
    _expect(a, lm_head_bias=False)
    llama_kw = {**_hf_keywords(a), "head_dim": a.head_dim, "rms_norm_eps": a.norm_eps, **common}
    if fam in ("llama", "mobilellm"):
        # MobileLLM is a Llama with embedding sharing, deep-and-thin (arXiv 2402.14905).
        _expect(a, o_bias=a.qkv_bias)
        return tf.LlamaConfig(attention_bias=a.qkv_bias, mlp_bias=a.mlp_bias, **llama_kw)
    if fam == "mistral":
        _expect(a, qkv_bias=False, o_bias=False, mlp_bias=False)
        return tf.MistralConfig(sliding_window=4096, **llama_kw)
    if fam == "qwen2":
        _expect(a, qkv_bias=True, o_bias=False, mlp_bias=False)
        llama_kw.pop("head_dim")
        _expect_head_dim(a)
        return tf.Qwen2Config(**llama_kw)
    if fam == "gemma":
        _expect(a, qkv_bias=False, o_bias=False, mlp_bias=False)
        return tf.GemmaConfig(**llama_kw)
    raise ValueError(f"Architecture {a.name!r}: family={fam!r} has no config builder")


def _expect(a: Architecture, **values: Any) -> None:
    for name, want in values.items():
        got = getattr(a, name)
        if got != want:
            raise ValueError(
                f"Architecture {a.name!r}: {name}={got!r} cannot be built with the "
                f"{a.family} Hugging Face class (needs {want!r})"
            )


def _expect_head_dim(a: Architecture) -> None:
    if a.head_dim * a.n_heads != a.d_model:
        raise ValueError(
            f"Architecture {a.name!r}: head_dim={a.head_dim} must equal d_model/n_heads="
            f"{a.d_model / a.n_heads:g} for the {a.family} Hugging Face class"
        )


def build_model(arch: Architecture | str | Mapping[str, Any], device: str = "meta") -> Any:
    """Build the transformers causal-LM module of ``arch`` with eager attention.

    ``device="meta"`` allocates nothing (shapes only); ``"cpu"`` gives random weights. Never
    downloads anything.
    """
    _require("torch")
    import torch
    from transformers import AutoModelForCausalLM

    cfg = hf_config(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    return model


def lora_target_modules(
    arch: Architecture | str | Mapping[str, Any], targets: str | Iterable[str] = ("q", "v")
) -> list[str]:
    """peft ``target_modules`` for logical targets (see costs.resolve_lora_targets)."""
    a = get_architecture(arch)
    names = _MODULE_NAMES[a.family]
    return [names[t] for t in resolve_lora_targets(a, targets)]


# ---- measuring ---------------------------------------------------------------------------
def _count_flops(fn: Any) -> tuple[int, dict[str, int]]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def _cache_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def profile_model(
    arch: Architecture | str | Mapping[str, Any],
    *,
    prefill_seq: int = 128,
    decode_cached: int = 128,
    train_seq: int = 128,
    lora_rank: int = 8,
    lora_targets: Sequence[str] = ("q", "v"),
    device: str = "meta",
) -> dict[str, Any]:
    """Measure parameters and FLOPs of the real module and compare with the formulas.

    Returns:
        A dict with ``settings``, ``measured``, ``analytic``, ``rel_error`` (|m-a|/a),
        ``max_rel_error``, per-op FLOPs (``ops``) and ``wall_seconds``.
    """
    a = get_architecture(arch)
    for name, v in (
        ("prefill_seq", prefill_seq),
        ("decode_cached", decode_cached),
        ("train_seq", train_seq),
        ("lora_rank", lora_rank),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be an integer >= 1")
    _require("peft")
    import torch
    from peft import LoraConfig, get_peft_model

    t0 = time.perf_counter()
    targets = list(lora_targets)
    measured: dict[str, int] = {}
    ops: dict[str, dict[str, int]] = {}

    def ids(n: int) -> Any:
        return torch.zeros((1, n), dtype=torch.long, device=device)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(a, device)
        model.train()  # dropout probabilities are 0; train mode only matters for the step
        measured["params"] = int(sum(p.numel() for p in model.parameters()))

        with torch.no_grad():
            measured["prefill_flops"], ops["prefill"] = _count_flops(
                lambda: model(ids(prefill_seq))
            )
            cache = _cache_of(model(ids(decode_cached), use_cache=True))
            cache_kw = {_cache_kwarg(model): cache}
            measured["decode_flops"], ops["decode"] = _count_flops(
                lambda: model(ids(1), use_cache=True, **cache_kw)
            )

        def full_step() -> None:
            x = ids(train_seq)
            model(input_ids=x, labels=x).loss.backward()

        measured["train_full_flops"], ops["train_full"] = _count_flops(full_step)
        model.zero_grad(set_to_none=True)

        lcfg = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=lora_target_modules(a, targets),
            fan_in_fan_out=a.family == "gpt2",  # GPT-2's Conv1D stores W transposed
            bias="none",
        )
        with torch.device(device):
            peft_model = get_peft_model(model, lcfg)
        measured["lora_trainable_params"] = int(
            sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        )

        def lora_step() -> None:
            x = ids(train_seq)
            peft_model(input_ids=x, labels=x).loss.backward()

        measured["train_lora_flops"], ops["train_lora"] = _count_flops(lora_step)

    analytic = analytic_counts(
        a,
        prefill_seq=prefill_seq,
        decode_cached=decode_cached,
        train_seq=train_seq,
        lora_rank=lora_rank,
        lora_targets=targets,
    )
    rel = {k: abs(measured[k] - analytic[k]) / analytic[k] for k in MEASURED_KEYS}
    return {
        "model": a.name,
        "settings": {
            "prefill_seq": prefill_seq,
            "prefill_lm_head_tokens": prefill_seq,
            "decode_cached": decode_cached,
            "decode_lm_head_tokens": 1,
            "train_seq": train_seq,
            "lora_rank": lora_rank,
            "lora_targets": targets,
            "lora_modules": lora_target_modules(a, targets),
            "batch": 1,
            "device": device,
            "attn_implementation": "eager",
        },
        "measured": measured,
        "analytic": analytic,
        "rel_error": rel,
        "max_rel_error": max(rel.values()),
        "ops": ops,
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }


SETTING_KEYS = ("prefill_seq", "decode_cached", "train_seq", "lora_rank", "lora_targets")


def profile_settings(profile_doc: Mapping[str, Any]) -> dict[str, Any]:
    """The measurement settings of a profile document, as keyword arguments of
    :func:`profile_model` and :func:`analytic_counts`."""
    return {k: profile_doc["settings"][k] for k in SETTING_KEYS}


def analytic_counts(
    arch: Architecture | str | Mapping[str, Any],
    *,
    prefill_seq: int,
    decode_cached: int,
    train_seq: int,
    lora_rank: int,
    lora_targets: Sequence[str],
) -> dict[str, int]:
    """The formula values for the quantities :func:`profile_model` measures."""
    a = get_architecture(arch)
    return {
        "params": total_params(a),
        "prefill_flops": int(prefill_flops(a, prefill_seq, lm_head_tokens=prefill_seq)),
        "decode_flops": int(decode_flops(a, decode_cached, lm_head_tokens=1)),
        "train_full_flops": int(train_flops(a, train_seq, mode="full")),
        "train_lora_flops": int(
            train_flops(
                a, train_seq, mode="lora", lora_rank=lora_rank, lora_targets=tuple(lora_targets)
            )
        ),
        "lora_trainable_params": lora_params(a, lora_rank, tuple(lora_targets)),
    }


# ---- shipped profiles ----------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def generate_profiles(
    models: Iterable[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    command: str | None = None,
    **profile_kw: Any,
) -> list[Path]:
    """Profile ``models`` (default: the whole catalog) and write ``<out_dir>/<model>.json``.

    Raises:
        RuntimeError: if any measured value differs from the formula by more than
            :data:`TOLERANCE` (the file is still written, so the numbers can be inspected).
    """
    names = list_models() if models is None else list(models)
    out = Path(out_dir) if out_dir is not None else PROFILES_DIR
    out.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    cmd = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    paths: list[Path] = []
    failures: list[str] = []
    for name in names:
        arch = get_architecture(name)
        prof = profile_model(arch, **profile_kw)
        doc = {
            "format": PROFILE_FORMAT,
            "model": arch.name,
            "architecture": arch.to_dict(),
            **{k: prof[k] for k in ("settings", "measured", "analytic", "rel_error")},
            "max_rel_error": prof["max_rel_error"],
            "ops": prof["ops"],
            "provenance": {
                **versions,
                "counter": "torch.utils.flop_counter.FlopCounterMode",
                "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "command": cmd,
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "wall_seconds": prof["wall_seconds"],
            },
        }
        path = out / f"{arch.name}.json"
        path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        paths.append(path)
        if prof["max_rel_error"] > TOLERANCE:
            failures.append(f"{arch.name}: max relative error {prof['max_rel_error']:.4%}")
    if failures:
        raise RuntimeError("measured != analytic beyond tolerance: " + "; ".join(failures))
    return paths


def load_profile(name: str, profiles_dir: str | Path | None = None) -> dict[str, Any]:
    """Read the shipped profile of catalog model ``name``.

    Raises:
        KeyError: if no profile file exists (lists the available ones).
    """
    d = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    path = d / f"{name}.json"
    if not path.exists():
        have = sorted(p.stem for p in d.glob("*.json"))
        raise KeyError(f"no profile for {name!r} in {d}; available: {have}")
    return json.loads(path.read_text())


def check_profiles_current(
    profiles_dir: str | Path | None = None, *, tolerance: float = TOLERANCE
) -> dict[str, list[str]]:
    """Compare shipped profiles with the live analytic calculator (no torch needed).

    Checks, per catalog model: a profile exists; its architecture equals the catalog's; the
    stored analytic values equal today's formulas exactly; measured values agree with
    today's formulas within ``tolerance``. Returns ``{model: [problems]}``; empty lists mean
    current.
    """
    d = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    report: dict[str, list[str]] = {}
    for name in list_models():
        problems: list[str] = []
        report[name] = problems
        try:
            prof = load_profile(name, d)
        except KeyError as exc:
            problems.append(str(exc))
            continue
        arch = get_architecture(name)
        if prof.get("architecture") != arch.to_dict():
            problems.append("architecture differs from the catalog entry")
        live = analytic_counts(arch, **profile_settings(prof))
        for key in MEASURED_KEYS:
            if prof["analytic"].get(key) != live[key]:
                problems.append(
                    f"analytic {key}: stored {prof['analytic'].get(key)} != live {live[key]}"
                )
            err = abs(prof["measured"][key] - live[key]) / live[key]
            if err > tolerance:
                problems.append(f"measured {key} off by {err:.4%} (> {tolerance:.2%})")
    return report
