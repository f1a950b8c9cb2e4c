"""CPU instructions per env step, counted by valgrind's callgrind: a measure that does not move
with the machine's load (wall-clock ratios on a shared 2-core machine do, by 2x or more).
Each quantity is also counted for CartPole-v1 the same way (its vector env for ``vecN``).

    python benchmarks/instructions.py                      # SplitFedAlloc-v0 vs CartPole-v1
    python benchmarks/instructions.py --env mei_envs/EarlyExitUpload-v1 --what single,reset
    PYTHONPATH=<other checkout> python benchmarks/instructions.py   # the same on another tree

Each quantity runs the loop twice under ``valgrind --tool=callgrind`` (``n1`` and ``n2`` steps,
same seed) and reports ``(I(n2) - I(n1)) / (n2 - n1)``: imports and construction cancel.
``single``: ``gym.make`` steps (default wrappers, default config, uniform random actions from
a fixed generator, resets included); ``reset``: ``reset()`` without a seed; ``vecN``: native
vector env steps of N sub-envs, reported per env-step. Needs ``valgrind`` on the PATH; slow
(a minute or more per quantity).

The actions are sampled before valgrind starts (``action_space.seed(0)``, then
``action_space.sample()`` per step, as before) and handed to the counted process as one
stacked ``.npy`` array, which it iterates (an ``np.int64`` per step for a ``Discrete`` space,
as ``sample()`` returns; a row view for a ``Box`` or a vector env's batch). Until session 7
the counted process sampled them itself, which added the sampler's cost to every step:
about 170k instructions per step for a ``Box`` action space (SplitFedAlloc), about 16k for
``Discrete(2)`` (EarlyExitUpload, CartPole-v1: 76.5k -> 60.6k).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import gymnasium as gym
import numpy as np

REFERENCE_ID = "CartPole-v1"


def sample_actions(env_id: str, what: str, n: int) -> np.ndarray:
    """``n`` actions stacked in one array: ``action_space.seed(0)``, then ``sample()`` per step
    (a vector env's batched space for ``vecN``); made outside the counted process."""
    import mei_envs  # noqa: F401  (registers the ids)

    if what.startswith("vec"):
        env = gym.make_vec(env_id, num_envs=int(what[3:]), vectorization_mode="vector_entry_point")
    else:
        env = gym.make(env_id)
    env.action_space.seed(0)
    acts = np.stack([np.asarray(env.action_space.sample()) for _ in range(n)])
    env.close()
    return acts


def loop(env_id: str, what: str, n: int, actions_path: str) -> None:
    """The measured loop (runs inside valgrind); ``actions_path``: the ``.npy`` of
    :func:`sample_actions` (unused for ``reset``)."""
    import mei_envs  # noqa: F401  (registers the ids)

    if what.startswith("vec"):
        num = int(what[3:])
        env = gym.make_vec(env_id, num_envs=num, vectorization_mode="vector_entry_point")
        acts = np.load(actions_path)[:n]
        env.reset(seed=0)
        for a in acts:
            env.step(a)
        return
    env = gym.make(env_id)
    env.reset(seed=0)
    if what == "reset":
        for _ in range(n):
            env.reset()
        return
    acts = np.load(actions_path)[:n]
    for a in acts:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()


def callgrind_count(script: str, args: list[str]) -> int:
    """Instructions of one valgrind (callgrind) run of ``python script --inner *args``;
    shared with the other instruction-count scripts in this folder."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(script),
        "--inner",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(match.group(1))


def count(env_id: str, what: str, n: int, actions_path: str) -> int:
    """Instructions of one valgrind run of :func:`loop`."""
    return callgrind_count(__file__, [env_id, what, str(n), actions_path])


def per_unit(env_id: str, what: str, n1: int, n2: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "actions.npy")
        np.save(path, sample_actions(env_id, what, max(n1, n2)))
        per = (count(env_id, what, n2, path) - count(env_id, what, n1, path)) / (n2 - n1)
    return per / int(what[3:]) if what.startswith("vec") else per


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inner":
        loop(argv[1], argv[2], int(argv[3]), argv[4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="mei_envs/SplitFedAlloc-v0")
    p.add_argument("--what", default="single,reset,vec256", help="single, reset, vecN")
    p.add_argument("--steps", default="500,2500", help="n1,n2 (vector: divided by 10)")
    args = p.parse_args(argv)
    n1, n2 = (int(x) for x in args.steps.split(","))
    for what in args.what.split(","):
        a, b = (max(n1 // 10, 5), max(n2 // 10, 10)) if what.startswith("vec") else (n1, n2)
        unit = "env-step" if what.startswith("vec") else "step" if what == "single" else what
        v = per_unit(args.env, what, a, b)
        ref = per_unit(REFERENCE_ID, what, a, b)
        print(
            f"{args.env} {what}: {v:,.0f} instructions/{unit}; {REFERENCE_ID} {ref:,.0f} "
            f"(ratio {ref / v:.3f}: higher is faster)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
