"""Where PPO training time goes, per env: rollout collection (policy forward, the vec env's
step split into the env's own step and the adapter/wrappers around it, buffer) and updates.

    python benchmarks/ppo_profile.py                      # all three envs and CartPole-v1
    python benchmarks/ppo_profile.py --env mei_envs/EdgeLLMCache-v0 --algo maskable_ppo
    python benchmarks/ppo_profile.py --mode timers        # no cProfile: wall-clock timers only
    python benchmarks/ppo_profile.py --mode vecstep --n-envs 8 --old-adapter /tmp/vector_old.py

The settings are ``mei-envs bench --ppo``'s (4 envs, n_steps 256, batch 64, 10 epochs,
4,096 steps, MlpPolicy's default net); the vec env is what ``mei-envs train`` builds
(``vec_env="auto"``: the native vector env through the SB3 adapter where registered, else
``DummyVecEnv``). Three modes:

* ``timers`` (default): the learn call is timed with wall-clock timers around
  ``collect_rollouts``, ``train``, the vec env's ``step_wait`` and the native vector env's (or
  each single env's) ``step``; the profiler's own overhead is absent, so these are the shares
  to quote.
* ``cprofile``: ``cProfile`` over ``model.learn`` and the cumulative times of the functions
  in :data:`PARTS` (Python-heavy code is slowed more than torch kernels by the profiler, so
  use it for where the time goes inside a part, the timers for the shares).
* ``vecstep``: CPU time per env-step of the vec env alone (no policy): SB3's
  ``step_async``/``step_wait`` with pre-drawn random actions, for each path PPO could step:
  ``raw`` (the native vector env's ``step``, no adapter), ``native`` (the adapter as
  ``mei-envs train`` builds it, ``step_info=False``), ``native_step_info`` (the adapter with
  every step's info keys, ``step_info=True``), ``dummy`` and ``dummy_lean``
  (``DummyVecEnv`` over monitored single envs, ``info`` full / lean), and CartPole-v1's
  ``dummy``; with ``--old-adapter FILE`` (``git show <rev>:agents/vector.py > FILE``) also
  ``native_old``, that revision's adapter. All paths live in one process and are timed in
  short blocks (``--block`` steps), interleaved in rotating order, ``--rounds`` times;
  medians (``time.process_time``, so waiting for a core does not count). It also reports
  each adapter path's own cost per ``step_wait`` call, ``(path - raw) * n_envs``.

Prints one JSON object per env (``--out FILE`` also writes them as a list).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch as th

# (label, file suffix, function name): cumulative times pulled out of the profile.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("learn", "on_policy_algorithm.py", "learn"),
    ("collect_rollouts", "on_policy_algorithm.py", "collect_rollouts"),
    ("collect_rollouts (maskable)", "sb3_contrib/ppo_mask/ppo_mask.py", "collect_rollouts"),
    ("train (updates)", "ppo/ppo.py", "train"),
    ("train (maskable updates)", "sb3_contrib/ppo_mask/ppo_mask.py", "train"),
    ("policy forward", "stable_baselines3/common/policies.py", "forward"),
    ("maskable policy forward", "sb3_contrib/common/maskable/policies.py", "forward"),
    ("predict_values", "stable_baselines3/common/policies.py", "predict_values"),
    ("obs_as_tensor", "stable_baselines3/common/utils.py", "obs_as_tensor"),
    ("vec env step", "stable_baselines3/common/vec_env/base_vec_env.py", "step"),
    ("adapter step_wait", "agents/vector.py", "step_wait"),
    ("adapter unbatch_infos", "agents/vector.py", "unbatch_infos"),
    ("adapter _record", "agents/vector.py", "_record"),
    ("DummyVecEnv step_wait", "vec_env/dummy_vec_env.py", "step_wait"),
    ("deepcopy", "copy.py", "deepcopy"),
    ("native vector env step", "mei_envs/vector.py", "step"),
    ("action_masks (adapter)", "agents/vector.py", "env_method"),
    ("get_action_masks", "sb3_contrib/common/maskable/utils.py", "get_action_masks"),
    ("CartPole step", "classic_control/cartpole.py", "step"),
    ("Monitor step", "agents/envs.py", "step"),
    ("rollout buffer add", "stable_baselines3/common/buffers.py", "add"),
    ("compute_returns_and_advantage", "buffers.py", "compute_returns_and_advantage"),
    ("callback on_step", "stable_baselines3/common/callbacks.py", "on_step"),
    ("_update_info_buffer", "stable_baselines3/common/base_class.py", "_update_info_buffer"),
    ("evaluate_actions", "stable_baselines3/common/policies.py", "evaluate_actions"),
    ("maskable evaluate_actions", "sb3_contrib/common/maskable/policies.py", "evaluate_actions"),
    ("optimizer step", "torch/optim/adam.py", "step"),
    ("backward", "torch/_tensor.py", "backward"),
)
ENVS = ("mei_envs/EarlyExitUpload-v1", "mei_envs/EdgeLLMCache-v0", "mei_envs/SplitFedAlloc-v0")
REFERENCE = "CartPole-v1"


def _build(env_id: str, algo: str, n_envs: int, kwargs: dict[str, Any], seed: int) -> Any:
    from mei_envs.agents.throughput import build_model, unmasked_config

    if env_id == REFERENCE:
        return build_model(env_id, algo, n_envs, kwargs, seed=seed)
    cfg = unmasked_config(env_id) if algo == "ppo" else {}
    return build_model(env_id, algo, n_envs, kwargs, seed=seed, env_config=cfg or None)


def _wrap(obj: Any, name: str, acc: dict[str, float], label: str) -> None:
    fn = getattr(obj, name)

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0

    setattr(obj, name, timed)


def timers(model: Any, steps: int) -> dict[str, float]:
    """Wall-clock seconds of ``model.learn(steps)`` split by timers around its parts."""
    acc: dict[str, float] = {}
    venv = model.get_env()
    _wrap(model, "collect_rollouts", acc, "collect_rollouts")
    _wrap(model, "train", acc, "train (updates)")
    _wrap(venv, "step_wait", acc, "vec env step_wait")
    inner = getattr(venv, "venv", None)
    if inner is not None:  # the adapter over a native vector env
        _wrap(inner, "step", acc, "env step (native vector env)")
        if hasattr(inner, "action_masks"):
            _wrap(inner, "action_masks", acc, "env action_masks")
    else:
        for e in venv.envs:
            _wrap(e.unwrapped, "step", acc, "env step (single envs, unwrapped)")
    t0 = time.perf_counter()
    model.learn(steps)
    acc["learn"] = time.perf_counter() - t0
    acc["steps"] = float(model.num_timesteps)
    return acc


def cprofile(model: Any, steps: int) -> dict[str, float]:
    prof = cProfile.Profile()
    prof.enable()
    model.learn(steps)
    prof.disable()
    stats = pstats.Stats(prof)
    out: dict[str, float] = {"steps": float(model.num_timesteps)}
    for label, suffix, func in PARTS:
        total = 0.0
        for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if name == func and path.replace("\\", "/").endswith(suffix):
                total = max(total, ct)
        if total:
            out[label] = total
    return out


def profile_env(
    env_id: str, algo: str, mode: str, steps: int, n_envs: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    model = _build(env_id, algo, n_envs, kwargs, seed=0)
    model.learn(int(kwargs["n_steps"]) * n_envs)  # warm-up rollout and update, untimed
    run: Callable[[Any, int], dict[str, float]] = timers if mode == "timers" else cprofile
    parts = run(model, steps)
    model.get_env().close()
    learn = parts.get("learn") or max(parts.values())
    return {
        "env_id": env_id,
        "algo": algo,
        "mode": mode,
        "seconds": {k: round(v, 4) for k, v in parts.items()},
        "share_of_learn": {k: round(v / learn, 3) for k, v in parts.items() if k != "steps"},
        "us_per_env_step": {
            k: round(1e6 * v / parts["steps"], 2) for k, v in parts.items() if k != "steps"
        },
    }


VEC_PATHS = ("raw", "native", "native_step_info", "dummy", "dummy_lean")


def _vec_path(env_id: str, path: str, n_envs: int, old_adapter: str | None) -> Any:
    """The vec env of ``path`` (see the module doc), seeded and reset; ``raw`` is the native
    vector env itself."""
    import gymnasium as gym

    from mei_envs.agents.envs import env_info_metrics, make_vec_env
    from mei_envs.agents.throughput import unmasked_config
    from mei_envs.baselines.evaluation import make_env

    cfg = unmasked_config(env_id) if env_id != REFERENCE else {}
    if path == "dummy_lean":
        cfg = {**cfg, "info": "lean"}
    probe = make_env(env_id, cfg or None)
    metrics = env_info_metrics(probe)
    probe.close()
    kw = {"config": cfg} if cfg else {}
    if path in ("raw", "native_old"):
        raw = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kw)
        if path == "raw":
            raw.reset(seed=0)
            return raw
        spec = importlib.util.spec_from_file_location("old_vector", str(old_adapter))
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        venv = mod.VectorEnvAdapter(raw, info_metrics=metrics, env_id=env_id)
    else:
        venv = make_vec_env(
            env_id,
            n_envs,
            env_config=cfg or None,
            info_metrics=metrics,
            vec_env="native" if path.startswith("native") else "dummy",
            step_info=path == "native_step_info",
        )
    venv.seed(0)
    venv.reset()
    return venv


def vecstep(
    env_id: str, n_envs: int, block: int, rounds: int, old_adapter: str | None
) -> dict[str, Any]:
    """CPU us per env-step of every vec-env path of ``env_id`` (see the module doc)."""
    import numpy as np

    paths = ["dummy"] if env_id == REFERENCE else list(VEC_PATHS)
    if old_adapter and env_id != REFERENCE:
        paths.append("native_old")
    envs = {p: _vec_path(env_id, p, n_envs, old_adapter) for p in paths}
    space = envs[paths[0]].action_space
    space.seed(0)
    acts = [np.asarray(space.sample()) for _ in range(block)]
    if acts[0].shape[:1] != (n_envs,):  # a VecEnv's space is one sub-env's
        acts = [np.stack([space.sample() for _ in range(n_envs)]) for _ in range(block)]
    times: dict[str, list[float]] = {p: [] for p in paths}
    for r in range(rounds + 1):
        for p in paths[r % len(paths) :] + paths[: r % len(paths)]:
            env = envs[p]
            t0 = time.process_time()
            if p == "raw":
                for a in acts:
                    env.step(a)
            else:
                for a in acts:
                    env.step_async(a)
                    env.step_wait()
            if r:  # round 0 warms up
                times[p].append((time.process_time() - t0) / (block * n_envs) * 1e6)
    med = {p: statistics.median(v) for p, v in times.items()}
    out = {
        "env_id": env_id,
        "mode": "vecstep",
        "n_envs": n_envs,
        "block": block,
        "rounds": rounds,
        "cpu_us_per_env_step": {p: round(v, 2) for p, v in med.items()},
    }
    if "raw" in med:  # the adapter's own cost per step_wait call: (path - raw) x n_envs
        out["adapter_cpu_us_per_call"] = {
            p: round((med[p] - med["raw"]) * n_envs, 1)
            for p in ("native", "native_step_info", "native_old")
            if p in med
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", action="append", help="env id (repeatable; default: all + CartPole)")
    p.add_argument("--algo", default="ppo", choices=("ppo", "maskable_ppo"))
    p.add_argument("--mode", default="timers", choices=("timers", "cprofile", "vecstep"))
    p.add_argument("--block", type=int, default=200, help="vecstep: steps per timed block")
    p.add_argument("--rounds", type=int, default=15, help="vecstep: interleaved rounds")
    p.add_argument("--old-adapter", default=None, help="vecstep: an older agents/vector.py")
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--out", default=None, help="also write the results (JSON list) here")
    ns = p.parse_args(argv)
    th.set_num_threads(1)
    kwargs = {"n_steps": 256, "batch_size": 64, "n_epochs": 10}
    results = []
    for env_id in ns.env or (*ENVS, REFERENCE):
        if ns.mode == "vecstep":
            res = vecstep(env_id, ns.n_envs, ns.block, ns.rounds, ns.old_adapter)
        else:
            res = profile_env(env_id, ns.algo, ns.mode, ns.steps, ns.n_envs, kwargs)
        print(json.dumps(res), flush=True)
        results.append(res)
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
