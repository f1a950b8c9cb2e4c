"""Catalog: exact published parameter counts, custom architectures, error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mei_envs.llm import (
    Architecture,
    get_architecture,
    list_models,
    load_architectures,
    param_breakdown,
    total_params,
)
from tests.archs import tiny_arch_dict

EXPECTED_MODELS = [
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "opt-125m",
    "opt-1.3b",
    "opt-6.7b",
    "opt-13b",
    "llama-2-7b",
    "llama-2-13b",
    "llama-3-8b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "mistral-7b-v0.1",
    "phi-2",
    "qwen2-0.5b",
    "qwen2-1.5b",
    "gemma-2b",
    "tinyllama-1.1b",
    "mobilellm-125m",
    "mobilellm-350m",
]

# REFERENCE.md section 3 (exact Hugging Face checkpoint counts), written out independently of
# the data file so an edit to architectures.json cannot silently change them.
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "opt-125m": 125_239_296,
    "opt-1.3b": 1_315_758_080,
    "opt-6.7b": 6_658_473_984,
    "opt-13b": 12_853_473_280,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-3-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "mistral-7b-v0.1": 7_241_732_096,
    "phi-2": 2_779_683_840,
    "qwen2-0.5b": 494_032_768,
    "qwen2-1.5b": 1_543_714_304,
    "gemma-2b": 2_506_172_416,
    "tinyllama-1.1b": 1_100_048_384,
    "mobilellm-125m": 124_635_456,
    "mobilellm-350m": 345_355_200,
}


def test_catalog_lists_every_reference_model():
    assert list_models() == EXPECTED_MODELS


@pytest.mark.parametrize("name", EXPECTED_MODELS)
def test_param_count_equals_published_exactly(name):
    arch = get_architecture(name)
    assert total_params(arch) == PUBLISHED[name]
    assert arch.published_params == PUBLISHED[name]
    assert arch.source.startswith("https://")


def test_breakdown_sums_to_total():
    bd = param_breakdown("opt-125m")
    assert bd["position_embedding"] == 2050 * 768  # learned positions with OPT's offset 2
    parts = ["embedding", "position_embedding", "layers", "final_norm", "lm_head"]
    assert sum(bd[k] for k in parts) == bd["total"]
    assert bd["layers"] == 12 * bd["per_layer"]
    assert param_breakdown("phi-2")["lm_head"] == 51200 * 2560 + 51200  # untied, with bias
    assert param_breakdown("gpt2")["lm_head"] == 0  # tied


def test_custom_architecture_from_dict():
    arch = get_architecture(tiny_arch_dict())
    # per layer: q 64*64 + k,v 2*64*32 + o 64*64 + ffn 3*64*128 + 2 rmsnorms 2*64
    per_layer = 4096 + 4096 + 4096 + 24576 + 128
    assert total_params(arch) == 100 * 64 * 2 + 2 * per_layer + 64
    assert get_architecture(arch) is arch
    assert arch.replace(n_layers=3).n_layers == 3


def test_custom_architecture_from_json_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_arch_dict(name="from-file")))
    assert get_architecture(path).name == "from-file"
    assert get_architecture(str(path)).name == "from-file"
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"models": [tiny_arch_dict(name="a"), tiny_arch_dict(name="b")]}))
    assert list(load_architectures(many)) == ["a", "b"]
    with pytest.raises(ValueError, match="exactly one"):
        get_architecture(many)


def test_malformed_architecture_names_the_field():
    d = tiny_arch_dict()
    del d["d_ff"]
    with pytest.raises(ValueError, match="d_ff"):
        Architecture.from_dict(d)
    with pytest.raises(ValueError, match=r"ffn_type='swiglu'.*\['gated', 'mlp'\]"):
        Architecture.from_dict(tiny_arch_dict(ffn_type="swiglu"))
    with pytest.raises(ValueError, match="n_layers=0"):
        Architecture.from_dict(tiny_arch_dict(n_layers=0))
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        Architecture.from_dict(tiny_arch_dict(n_kv_heads=3))
    with pytest.raises(ValueError, match="colour"):
        Architecture.from_dict(tiny_arch_dict(colour="red"))
    with pytest.raises(ValueError, match="tied_embeddings"):
        Architecture.from_dict(tiny_arch_dict(tied_embeddings="yes"))


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="llama-2-7b") as err:
        get_architecture("llama-9-1t")
    assert "llama-9-1t" in str(err.value)


def test_import_does_not_pull_torch():
    code = (
        "import sys, mei_envs.llm, mei_envs.llm.costs, mei_envs.llm.catalog; "
        "import mei_envs.llm.profile, mei_envs.cli_profile; "
        "mei_envs.llm.total_params('gpt2'); "
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
