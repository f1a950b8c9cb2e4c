"""Tests for mei_envs.hardware: shipped profiles, roofline latency and energy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mei_envs.config import ConfigError
from mei_envs.hardware import (
    DTYPES,
    KINDS,
    HardwareProfile,
    compute_dtype_for,
    custom_hardware,
    energy_j,
    get_hardware,
    list_hardware,
    load_hardware_csv,
    roofline,
    roofline_latency_s,
)

REQUIRED = [
    "snapdragon_8_gen3",
    "apple_a17_pro",
    "jetson_orin_nano",
    "jetson_agx_orin",
    "l4",
    "a100_80gb",
    "h100_sxm",
    "h100_pcie",
    "rtx_4090",
    "raspberry_pi_4",
]


def toy(**overrides) -> HardwareProfile:
    """A device with round numbers: 100 FLOP/s fp32, 400 fp16, 10 B/s, efficiencies 1/2."""
    fields = dict(
        name="toy",
        kind="cpu",
        peak_fp32_flops=100.0,
        peak_fp16_flops=400.0,
        memory_bandwidth_Bps=10.0,
        memory_bytes=1e9,
        active_power_W=10.0,
        idle_power_W=2.0,
        compute_efficiency=0.5,
        memory_efficiency=0.5,
    )
    fields.update(overrides)
    return custom_hardware(**fields)


# ---- catalogue -----------------------------------------------------------------------------
def test_required_rows_present():
    assert set(REQUIRED) <= set(list_hardware())


@pytest.mark.parametrize("name", list_hardware())
def test_every_row_loads_with_sane_units(name):
    hw = get_hardware(name)
    assert hw.name == name and hw.kind in KINDS
    assert hw.source and hw.notes  # every row says where its figures come from
    # Units: FLOP/s between 10 GFLOP/s and 10 PFLOP/s; bandwidth 5 GB/s..10 TB/s; memory
    # 1..200 GB; power below 1 kW. A value in TFLOPS or GB/s (1e12 x too small) fails here.
    for dtype in DTYPES:
        assert 1e10 <= hw.peak_flops(dtype) <= 1e16
    assert 5e9 <= hw.memory_bandwidth_Bps <= 1e13
    assert 1e9 <= hw.memory_bytes <= 2e11
    assert 0 <= hw.idle_power_W <= hw.active_power_W <= 1000
    assert 0 < hw.compute_efficiency <= 1 and 0 < hw.memory_efficiency <= 1
    # Low precision is never slower than fp32 on these devices.
    assert hw.peak_flops("fp16") >= hw.peak_fp32_flops


def test_datasheet_values():
    a100 = get_hardware("a100_80gb")
    assert a100.memory_bandwidth_Bps == pytest.approx(2.039e12)
    assert a100.peak_flops("bf16") == pytest.approx(312e12)
    assert a100.peak_flops("int8") == pytest.approx(624e12)
    assert get_hardware("h100_sxm").peak_flops("bf16") == pytest.approx(9.89e14, rel=1e-3)
    assert get_hardware("h100_pcie").memory_bandwidth_Bps == pytest.approx(2.0e12)
    assert get_hardware("l4").peak_flops("fp16") == pytest.approx(121e12)
    assert get_hardware("rtx_4090").memory_bandwidth_Bps == pytest.approx(1.008e12)
    assert get_hardware("jetson_agx_orin").memory_bandwidth_Bps == pytest.approx(204.8e9)
    assert get_hardware("jetson_orin_nano").peak_flops("int8") == pytest.approx(20e12)
    # LPDDR5X-4800 (9600 MT/s) x 64 bit = 76.8 GB/s (REFERENCE.md section 4).
    assert get_hardware("snapdragon_8_gen3").memory_bandwidth_Bps == pytest.approx(76.8e9)


def test_dtype_fallback_chain():
    pi = get_hardware("raspberry_pi_4")  # fp32 only
    assert pi.peak_fp16_flops is None and pi.peak_int8_ops is None
    for dtype in DTYPES:
        assert pi.peak_flops(dtype) == pi.peak_fp32_flops
    phone = get_hardware("snapdragon_8_gen3")  # no bf16, no int8 -> fp16
    assert phone.peak_flops("bf16") == phone.peak_fp16_flops
    assert phone.peak_flops("int8") == phone.peak_fp16_flops
    hw = toy(peak_fp16_flops=None, peak_bf16_flops=None, peak_int8_ops=None)
    assert hw.peak_flops("bf16") == 100.0


def test_effective_rates():
    hw = toy()
    assert hw.effective_flops("fp16") == 200.0
    assert hw.effective_flops("fp32") == 50.0
    assert hw.effective_bandwidth_Bps == 5.0
    assert hw.ridge_point("fp16") == 40.0


def test_get_hardware_passthrough_and_unknown():
    hw = toy()
    assert get_hardware(hw) is hw
    with pytest.raises(KeyError) as err:
        get_hardware("tpu_v9")
    msg = str(err.value)
    assert "tpu_v9" in msg and "a100_80gb" in msg and "raspberry_pi_4" in msg
    with pytest.raises(TypeError, match="hardware"):
        get_hardware(3)


def test_unknown_dtype():
    hw = get_hardware("l4")
    with pytest.raises(ValueError, match=r"dtype='fp8'.*fp32"):
        hw.peak_flops("fp8")
    with pytest.raises(ValueError, match="dtype='int4'"):
        roofline_latency_s(hw, 1.0, 1.0, dtype="int4")


def test_compute_dtype_for():
    assert [compute_dtype_for(p) for p in DTYPES] == list(DTYPES)
    for quantised in ("int4", "q4_0", "q8_0"):
        assert compute_dtype_for(quantised) == "fp16"
    with pytest.raises(ValueError, match=r"weight_precision='nf3'.*q4_0"):
        compute_dtype_for("nf3")


# ---- roofline --------------------------------------------------------------------------------
def test_roofline_memory_bound():
    out = roofline(toy(), flops=100.0, bytes_moved=50.0, dtype="fp16")
    # compute 100 / (400 * 0.5) = 0.5 s; memory 50 / (10 * 0.5) = 10 s
    assert out["compute_s"] == pytest.approx(0.5)
    assert out["memory_s"] == pytest.approx(10.0)
    assert out["latency_s"] == pytest.approx(10.0)
    assert out["bound"] == "memory"
    assert isinstance(out["latency_s"], float)


def test_roofline_compute_bound_and_dtype_matters():
    out = roofline(toy(), flops=1000.0, bytes_moved=5.0, dtype="fp32")
    # compute 1000 / (100 * 0.5) = 20 s; memory 5 / 5 = 1 s
    assert out["latency_s"] == pytest.approx(20.0)
    assert out["bound"] == "compute"
    assert roofline_latency_s(toy(), 1000.0, 5.0, dtype="fp16") == pytest.approx(5.0)


def test_roofline_real_device_decode():
    # Llama-2-7B-sized decode on an A100: 2*6.7e9 FLOPs, 13.4 GB of fp16 weights.
    hw = get_hardware("a100_80gb")
    out = roofline("a100_80gb", 2 * 6.7e9, 13.4e9, dtype="fp16")
    assert out["bound"] == "memory"
    assert out["latency_s"] == pytest.approx(13.4e9 / (2.039e12 * hw.memory_efficiency))


def test_roofline_vectorised():
    hw = toy()
    flops = np.array([100.0, 1000.0, 0.0])
    nbytes = np.array([50.0, 5.0, 0.0])
    out = roofline(hw, flops, nbytes, dtype="fp32")
    np.testing.assert_allclose(out["latency_s"], [10.0, 20.0, 0.0])
    assert list(out["bound"]) == ["memory", "compute", "memory"]
    lat = roofline_latency_s(hw, flops, nbytes, dtype="fp32")
    np.testing.assert_allclose(lat, out["latency_s"])
    # Broadcasting: a scalar byte count against a column of FLOPs.
    grid = roofline_latency_s(hw, np.array([[50.0], [500.0]]), 5.0, dtype="fp32")
    assert grid.shape == (2, 1)
    np.testing.assert_allclose(grid[:, 0], [1.0, 10.0])


@pytest.mark.parametrize(
    ("flops", "nbytes", "name"),
    [(-1.0, 1.0, "flops"), (1.0, -5.0, "bytes_moved"), (np.array([1.0, np.nan]), 1.0, "flops")],
)
def test_roofline_rejects_bad_values(flops, nbytes, name):
    with pytest.raises(ValueError, match=name):
        roofline(toy(), flops, nbytes)
    with pytest.raises(ValueError, match=name):
        roofline_latency_s(toy(), flops, nbytes)


# ---- energy ----------------------------------------------------------------------------------
def test_energy():
    hw = toy()  # idle 2 W, active 10 W
    assert energy_j(hw, 3.0) == pytest.approx(30.0)
    assert energy_j(hw, 3.0, utilization=0.0) == pytest.approx(6.0)
    assert energy_j(hw, 2.0, utilization=0.5) == pytest.approx(12.0)
    np.testing.assert_allclose(energy_j(hw, np.array([1.0, 2.0]), [1.0, 0.25]), [10.0, 8.0])
    assert energy_j("h100_sxm", 1.0) == pytest.approx(700.0)
    with pytest.raises(ValueError, match="utilization"):
        energy_j(hw, 1.0, utilization=1.5)
    with pytest.raises(ValueError, match="latency_s"):
        energy_j(hw, -1.0)


# ---- custom_hardware / validation ------------------------------------------------------------
def test_custom_hardware_defaults_and_base():
    hw = custom_hardware(
        name="mine",
        peak_fp32_flops=1e11,
        memory_bandwidth_Bps=2e10,
        memory_bytes=8 * 2**30,
        active_power_W=15,
        idle_power_W=3,
    )
    assert hw.kind == "cpu" and hw.compute_efficiency == 1.0 and hw.memory_efficiency == 1.0
    assert hw.peak_flops("int8") == 1e11 and isinstance(hw.active_power_W, float)
    tuned = custom_hardware("l4", name="l4_tuned", memory_efficiency=0.9)
    assert tuned.peak_fp16_flops == get_hardware("l4").peak_fp16_flops
    assert tuned.effective_bandwidth_Bps == pytest.approx(0.9 * 300e9)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"peak_fp32_flops": -1.0}, "peak_fp32_flops"),
        ({"peak_fp16_flops": 0.0}, "peak_fp16_flops"),
        ({"memory_bandwidth_Bps": math.inf}, "memory_bandwidth_Bps"),
        ({"memory_bytes": "8GB"}, "memory_bytes"),
        ({"compute_efficiency": 1.5}, "compute_efficiency"),
        ({"memory_efficiency": 0.0}, "memory_efficiency"),
        ({"idle_power_W": 20.0}, "idle_power_W"),
        ({"active_power_W": -1.0}, "active_power_W"),
        ({"kind": "mainframe"}, "kind"),
        ({"name": ""}, "name"),
        ({"peak_fp32_flops": True}, "peak_fp32_flops"),
    ],
)
def test_custom_hardware_validation_names_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        toy(**overrides)


def test_custom_hardware_unknown_and_missing_fields():
    with pytest.raises(ConfigError, match=r"unknown field.*bandwith"):
        toy(bandwith=1.0)
    with pytest.raises(ConfigError, match="memory_bandwidth_Bps"):
        custom_hardware(name="x", peak_fp32_flops=1.0)


def test_profile_is_frozen():
    hw = get_hardware("l4")
    with pytest.raises(AttributeError):
        hw.memory_bandwidth_Bps = 1.0  # type: ignore[misc]


def test_load_csv_errors(tmp_path: Path):
    good = Path(__file__).parents[1] / "mei_envs" / "data" / "hardware.csv"
    lines = good.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_hardware_csv(dup)
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + "\n" + lines[1].replace("7.68e10", "fast", 1) + "\n")
    with pytest.raises(ConfigError, match="memory_bandwidth_Bps='fast'"):
        load_hardware_csv(bad)
    cols = tmp_path / "cols.csv"
    cols.write_text(lines[0].replace("notes", "remarks") + "\n")
    with pytest.raises(ConfigError, match="notes"):
        load_hardware_csv(cols)


# ---- roofline timing of a layer range (hand computations) -----------------------------------
def test_time_layers_by_hand():
    from mei_envs.hardware import time_layers

    # GPT-2 blocks [0, 2), one new token after 10 cached, LM head for it, fp16 on an L4.
    # FLOPs per block: 2*(2*768*768 + 2*768*768) + 4*1*11*768 + 2*2*768*3072 = 14,189,568;
    # LM head 2*768*50257 = 77,194,752.
    out = time_layers("l4", "gpt2", (0, 2), new_tokens=1, cached_tokens=10, lm_head_tokens=1)
    assert out["flops"] == 2 * 14_189_568 + 77_194_752
    # Bytes: weights 2*7,087,872*2 + head 50257*768*2 + KV 11*(2*768*2 layers*2 B)
    # + hidden in/out 2*768*2 + logits 50257*2.
    want_bytes = 28_351_488 + 77_194_752 + 11 * 6144 + 3072 + 100_514
    assert out["bytes"] == want_bytes
    assert out["latency_s"] == pytest.approx(want_bytes / (300e9 * 0.75), rel=1e-12)
    assert out["bound"] == "memory"
    # Broadcast over cached-token counts.
    many = time_layers("l4", "gpt2", (0, 2), cached_tokens=np.array([10, 100]), lm_head_tokens=1)
    assert many["latency_s"][0] == pytest.approx(out["latency_s"], rel=1e-15)
    assert many["latency_s"][1] > many["latency_s"][0]


def test_time_train_step_full_by_hand():
    from mei_envs.hardware import time_train_step

    # Full fine-tuning of GPT-2 blocks [0, 2), 8 tokens, fp32 weights, SGD, no LM head.
    out = time_train_step(
        "l4",
        "gpt2",
        (0, 2),
        seq_len=8,
        mode="full",
        weight_precision="fp32",
        optimizer="sgd",
    )
    # Forward per block: 2*8*(4*768*768) + 4*8*8*768 + 2*2*8*768*3072 = 113,442,816; x3.
    assert out["flops"] == 3 * 2 * 113_442_816
    fwd = 2 * 7_087_872 * 4 + 8 * 6144 + 2 * 8 * 768 * 2  # weights, KV written, hidden in/out
    stored = 2 * 2 * (12_288 + 12 * 8) * 8 * 2  # activations kept per token, written + read
    backward = 2 * 7_087_872 * 4 + 2 * (2 * 8 * 768 * 2)  # weights again, block grads
    optimizer = 2 * 7_087_872 * (2 * 4 + 2 * 4)  # grad write + read, fp32 param read + write
    assert out["bytes"] == fwd + stored + backward + optimizer
    assert out["latency_s"] == pytest.approx(
        max(out["flops"] / (30.3e12 * 0.7), out["bytes"] / 225e9), rel=1e-12
    )


def test_time_train_step_lora_split():
    from mei_envs.hardware import time_train_step
    from mei_envs.llm import costs

    kw = dict(seq_len=128, batch=2, mode="lora", lora_rank=8, lora_targets=("q", "v"))
    dev = time_train_step("snapdragon_8_gen3", "llama-3.2-1b", (0, 4), **kw)
    srv = time_train_step("l4", "llama-3.2-1b", (4, 16), lm_head=True, **kw)
    want = costs.train_flops(
        "llama-3.2-1b", 128, batch=2, mode="lora", lora_rank=8, layers=(0, 4), lm_head=False
    )
    assert dev["flops"] == want
    # LoRA optimizer traffic: 32 B per adapter parameter (fp32 param, grad, two Adam moments).
    n_ad = costs.lora_params("llama-3.2-1b", 8, ("q", "v"), layers=(0, 4))
    sgd = time_train_step("snapdragon_8_gen3", "llama-3.2-1b", (0, 4), optimizer="sgd", **kw)
    assert dev["bytes"] - sgd["bytes"] == pytest.approx(16.0 * n_ad)
    assert srv["latency_s"] > 0 and dev["latency_s"] > 0
    with pytest.raises(ValueError, match="mode"):
        time_train_step("l4", "gpt2", (0, 2), seq_len=8, mode="qlora")
