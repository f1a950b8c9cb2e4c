"""Benchmark every registered env against CartPole-v1: ``mei-envs bench`` with its results
written to ``benchmarks/results/`` (``bench.json``, ``bench.md``) unless ``--out`` is given.

    python benchmarks/bench.py                 # full run (~10 min on 2 shared cores)
    python benchmarks/bench.py --quick         # tiny budgets (seconds; noisy)
    python benchmarks/bench.py --env mei_envs/EarlyExitUpload-v1 --parts single,vector
    python benchmarks/bench.py --ppo           # also PPO env-steps/s (torch + SB3)

Every option is ``mei-envs bench``'s (``--help``); see benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mei_envs.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(RESULTS)]
    sys.exit(main(["bench", *argv]))
