"""Same-process A/B speed of EarlyExitUpload-v1 against an older revision of its modules and
CartPole-v1 (issue 12): single-env steps/s through ``gym.make`` (default wrappers, resets
included), ``reset()`` cost, and native vector env-steps/s, as interleaved repeats timed with
``time.thread_time`` (CPU time of this thread: less sensitive to a shared machine's load than
wall time; ratios within one process are the result).

    git show <rev>:mei_envs/envs/early_exit_upload.py > /tmp/ee_old.py
    git show <rev>:mei_envs/envs/early_exit_upload_vector.py > /tmp/ee_vec_old.py
    OMP_NUM_THREADS=1 python benchmarks/early_exit_ab.py --old /tmp/ee_old.py \\
        --old-vec /tmp/ee_vec_old.py [--preset NAME] [--repeats 5] [--vec 1,16,256]

Without ``--old``/``--old-vec`` only the current tree and CartPole-v1 are timed.

By default every single-env block replays the same actions from ``reset(seed=0)`` (as the
bench does), so EarlyExitUpload's step memo is warm. ``--fresh`` times fresh episodes
instead: each env is seeded once, every block continues where the last one stopped with new
random actions (episodes never repeat; the memo fills as it would in training).
``--cold``: every block steps a new env instance (built outside the timed loop, seeded with
the block's number): the first ``--steps`` steps of an env, memos empty at the start.

``--instr single,reset,vec256`` counts instructions instead (callgrind, as
``benchmarks/instructions.py`` does, but at any ``--preset`` and with ``--info``): ``single``
is steps ``n1..n2`` of a new env (``--instr-steps``, default 500,2500: the step memo mostly
cold), actions from ``action_space.seed(0)`` sampled outside the counted process; ``warm``
the same after 30,000 warm-up steps (memo warm); ``reset`` is ``reset()`` without a seed;
``vecN`` the native vector env per env-step (``n1 / 10 .. n2 / 10`` steps). Each is also
counted for CartPole-v1 unless ``--no-reference``. To count an older tree, run this script
with ``PYTHONPATH`` on an export of it (``git archive <rev> | tar -x -C /tmp/old``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the ids)

ENV_ID = "mei_envs/EarlyExitUpload-v1"
REFERENCE_ID = "CartPole-v1"
WARM_STEPS = 30_000  # --instr warm: steps before the counted ones


def _instr_make(env_id: str, what: str, kwargs: dict[str, Any]) -> Any:
    kw = kwargs if env_id == ENV_ID else {}
    if what.startswith("vec"):
        return gym.make_vec(env_id, int(what[3:]), vectorization_mode="vector_entry_point", **kw)
    return gym.make(env_id, **kw)


def _instr_loop(env_id: str, what: str, n: int, kwargs: dict[str, Any], path: str) -> None:
    """The counted loop (inside valgrind): ``n`` units of ``what`` after the uncounted
    warm-up (the same in both runs, so it cancels)."""
    env = _instr_make(env_id, what, kwargs)
    env.reset(seed=0)
    if what == "reset":
        for _ in range(n):
            env.reset()
        return
    acts = np.load(path)
    skip = WARM_STEPS if what == "warm" else 0
    if what.startswith("vec"):
        for a in acts[:n]:
            env.step(a)
        return
    step, reset = env.step, env.reset
    for a in acts[: skip + n]:
        _, _, term, trunc, _ = step(a)
        if term or trunc:
            reset()


def instructions_per_unit(
    env_id: str, what: str, n1: int, n2: int, kwargs: dict[str, Any]
) -> float:
    """``(I(n2) - I(n1)) / (n2 - n1)`` of :func:`_instr_loop` (per env-step for ``vecN``)."""
    from instructions import callgrind_count  # benchmarks/instructions.py (this folder)

    env = _instr_make(env_id, what, kwargs)
    env.action_space.seed(0)
    skip = WARM_STEPS if what == "warm" else 0
    acts = np.stack([np.asarray(env.action_space.sample()) for _ in range(skip + n2)])
    env.close()
    args = [env_id, what, repr(kwargs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "actions.npy")
        np.save(path, acts)
        c1 = callgrind_count(__file__, [*args, str(n1), path])
        c2 = callgrind_count(__file__, [*args, str(n2), path])
    per = (c2 - c1) / (n2 - n1)
    return per / int(what[3:]) if what.startswith("vec") else per


def instr_main(args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    n1, n2 = (int(x) for x in args.instr_steps.split(","))
    for what in args.instr.split(","):
        a, b = (max(n1 // 10, 5), max(n2 // 10, 10)) if what.startswith("vec") else (n1, n2)
        v = instructions_per_unit(ENV_ID, what, a, b, kwargs)
        line = f"{ENV_ID} {kwargs} {what}: {v:,.0f} instructions"
        if not args.no_reference:
            ref = instructions_per_unit(
                REFERENCE_ID, "single" if what == "warm" else what, a, b, {}
            )
            line += f"; {REFERENCE_ID} {ref:,.0f} (ratio {ref / v:.3f}: higher is faster)"
        print(line, flush=True)
    return 0


def load_module(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--old {path!r}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def single_rate(env: gym.Env, actions: list[int], fresh: bool = False) -> float:
    """Steps per CPU second replaying ``actions`` from ``reset(seed=0)`` (resets included);
    ``fresh``: from where the env stands (seeded once, see ``--fresh``)."""
    if not fresh or not getattr(env, "_ab_started", False):
        env.reset(seed=0)
        env._ab_started = True
    step, reset = env.step, env.reset
    t0 = time.thread_time()
    for a in actions:
        _, _, term, trunc, _ = step(a)
        if term or trunc:
            reset()
    return len(actions) / (time.thread_time() - t0)


def reset_us(env: gym.Env, n: int) -> float:
    reset = env.reset
    t0 = time.thread_time()
    for _ in range(n):
        reset()
    return 1e6 * (time.thread_time() - t0) / n


def vector_rate(env: Any, actions: list[np.ndarray]) -> float:
    env.reset(seed=0)
    step = env.step
    t0 = time.thread_time()
    for a in actions:
        step(a)
    return env.num_envs * len(actions) / (time.thread_time() - t0)


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each callable once per repeat, the order reversed every other repeat (after a warm-up)."""
    names = list(runs)
    for name in names:
        runs[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(runs[name]())
    return out


def report(title: str, res: dict[str, list[float]], unit: str, ref: str) -> None:
    for name, vals in res.items():
        ratio = statistics.median(a / b for a, b in zip(vals, res[ref], strict=True))
        print(
            f"{title:8s} {name:10s} {statistics.median(vals):12,.1f} {unit}  x {ref}: {ratio:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inner":  # inside valgrind (--instr)
        import ast

        env_id, what, kw, n, path = argv[1:6]
        _instr_loop(env_id, what, int(n), ast.literal_eval(kw), path)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", help="an older early_exit_upload.py to time against")
    p.add_argument("--old-vec", help="an older early_exit_upload_vector.py")
    p.add_argument("--preset", default="default")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=60_000, help="single-env steps per block")
    p.add_argument("--vec", default="256", help="comma-separated vector sizes ('' for none)")
    p.add_argument("--vec-steps", type=int, default=60_000, help="env-steps per vector block")
    p.add_argument(
        "--fresh", action="store_true", help="single env: fresh episodes (see the docstring)"
    )
    p.add_argument("--cold", action="store_true", help="single env: a new env every block")
    p.add_argument("--instr", default=None, help="count instructions: single,warm,reset,vecN")
    p.add_argument("--instr-steps", default="500,2500", help="--instr: n1,n2")
    p.add_argument("--info", default=None, help="the env's info level (full, lean)")
    p.add_argument("--no-reference", action="store_true", help="--instr: skip CartPole-v1")
    args = p.parse_args(argv)
    kwargs: dict[str, Any] = {"preset": args.preset}
    if args.info:
        kwargs["info"] = args.info
    if args.instr:
        return instr_main(args, kwargs)
    envs = {"new": gym.make(ENV_ID, **kwargs)}
    if args.old:
        old = load_module(args.old, "_ee_old")
        gym.register("perfee_ab/EarlyExitUploadOld-v1", entry_point=old.EarlyExitUploadEnv)
        envs["old"] = gym.make("perfee_ab/EarlyExitUploadOld-v1", **kwargs)
    envs["cartpole"] = gym.make(REFERENCE_ID)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2, args.steps).tolist()
    if args.cold:  # a new env for every block, built outside the timed loop
        blocks = iter(range(1, 1_000_000))

        def run(e: gym.Env) -> float:
            env = gym.make(e.spec)
            env.reset(seed=next(blocks))
            env._ab_started = True
            return single_rate(env, rng.integers(0, 2, args.steps).tolist(), fresh=True)

    elif args.fresh:  # new actions for every block (drawn outside the timed loop)

        def run(e: gym.Env) -> float:
            return single_rate(e, rng.integers(0, 2, args.steps).tolist(), fresh=True)

    else:

        def run(e: gym.Env) -> float:
            return single_rate(e, acts)

    res = interleaved({k: (lambda e=e: run(e)) for k, e in envs.items()}, args.repeats)
    report("step", res, "steps/s", "cartpole")
    if args.old:
        report("step", res, "steps/s", "old")
    res_r = interleaved(
        {k: (lambda e=e: reset_us(e, 20_000)) for k, e in envs.items()}, args.repeats
    )
    report("reset", res_r, "us     ", "cartpole")
    if args.old:
        report("reset", res_r, "us     ", "old")
    single_new = statistics.median(res["new"])
    for n in [int(x) for x in args.vec.split(",") if x]:
        vecs = {"new": gym.make_vec(ENV_ID, n, vectorization_mode="vector_entry_point", **kwargs)}
        if args.old_vec:
            oldv = load_module(args.old_vec, "_ee_vec_old")
            vecs["old"] = oldv.EarlyExitUploadVectorEnv(n, **kwargs)
        vecs["cartpole"] = gym.make_vec(REFERENCE_ID, n, vectorization_mode="vector_entry_point")
        va = [rng.integers(0, 2, n) for _ in range(max(50, args.vec_steps // n))]
        res_v = interleaved(
            {k: (lambda e=e, va=va: vector_rate(e, va)) for k, e in vecs.items()}, args.repeats
        )
        report(f"vec{n}", res_v, "env-steps/s", "cartpole")
        if args.old_vec:
            report(f"vec{n}", res_v, "env-steps/s", "old")
        print(f"vec{n}    new / new single: {statistics.median(res_v['new']) / single_new:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
