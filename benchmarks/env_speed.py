"""Benchmark: env steps per second relative to CartPole-v1, measured in the same run.

    python benchmarks/env_speed.py [--steps N]

Writes benchmarks/results/env_speed.json. Ratios, not absolute times, are the result: this
machine's speed varies from run to run, while both envs share the noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym

import mei_envs


def steps_per_second(env_id: str, steps: int, repeats: int = 5) -> tuple[float, float]:
    """Best-of-``repeats`` steps/s with a fixed action (policy cost excluded), and the
    mean number of tokens/requests each step processes when the env reports it."""
    env = gym.make(env_id).unwrapped
    best = 0.0
    for r in range(repeats):
        env.reset(seed=r)
        n, t0 = 0, time.perf_counter()
        while n < steps:
            _, _, term, trunc, _ = env.step(1)
            n += 1
            if term or trunc:
                env.reset()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20_000)
    args = ap.parse_args()
    base = steps_per_second("CartPole-v1", args.steps)
    out = {
        "cartpole_steps_per_s": base,
        "envs": {},
        "host": platform.processor() or platform.machine(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for env_id in mei_envs.ENV_IDS:
        sps = steps_per_second(env_id, args.steps)
        out["envs"][env_id] = {
            "steps_per_s": sps,
            "us_per_step": 1e6 / sps,
            "ratio_to_cartpole": sps / base,
        }
        print(
            f"{env_id:40s} {sps:10.0f} steps/s  {1e6 / sps:7.1f} us/step  "
            f"{sps / base:.3f} x CartPole-v1 ({base:.0f} steps/s)"
        )
    path = Path(__file__).parent / "results" / "env_speed.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
