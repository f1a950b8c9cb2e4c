"""Analytic cost model: FLOPs, LoRA, bytes, memory, validation."""

from __future__ import annotations

import numpy as np
import pytest

from mei_envs.llm import costs, list_models


def test_precisions():
    assert costs.bytes_per_element("fp16") == 2.0
    assert costs.bytes_per_element("q4_0") == 4.5 / 8
    assert set(costs.PRECISION_BITS) == {"fp32", "fp16", "bf16", "int8", "int4", "q8_0", "q4_0"}
    with pytest.raises(ValueError, match=r"fp8.*fp32"):
        costs.bytes_per_element("fp8")
    with pytest.raises(ValueError, match="precision"):
        costs.weight_bytes("gpt2", "fp64")


def test_llama2_7b_reference_numbers():
    assert costs.kv_bytes_per_token("llama-2-7b") == 524_288  # 512 KiB/token fp16
    assert costs.hidden_state_bytes("llama-2-7b") == 8192  # 8 KiB/token fp16
    assert costs.lora_params("llama-2-7b", 8) == 4_194_304
    assert costs.lora_params("llama-2-7b", 8, "all_linear") == 19_988_480
    assert costs.lora_params("llama-2-7b", 64, "all_linear") == 159_907_840
    assert costs.lora_params("llama-2-7b", 8, ("q", "v"), layers=(0, 8)) == 4_194_304 // 4


def test_lora_target_mapping():
    # GPT-2 fuses q, k, v in c_attn (768 -> 2304): q,v maps to that one matrix.
    assert costs.lora_params("gpt2", 4, ("q", "v")) == 12 * 4 * (768 + 2304)
    assert costs.lora_params("opt-125m", 2, ("fc1", "fc2")) == 12 * 2 * 2 * (768 + 3072)
    fc = costs.lora_params("opt-125m", 2, ("fc1", "fc2"))
    assert costs.lora_params("opt-125m", 2, ("up", "down")) == fc
    with pytest.raises(ValueError, match="gate"):
        costs.lora_params("gpt2", 8, ("gate",))
    with pytest.raises(ValueError, match="rank"):
        costs.lora_params("gpt2", 0)
    # GQA: k and v are n_kv_heads*d_head wide.
    assert costs.lora_params("llama-3-8b", 1, ("k",)) == 32 * (4096 + 1024)


def test_forward_flops_formula_by_hand():
    # Llama-2-7B, one layer, s = 4 new tokens, c = 6 cached, batch 2.
    h, q, k, f = 4096, 4096, 4096, 11008
    s, c, b = 4, 6, 2
    expected = 2 * b * s * (2 * h * q + 2 * h * k) + 4 * b * s * (c + s) * q + 2 * 3 * b * s * h * f
    assert costs.forward_flops("llama-2-7b", s, c, layers=(3, 4), batch=b) == expected
    head = 2 * b * 1 * h * 32000
    full = costs.forward_flops("llama-2-7b", s, c, lm_head_tokens=1, batch=b)
    assert full == 32 * expected + head
    # 2N per token rule: decode at c=0 ~ 2 * non-embedding params (+ head)
    dec = costs.decode_flops("llama-2-7b", 0, lm_head_tokens=1)
    n_nonemb = costs.total_params("llama-2-7b") - 32000 * 4096
    assert dec == pytest.approx(2 * n_nonemb, rel=1e-3)


def test_forward_flops_broadcasts_arrays():
    s = np.array([1, 16, 128])[:, None]
    c = np.array([0, 64, 512, 2048])[None, :]
    table = costs.forward_flops("mobilellm-125m", s, c, layers=(0, 10))
    assert table.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            one = costs.forward_flops("mobilellm-125m", int(s[i, 0]), int(c[0, j]), layers=(0, 10))
            assert isinstance(one, float)
            assert table[i, j] == one
    assert np.all(np.diff(table, axis=1) > 0)  # more cache -> more attention FLOPs
    by = costs.forward_bytes("mobilellm-125m", s, c, lm_head_tokens=1)
    assert by.shape == (3, 4) and np.all(np.diff(by, axis=1) > 0)


