"""EdgeLLMCache-v0 step, reset and vector-env cost in CPU instructions (valgrind's callgrind),
with legal actions (the env raises on a masked action by default, so ``instructions.py``'s
uniform random actions cannot drive it).

    python benchmarks/edge_llm_cache_speed.py --what single,reset,vec4,vec256 [--preset P]
    python benchmarks/edge_llm_cache_speed.py --what vec4 --path batched   # force a path
    PYTHONPATH=<other checkout> python benchmarks/edge_llm_cache_speed.py ...   # another tree

Each quantity runs its loop twice under ``valgrind --tool=callgrind`` (``n1`` and ``n2`` steps)
and reports ``(I(n2) - I(n1)) / (n2 - n1)`` (imports and construction cancel), next to
CartPole-v1's count for ``single`` and ``reset`` (uniform random actions, as
``instructions.py``). ``single``: ``gym.make`` steps (default wrappers), resets included;
``reset``: ``reset()`` without a seed; ``vecN``: the native vector env's ``step`` with ``N``
sub-envs, per env-step. The actions are chosen before valgrind starts, by a run of the same
env from the same seed (uniform over the legal actions, generator seeded 0), so the counted
run replays a legal trajectory. Needs ``valgrind``; a minute or more per quantity.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import gymnasium as gym
import numpy as np
from instructions import callgrind_count  # benchmarks/instructions.py (this script's folder)

ENV_ID = "mei_envs/EdgeLLMCache-v0"
REFERENCE_ID = "CartPole-v1"


def _make(env_id: str, what: str, preset: str) -> gym.Env:
    import mei_envs  # noqa: F401  (registers the ids)

    path = os.environ.get("CACHE_VEC_PATH", "auto")
    if path != "auto":  # force one of the vector env's two paths
        from mei_envs.envs import edge_llm_cache_vector

        edge_llm_cache_vector.SCALAR_MAX_ENVS = 0 if path == "batched" else 1 << 30
    kw = {"preset": preset} if env_id == ENV_ID else {}
    if what.startswith("vec"):
        n = int(what[3:])
        return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kw)
    return gym.make(env_id, **kw)


def record_actions(env_id: str, what: str, preset: str, n: int) -> np.ndarray:
    """``n`` legal actions (a batch per step for ``vecN``) of a run seeded 0."""
    env = _make(env_id, what, preset)
    if env_id != ENV_ID:  # CartPole: uniform actions, as instructions.py draws them
        env.action_space.seed(0)
        return np.stack([np.asarray(env.action_space.sample()) for _ in range(n)])
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    out = []
    for _ in range(n):
        if what.startswith("vec"):
            masks = env.unwrapped.action_masks()
            acts = (rng.random(masks.shape) * masks).argmax(1)
            env.step(acts)
        else:
            acts = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
            _, _, term, trunc, _ = env.step(acts)
            if term or trunc:
                env.reset()
        out.append(acts)
    return np.asarray(out)


def loop(env_id: str, what: str, preset: str, n: int, actions_path: str) -> None:
    """The counted loop (runs inside valgrind)."""
    env = _make(env_id, what, preset)
    env.reset(seed=0)
    if what == "reset":
        for _ in range(n):
            env.reset()
        return
    acts = np.load(actions_path)[:n]
    if what.startswith("vec"):
        for a in acts:
            env.step(a)
        return
    for a in acts.tolist():
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()


def count(env_id: str, what: str, preset: str, n: int, actions_path: str) -> int:
    """Instructions of one valgrind run of :func:`loop`."""
    return callgrind_count(__file__, [env_id, what, preset, str(n), actions_path])


def per_unit(env_id: str, what: str, preset: str, n1: int, n2: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "actions.npy")
        np.save(path, record_actions(env_id, what, preset, max(n1, n2)))
        per = (count(env_id, what, preset, n2, path) - count(env_id, what, preset, n1, path)) / (
            n2 - n1
        )
    return per / int(what[3:]) if what.startswith("vec") else per


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inner":
        loop(argv[1], argv[2], argv[3], int(argv[4]), argv[5])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="single,reset,vec4,vec256", help="single, reset, vecN")
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", default="300,1300", help="n1,n2 (vecN: divided by N, >= 5/10)")
    p.add_argument("--no-reference", action="store_true", help="skip CartPole-v1's counts")
    p.add_argument(
        "--path",
        default="auto",
        choices=("auto", "batched", "scalar"),
        help="vecN: the vector env's batched numpy path or one single env per sub-env "
        "(auto: the env's own choice, SCALAR_MAX_ENVS)",
    )
    args = p.parse_args(argv)
    os.environ["CACHE_VEC_PATH"] = args.path  # read by the counted process too
    n1, n2 = (int(x) for x in args.steps.split(","))
    for what in args.what.split(","):
        if what.startswith("vec"):
            k = int(what[3:])
            a, b = max(n1 // k, 5), max(n2 // k, 10)
        else:
            a, b = n1, n2
        v = per_unit(ENV_ID, what, args.preset, a, b)
        tag = f" path={args.path}" if what.startswith("vec") else ""
        line = f"{ENV_ID} preset={args.preset}{tag} {what}: {v:,.0f} instructions per "
        line += "env-step" if what.startswith("vec") else "step" if what == "single" else what
        if what in ("single", "reset") and not args.no_reference:
            ref = per_unit(REFERENCE_ID, what, args.preset, n1, n2)
            line += f"; {REFERENCE_ID} {ref:,.0f} (ratio {ref / v:.3f}: higher is faster)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
