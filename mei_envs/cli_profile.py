"""``mei-envs profile ...``: list catalog models, show cost tables, (re)generate profiles.

``mei_envs.cli`` calls :func:`add_profile_parser` on its subparsers and dispatches with
``args.func(args)``; every handler returns a process exit code (0 ok, 1 failure, 2 bad
input such as an unknown model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mei_envs.cli import guarded
from mei_envs.llm.catalog import get_architecture, list_models
from mei_envs.llm.costs import cost_table, total_params


def add_profile_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``profile`` command (with list/show/generate/check) to ``subparsers``."""
    parser = subparsers.add_parser(
        "profile",
        help="LLM cost model: catalog, per-layer cost tables, measured FLOP profiles",
        description="LLM cost model: catalog, per-layer cost tables, measured FLOP profiles.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="profile_command", metavar="{list,show,generate,check}")

    p_list = sub.add_parser("list", help="catalog models with parameter counts")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    p_list.set_defaults(func=guarded("profile list", cmd_list))

    p_show = sub.add_parser("show", help="cost table of one model (per layer and cut)")
    p_show.add_argument("model", help="catalog name or path to an architecture JSON file")
    p_show.add_argument("--json", action="store_true", help="print JSON")
    p_show.add_argument("--seq-len", type=int, default=128, help="prompt tokens [tokens]")
    p_show.add_argument("--cached", type=int, default=128, help="KV-cache tokens for decode")
    p_show.add_argument("--lora-rank", type=int, default=8, help="LoRA rank for memory rows")
    p_show.set_defaults(func=guarded("profile show", cmd_show))

    p_gen = sub.add_parser(
        "generate", help="measure FLOPs with torch FlopCounterMode and write profiles"
    )
    p_gen.add_argument("--models", nargs="+", default=None, help="default: whole catalog")
    p_gen.add_argument("--out", default=None, help="output dir (default: data/profiles)")
    p_gen.set_defaults(func=guarded("profile generate", cmd_generate))

    p_check = sub.add_parser("check", help="compare shipped profiles with the formulas")
    p_check.set_defaults(func=guarded("profile check", cmd_check))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ---- handlers ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models():
        a = get_architecture(name)
        rows.append(
            {
                "name": name,
                "family": a.family,
                "n_layers": a.n_layers,
                "d_model": a.d_model,
                "params": total_params(a),
                "published_params": a.published_params,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<18} {'family':<10} {'L':>3} {'h':>5} {'params':>15}")
    for r in rows:
        print(
            f"{r['name']:<18} {r['family']:<10} {r['n_layers']:>3} {r['d_model']:>5} "
            f"{r['params']:>15,}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    arch = get_architecture(args.model)
    table = cost_table(
        arch, seq_len=args.seq_len, cached_tokens=args.cached, lora_rank=args.lora_rank
    )
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    _print_table(table)
    return 0


def _print_table(table: dict[str, Any]) -> None:
    s = table["summary"]
    p = s["params"]
    mib = 2.0**20
    print(f"{s['name']} ({s['family']}): {p['total']:,} parameters; source {s['source']}")
    print(
        f"  L={s['n_layers']} h={s['d_model']} heads={s['n_heads']}/{s['n_kv_heads']} "
        f"d_head={s['head_dim']} ffn={s['d_ff']} V={s['vocab_size']}"
    )
    print(
        f"  embedding {p['embedding']:,}  positions {p['position_embedding']:,}  "
        f"per layer {p['per_layer']:,}  lm_head {p['lm_head']:,}"
    )
    print(
        f"  prefill {s['seq_len']} tok: {s['prefill_flops'] / 1e9:,.2f} GFLOP   "
        f"decode @ {s['cached_tokens']} cached: {s['decode_flops'] / 1e9:,.3f} GFLOP"
    )
    print(
        f"  train step {s['seq_len']} tok: full {s['train_flops_full'] / 1e9:,.1f} GFLOP, "
        f"LoRA q,v r={s['lora_rank']} {s['train_flops_lora_qv'] / 1e9:,.1f} GFLOP"
    )
    print(
        f"  LoRA params r={s['lora_rank']}: q,v {s['lora_params_qv']:,}; "
        f"all linear {s['lora_params_all_linear']:,}"
    )
    wb = "  ".join(f"{k} {v / mib:,.1f}" for k, v in s["weight_bytes"].items())
    print(f"  weights [MiB]: {wb}")
    print(
        f"  KV cache {s['kv_bytes_per_token_fp16']:,.0f} B/token fp16; "
        f"hidden state {s['hidden_state_bytes_per_token_fp16']:,.0f} B/token fp16"
    )
    head = (
        f"{'layer':>5} {'params':>12} {'prefill MF':>11} {'decode MF':>10} {'fp16 MiB':>9} "
        f"{'q4_0 MiB':>9} {'KV B/tok':>9} {'cut':>4} {'dev GFLOP':>10} {'inf MiB':>9} "
        f"{'LoRA MiB':>9}"
    )
    print(head)
    for r in table["layers"]:
        print(
            f"{r['layer']:>5} {r['params']:>12,} {r['prefill_flops'] / 1e6:>11,.1f} "
            f"{r['decode_flops'] / 1e6:>10,.2f} {r['weight_bytes']['fp16'] / mib:>9,.2f} "
            f"{r['weight_bytes']['q4_0'] / mib:>9,.2f} {r['kv_bytes_per_token_fp16']:>9,.0f} "
            f"{r['cut']:>4} {r['device_prefill_flops'] / 1e9:>10,.2f} "
            f"{r['device_memory_inference'] / mib:>9,.1f} {r['device_memory_lora'] / mib:>9,.1f}"
        )
    print(
        "  (MF = MFLOP of that layer; cut = device holds layers [0, cut) incl. embedding; "
        f"dev GFLOP = device prefill; memory at {s['seq_len']} tokens)"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    if args.models:
        known = list_models()
        bad = [m for m in args.models if m not in known]
        if bad:
            raise ValueError(f"--models: unknown model(s) {bad}; known models: {known}")
    from mei_envs.llm.profile import generate_profiles

    t0 = time.perf_counter()
    cmd = "mei-envs profile generate" + (
        " --models " + " ".join(args.models) if args.models else ""
    )
    try:
        paths = generate_profiles(args.models, args.out, command=cmd)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        doc = json.loads(path.read_text())
        print(f"{path}  max rel error {doc['max_rel_error']:.2e}")
    print(f"{len(paths)} profiles in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from mei_envs.llm.profile import check_profiles_current

    report = check_profiles_current()
    bad = {k: v for k, v in report.items() if v}
    for name, problems in report.items():
        print(f"{name:<18} {'ok' if not problems else '; '.join(problems)}")
    return 1 if bad else 0