def test_layer_ranges_add_up():
    a = "qwen2-0.5b"
    whole = costs.prefill_flops(a, 64)
    parts = costs.prefill_flops(a, 64, layers=(0, 7)) + costs.prefill_flops(a, 64, layers=(7, 24))
    assert whole == parts
    assert costs.prefill_flops(a, 64, layers=(5, 5)) == 0.0
    for bad in [(-1, 3), (3, 2), (0, 25)]:
        with pytest.raises(ValueError, match="layers"):
            costs.forward_flops(a, 8, layers=bad)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: costs.forward_flops("gpt2", 0), "new_tokens"),
        (lambda: costs.forward_flops("gpt2", -3), "new_tokens"),
        (lambda: costs.forward_flops("gpt2", 4, -1), "cached_tokens"),
        (lambda: costs.forward_flops("gpt2", np.array([4, -1])), "new_tokens"),
        (lambda: costs.forward_flops("gpt2", 4, batch=0), "batch"),
        (lambda: costs.forward_flops("gpt2", 4, lm_head_tokens=5), "lm_head_tokens"),
        (lambda: costs.hidden_state_bytes("gpt2", 0), "tokens"),
        (lambda: costs.train_flops("gpt2", 0), "seq_len"),
        (lambda: costs.train_flops("gpt2", 8, mode="qlora"), "mode"),
        (lambda: costs.device_memory_bytes("gpt2", 13), "cut_layer"),
        (lambda: costs.device_memory_bytes("gpt2", 3, seq_len=0), "seq_len"),
        (lambda: costs.device_memory_bytes("gpt2", 3, mode="train"), "mode"),
        (lambda: costs.forward_bytes("gpt2", 4, weight_precision="fp12"), "precision"),
    ],
)
def test_bad_sizes_name_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_train_flops_full_and_lora():
    a = "llama-3.2-1b"
    fwd = costs.forward_flops(a, 128, lm_head_tokens=128)
    assert costs.train_flops(a, 128, mode="full") == 3 * fwd
    lora = costs.train_flops(a, 128, mode="lora", lora_rank=8)
    assert 1.99 < lora / fwd < 2.05  # REFERENCE.md section 2: measured 2.01-2.04
    # Split learning: device [0, c) + server [c, L) + head == the whole step when every
    # block is adapted (the server computes the grad of its input either way).
    dev = costs.train_flops(a, 128, mode="lora", layers=(0, 4), lm_head=False)
    srv = costs.train_flops(a, 128, mode="lora", layers=(4, 16))
    assert dev + srv == pytest.approx(lora, rel=1e-12)
    # Higher rank and more targets cost more.
    assert costs.train_flops(a, 128, mode="lora", lora_rank=64) > lora
    assert costs.train_flops(a, 128, mode="lora", lora_targets="all_linear") > lora
    # Array seq_len works.
    arr = costs.train_flops(a, np.array([64, 128]), mode="lora")
    assert arr[1] == lora


def test_bytes():
    a = "llama-2-7b"
    n = costs.total_params(a)
    whole = {"include_embedding": True, "include_lm_head": True}
    assert costs.weight_bytes(a, "fp16", **whole) == 2 * n
    assert costs.weight_bytes(a, "q4_0", **whole) == n * 4.5 / 8
    # Tied model: embedding and head counted once.
    g = "gpt2"
    assert costs.weight_bytes(g, "fp32", **whole) == 4 * 124439808
    assert costs.kv_bytes_per_token(a, layers=(0, 8)) == 524_288 / 4
    assert costs.kv_bytes_per_token("llama-3-8b") == 2 * 32 * 8 * 128 * 2  # GQA: 128 KiB
    # Decode traffic ~ all weights + the KV cache read.
    dec = costs.forward_bytes(a, 1, 1000, lm_head_tokens=1)
    expected = costs.weight_bytes(a, include_lm_head=True) + 1001 * 524_288 + 2 * 8192 + 2 * 32000
    assert dec == expected


def test_device_memory():
    a = "llama-2-7b"
    inf = costs.device_memory_bytes(a, 8, seq_len=512)
    assert inf["kv_cache"] == 512 * 524_288 / 4
    assert inf["weights"] == costs.weight_bytes(a, layers=(0, 8), include_embedding=True)
    assert inf["total"] == pytest.approx(sum(v for k, v in inf.items() if k != "total"))
    lora = costs.device_memory_bytes(a, 8, mode="lora", seq_len=512)
    assert lora["adapter"] == 4 * costs.lora_params(a, 8, layers=(0, 8))
    assert lora["optimizer_states"] == 2 * lora["adapter"]
    full = costs.device_memory_bytes(a, 8, mode="full", seq_len=512)
    assert full["total"] > lora["total"] > inf["total"] - inf["kv_cache"]
    # More layers on the device -> more memory, monotone in the cut.
    totals = [costs.device_memory_bytes(a, c, mode="lora")["total"] for c in range(33)]
    assert all(x < y for x, y in zip(totals, totals[1:], strict=False))


@pytest.mark.parametrize("name", list_models())
def test_cost_table_consistent(name):
    tab = costs.cost_table(name, seq_len=64, cached_tokens=32)
    summ, rows = tab["summary"], tab["layers"]
    assert summ["params"]["total"] == summ["published_params"]
    assert len(rows) == summ["n_layers"]
    assert sum(r["prefill_flops"] for r in rows) == costs.prefill_flops(name, 64)
    assert rows[-1]["device_prefill_flops"] == costs.prefill_flops(name, 64)
    assert rows[0]["device_memory_lora"] < rows[-1]["device_memory_lora"]
