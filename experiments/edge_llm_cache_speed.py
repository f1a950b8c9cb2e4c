"""Steps per second of EdgeLLMCache-v0 against CartPole-v1, measured in one process.

    python -m mei_envs.experiments.edge_llm_cache_speed [--steps 20000] [--preset default]

Both envs are built with ``gym.make`` (so Gymnasium's wrappers are included) and stepped
for ``--steps`` steps, best of 5 repeats. CartPole takes a fixed action; EdgeLLMCache is
timed with two action rules: always bypass (the cheapest legal action) and a uniformly
random legal action read from ``info["action_mask"]`` (the mask sampling is included).
Each EdgeLLMCache step serves several requests (hits and misses that fit are
fast-forwarded); requests/s is reported too. Ratios, not absolute times, are the result.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the envs)

ENV_ID = "mei_envs/EdgeLLMCache-v0"


def _cartpole(steps: int) -> float:
    env = gym.make("CartPole-v1")
    best = 0.0
    for r in range(5):
        env.reset(seed=r)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(1)
            if term or trunc:
                env.reset()
        best = max(best, steps / (time.perf_counter() - t0))
    return best


def _cache(steps: int, preset: str, rule: str) -> tuple[float, float]:
    env = gym.make(ENV_ID, preset=preset)
    bypass = env.unwrapped.bypass_action
    rng = np.random.default_rng(0)
    best, best_req = 0.0, 0.0
    for r in range(5):
        _, info = env.reset(seed=r)
        served = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            if rule == "bypass":
                a = bypass
            else:
                legal = np.flatnonzero(info["action_mask"])
                a = int(legal[rng.integers(legal.size)])
            _, _, term, trunc, info = env.step(a)
            served += info["requests"]
            if term or trunc:
                _, info = env.reset()
        dt = time.perf_counter() - t0
        if steps / dt > best:
            best, best_req = steps / dt, served / dt
    return best, best_req


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = _cartpole(args.steps)
    out: dict = {"cartpole_steps_per_s": base, "preset": args.preset}
    for rule in ("bypass", "random_legal"):
        sps, rps = _cache(args.steps, args.preset, rule)
        out[rule] = {"steps_per_s": sps, "requests_per_s": rps, "ratio_to_cartpole": sps / base}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"CartPole-v1: {base:.0f} steps/s")
        for rule in ("bypass", "random_legal"):
            r = out[rule]
            print(
                f"EdgeLLMCache-v0 ({args.preset}, {rule}): {r['steps_per_s']:.0f} steps/s "
                f"({r['requests_per_s']:.0f} requests/s), {r['ratio_to_cartpole']:.3f} x CartPole"
            )
    return out


if __name__ == "__main__":
    main()
