"""Single-env steps/s relative to CartPole-v1 in the same run: an alias of

    python benchmarks/bench.py --parts single [--quick] [--env ID] [--preset default]

kept for the commands quoted in earlier notes. ``mei-envs bench`` (``mei_envs.bench``)
measures it: recorded legal actions replayed from the same seed (no policy in the timed
loop), ``gym.make`` with default wrappers, resets included, medians of interleaved repeats.
Writes benchmarks/results/bench.json and bench.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mei_envs.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--steps" in argv:  # the old option: budgets are now time-based
        sys.exit("env_speed.py: --steps is gone; use --quick for tiny budgets (see bench.py)")
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(RESULTS)]
    if not any(a == "--parts" or a.startswith("--parts=") for a in argv):
        argv += ["--parts", "single"]
    sys.exit(main(["bench", *argv]))
