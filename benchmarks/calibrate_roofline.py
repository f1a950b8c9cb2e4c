"""Calibrate the roofline model of ``mei_envs.hardware`` against this machine's CPU.

Measures (torch, fp32, CPU):
1. matmul peak: ``torch.matmul`` on large square matrices, best of several runs;
2. memory bandwidth: ``sum`` (read) and ``copy_`` (read + write) of a 512 MiB tensor, best
   of several runs (decode reads weights, so the read bandwidth goes into the profile);
3. one GPT-2 124M decode step (random weights from ``GPT2Config()``, eager attention, batch 1,
   one new token on a KV cache of 128 tokens), median of repeats.

It then builds a ``custom_hardware`` profile from the measured peak and read bandwidth
(efficiencies 1), predicts the decode step with ``roofline`` (FLOPs from the REFERENCE.md
section 2 formula, bytes = fp32 weights + KV cache read) and writes the measured/roofline
ratio to ``benchmarks/results/roofline_calibration.json``.

Run: ``python benchmarks/calibrate_roofline.py`` (about a minute on 2 cores; no downloads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "roofline_calibration.json"

# GPT-2 124M (REFERENCE.md section 3): L, h, heads, d_head, FFN, V; tied embeddings.
GPT2 = {"L": 12, "h": 768, "n_heads": 12, "n_kv_heads": 12, "d_head": 64, "f": 3072, "V": 50257}
GPT2_PARAMS = 124_439_808  # exact (REFERENCE.md section 3)
CACHED_TOKENS = 128
BYTES_FP32 = 4


def decode_flops(arch: dict[str, int], cached: int, new: int = 1, batch: int = 1) -> int:
    """Forward FLOPs of ``new`` tokens on ``cached`` ones (REFERENCE.md section 2).

    Per layer ``2*b*s*(2*h*q + 2*h*k) + 4*b*s*(c+s)*q + 2*m*b*s*h*f`` with m = 2 (GELU FFN),
    plus the LM head ``2*b*s*h*V`` (logits for every new token).
    """
    h, f, L, V = arch["h"], arch["f"], arch["L"], arch["V"]
    q = arch["n_heads"] * arch["d_head"]
    k = arch["n_kv_heads"] * arch["d_head"]
    b, s, c, m = batch, new, cached, 2
    per_layer = (
        2 * b * s * (2 * h * q + 2 * h * k) + 4 * b * s * (c + s) * q + 2 * m * b * s * h * f
    )
    return L * per_layer + 2 * b * s * h * V


def decode_bytes(arch: dict[str, int], params: int, cached: int, bytes_per: int) -> int:
    """fp32 weights read once plus the K and V cache read: ``2*L*n_kv*d_head*c*bytes``."""
    kv_read = 2 * arch["L"] * arch["n_kv_heads"] * arch["d_head"] * cached * bytes_per
    return params * bytes_per + kv_read


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best_time_s(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_matmul(torch, sizes: list[int], repeats: int) -> dict:
    runs = {}
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        out = torch.empty(n, n)
        times = best_time_s(lambda a=a, b=b, out=out: torch.matmul(a, b, out=out), repeats)
        flops = 2.0 * n**3
        runs[str(n)] = {"times_s": times, "best_flops_per_s": flops / min(times)}
        best = max(best, flops / min(times))
    return {"sizes": sizes, "runs": runs, "peak_fp32_flops": best}


def measure_bandwidth(torch, mib: int, repeats: int) -> dict:
    n = mib * 2**20 // BYTES_FP32
    x = torch.rand(n)
    y = torch.empty(n)
    nbytes = n * BYTES_FP32
    sum_times = best_time_s(lambda: x.sum(), repeats)
    copy_times = best_time_s(lambda: y.copy_(x), repeats)
    return {
        "tensor_bytes": nbytes,
        "sum_times_s": sum_times,
        "copy_times_s": copy_times,
        # sum reads the tensor once; copy reads one and writes one (write-allocate not counted).
        "read_Bps": nbytes / min(sum_times),
        "copy_Bps": 2 * nbytes / min(copy_times),
    }


def measure_decode(torch, repeats: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    cfg = GPT2Config()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    prompt = torch.randint(0, cfg.vocab_size, (1, CACHED_TOKENS))
    token = torch.randint(0, cfg.vocab_size, (1, 1))
    with torch.no_grad():
        cache = model(prompt, use_cache=True).past_key_values

        def step():
            model(token, past_key_values=cache, use_cache=True)
            # Drop the token just appended so every repeat sees c = 128 (negative = remove n
            # tokens, in transformers 4.x and 5.x alike).
            cache.crop(-1)

        times = best_time_s(step, repeats, warmup=3)
        with torch.profiler.profile() as prof:
            for _ in range(5):
                step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        top_ops = {e.key: e.self_cpu_time_total / 5 / 1e6 for e in events}  # [s per step]
        with FlopCounterMode(display=False) as counter:
            model(token, past_key_values=cache, use_cache=True)
        cache.crop(-1)
        seq_len_after = cache.get_seq_length()
    return {
        "model": "gpt2 (GPT2Config(), random weights, eager attention, fp32)",
        "build_s": build_s,
        "params": params,
        "cached_tokens": CACHED_TOKENS,
        "cache_len_checked": seq_len_after,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "flop_counter_flops": int(counter.get_total_flops()),
        "profiler_self_cpu_s_per_step": top_ops,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="decode-step repeats")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import transformers

    from mei_envs.hardware import custom_hardware, roofline

    t_start = time.perf_counter()
    matmul = measure_matmul(torch, sizes=[2048, 3072], repeats=5)
    bandwidth = measure_bandwidth(torch, mib=512, repeats=10)
    decode = measure_decode(torch, repeats=args.repeats)

    own_flops = decode_flops(GPT2, CACHED_TOKENS)
    own_bytes = decode_bytes(GPT2, decode["params"], CACHED_TOKENS, BYTES_FP32)
    try:  # prefer the shared LLM cost model (mei_envs.llm.costs) when it is available
        from mei_envs.llm import costs

        flops = float(costs.forward_flops("gpt2", 1, CACHED_TOKENS, lm_head_tokens=1))
        fp32 = {"weight_precision": "fp32", "kv_precision": "fp32", "act_precision": "fp32"}
        bytes_moved = float(costs.forward_bytes("gpt2", 1, CACHED_TOKENS, lm_head_tokens=1, **fp32))
        cost_source = "mei_envs.llm.costs.forward_flops / forward_bytes (fp32)"
    except ImportError as exc:
        flops, bytes_moved = float(own_flops), float(own_bytes)
        cost_source = f"benchmark formula (mei_envs.llm.costs unavailable: {exc})"

    mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    hw = custom_hardware(
        name="this_cpu",
        kind="cpu",
        peak_fp32_flops=matmul["peak_fp32_flops"],
        memory_bandwidth_Bps=bandwidth["read_Bps"],
        memory_bytes=mem_bytes,
        active_power_W=0.0,  # not measured: energy is not calibrated here
        idle_power_W=0.0,
        compute_efficiency=1.0,
        memory_efficiency=1.0,
        source="benchmarks/calibrate_roofline.py measurements",
    )
    pred = roofline(hw, flops, bytes_moved, dtype="fp32")
    pred_copy_bw = max(flops / hw.peak_fp32_flops, bytes_moved / bandwidth["copy_Bps"])
    measured = decode["median_s"]
    result = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "memory_bytes": mem_bytes,
            "platform": platform.platform(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "matmul_fp32": matmul,
        "bandwidth": bandwidth,
        "decode_step": decode,
        "model_costs": {
            "source": cost_source,
            "flops": flops,
            "bytes_moved": bytes_moved,
            "formula_flops": own_flops,
            "formula_bytes": own_bytes,
            "formula_bytes_note": "all fp32 parameters (tied embedding once) + KV read of c",
            "flop_counter_over_flops": decode["flop_counter_flops"] / flops,
        },
        "profile": hw.to_dict(),
        "roofline": {k: (v if isinstance(v, str) else float(v)) for k, v in pred.items()},
        "measured_over_roofline": measured / pred["latency_s"],
        "measured_over_roofline_min": decode["min_s"] / pred["latency_s"],
        "measured_over_roofline_copy_bw": measured / pred_copy_bw,
        "achieved_read_bandwidth_Bps": bytes_moved / measured,
        "runtime_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"CPU: {result['machine']['cpu_model']} ({torch.get_num_threads()} torch threads)")
    print(f"matmul fp32 peak      : {matmul['peak_fp32_flops'] / 1e9:8.1f} GFLOP/s")
    print(f"read bandwidth (sum)  : {bandwidth['read_Bps'] / 1e9:8.2f} GB/s")
    print(f"copy bandwidth        : {bandwidth['copy_Bps'] / 1e9:8.2f} GB/s")
    print(
        f"decode FLOPs          : {flops / 1e6:8.1f} MFLOP "
        f"(FlopCounterMode / model = {result['model_costs']['flop_counter_over_flops']:.4f})"
    )
    print(f"decode bytes          : {bytes_moved / 1e6:8.1f} MB ({cost_source})")
    print(
        f"roofline              : {pred['latency_s'] * 1e3:8.2f} ms ({pred['bound']}-bound; "
        f"compute {pred['compute_s'] * 1e3:.2f} ms, memory {pred['memory_s'] * 1e3:.2f} ms)"
    )
    print(f"measured decode median: {measured * 1e3:8.2f} ms (min {decode['min_s'] * 1e3:.2f})")
    print(f"measured / roofline   : {result['measured_over_roofline']:8.3f}")
    print(f"achieved bandwidth    : {result['achieved_read_bandwidth_Bps'] / 1e9:8.2f} GB/s")
    top = ", ".join(
        f"{k} {v * 1e3:.1f} ms" for k, v in list(decode["profiler_self_cpu_s_per_step"].items())[:4]
    )
    print(f"top ops per step      : {top}")
    print(f"runtime               : {result['runtime_s']:8.1f} s -> {args.out}")
    return result


if __name__ == "__main__":
    main()
