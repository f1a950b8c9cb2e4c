"""Shipped FLOP profiles vs the formulas; live re-profiling of small models; profile CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from mei_envs.cli_profile import add_profile_parser
from mei_envs.llm import get_architecture, list_models, total_params
from mei_envs.llm.profile import (
    MEASURED_KEYS,
    TOLERANCE,
    analytic_counts,
    check_profiles_current,
    load_profile,
    profile_settings,
)
from tests.archs import tiny_arch_dict


# ---- shipped files (no torch needed) ---------------------------------------------------------
def test_every_catalog_model_has_a_current_profile():
    report = check_profiles_current()
    assert set(report) == set(list_models())
    assert {k: v for k, v in report.items() if v} == {}


@pytest.mark.parametrize("name", list_models())
def test_shipped_measurement_matches_formula(name):
    prof = load_profile(name)
    live = analytic_counts(name, **profile_settings(prof))
    for key in MEASURED_KEYS:
        assert abs(prof["measured"][key] - live[key]) <= TOLERANCE * live[key], key
    assert prof["measured"]["params"] == get_architecture(name).published_params
    prov = prof["provenance"]
    for field in ("torch", "transformers", "peft", "date_utc", "command", "host", "wall_seconds"):
        assert prov[field], field
    assert prof["settings"]["attn_implementation"] == "eager"


def test_check_flags_a_stale_profile(tmp_path):
    for name in list_models():
        doc = load_profile(name)
        if name == "gpt2":
            doc["measured"]["decode_flops"] = int(doc["measured"]["decode_flops"] * 1.01)
            doc["analytic"]["prefill_flops"] += 2
        if name != "opt-125m":  # leave one missing
            (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    report = check_profiles_current(tmp_path)
    assert any("decode_flops" in p for p in report["gpt2"])
    assert any("analytic prefill_flops" in p for p in report["gpt2"])
    assert report["opt-125m"] and "no profile" in report["opt-125m"][0]
    assert report["llama-2-7b"] == []


# ---- live measurement (needs torch, transformers, peft) --------------------------------------
@pytest.fixture(scope="module")
def profiler():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from mei_envs.llm import profile

    return profile


@pytest.mark.parametrize("name", ["gpt2", "mobilellm-125m", "qwen2-0.5b"])
def test_live_profile_reproduces_shipped_file(profiler, name):
    shipped = load_profile(name)
    live = profiler.profile_model(name, **profile_settings(shipped))
    assert live["measured"] == shipped["measured"]
    assert live["max_rel_error"] <= TOLERANCE


@pytest.mark.parametrize("name", ["gpt2", "opt-125m", "phi-2", "gemma-2b", "llama-3-8b"])
def test_param_count_of_real_module(profiler, name):
    model = profiler.build_model(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == total_params(name)


TINY = tiny_arch_dict(name="tiny-llama", d_ff=96, vocab_size=128)


@pytest.mark.parametrize(
    "arch",
    [
        TINY,
        {
            **TINY,
            "name": "tiny-gpt2",
            "family": "gpt2",
            "n_kv_heads": 4,
            "d_ff": 256,
            "ffn_type": "mlp",
            "activation": "gelu_new",
            "tied_embeddings": True,
            "qkv_bias": True,
            "o_bias": True,
            "mlp_bias": True,
            "norm": "layernorm",
            "pos_embedding": "learned",
            "max_positions": 64,
        },
    ],
    ids=["llama", "gpt2"],
)
def test_real_cpu_weights_count_like_meta_and_formula(profiler, arch):
    kw = dict(prefill_seq=12, decode_cached=7, train_seq=10, lora_rank=4)
    cpu = profiler.profile_model(arch, device="cpu", lora_targets=("all_linear",), **kw)
    meta = profiler.profile_model(arch, device="meta", lora_targets=("all_linear",), **kw)
    assert cpu["measured"] == meta["measured"]
    assert cpu["max_rel_error"] == 0.0


def test_unbuildable_custom_architecture_names_the_field(profiler):
    with pytest.raises(ValueError, match="o_bias"):
        profiler.hf_config({**TINY, "qkv_bias": True})


# ---- CLI ------------------------------------------------------------------------------------
def _run(argv):
    parser = argparse.ArgumentParser(prog="mei-envs")
    add_profile_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_json(capsys):
    assert _run(["profile", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    assert all(r["params"] == r["published_params"] for r in rows)


def test_cli_show(capsys):
    assert _run(["profile", "show", "llama-2-7b", "--json", "--seq-len", "64"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["summary"]["kv_bytes_per_token_fp16"] == 524288
    assert len(table["layers"]) == 32
    assert _run(["profile", "show", "gpt2", "--cached", "16"]) == 0
    out = capsys.readouterr().out
    assert "124,439,808" in out and "decode @ 16 cached" in out


def test_cli_unknown_model_exit_2(capsys):
    assert _run(["profile", "show", "gpt-5"]) == 2
    err = capsys.readouterr().err
    assert "gpt-5" in err and "llama-2-7b" in err
    assert _run(["profile", "generate", "--models", "gpt-5"]) == 2
    assert _run(["profile", "show", "gpt2", "--seq-len", "0"]) == 2
    assert "seq_len" in capsys.readouterr().err


def test_cli_check(capsys):
    assert _run(["profile", "check"]) == 0
    assert "llama-2-7b" in capsys.readouterr().out
