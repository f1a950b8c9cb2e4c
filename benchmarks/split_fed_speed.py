"""Issue 12 speed measurements of SplitFedAlloc-v0 (a script, not a test; ratios to CartPole-v1
measured in the same process, medians of interleaved repeats).

    python benchmarks/split_fed_speed.py single [repeats]  # gym.make step/s ratio, reset us
    python benchmarks/split_fed_speed.py vector [repeats]   # native vector env at 1/16/256 envs
    python benchmarks/split_fed_speed.py paths [repeats] [cases] [sizes]  # vector env's 2 paths
    python benchmarks/split_fed_speed.py scale [repeats]    # cost vs n_devices 2/10/50/200
    python benchmarks/split_fed_speed.py oracle             # myopic_oracle per solve (1 episode)
    python benchmarks/split_fed_speed.py minmax [repeats]   # one min-max split: float vs array
    python benchmarks/split_fed_speed.py instr              # callgrind instr.: step, reset, vec256

``instr`` counts instructions under valgrind (load-independent, ``PYTHONHASHSEED=0``) with
the actions sampled *before* the counted loop (``benchmarks/instructions.py`` counts
``action_space.sample()`` inside it: ~170k instructions of a Box sample per step), for this
env and CartPole-v1 (single step, reset, and the native vector env per env-step at 256).

Run the same command on another checkout (``PYTHONPATH=<checkout>``) for a before/after pair;
without a native vector env the ``vector`` mode falls back to ``make_vec(..., "sync")``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np

import mei_envs  # noqa: F401  (registers the ids)
from mei_envs.envs.split_fed_alloc import SplitFedAllocConfig

ENV_ID = "mei_envs/SplitFedAlloc-v0"


def _loop(env: Any, action: Any, steps: int) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def _reset_us(env: Any, n: int) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(n):
        env.reset()
    return (time.perf_counter() - t0) / n * 1e6


def _vloop(env: Any, actions: Any, steps: int) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return steps * env.num_envs / (time.perf_counter() - t0)


def _minmax_action(env: Any) -> np.ndarray:
    u = env.unwrapped
    return np.array([u.n_cuts // 2, u.model.K - 1, 2])


def single(reps: int) -> None:
    """Every preset (continuous, scalar action 1), the discrete mode with the min-max rule and
    the default config with ``info="lean"``."""
    cartpole = gym.make("CartPole-v1")
    envs = {p: gym.make(ENV_ID, preset=p) for p in SplitFedAllocConfig.PRESETS}
    envs["discrete_minmax"] = gym.make(ENV_ID, action_mode="discrete")
    envs["default_info_lean"] = gym.make(ENV_ID, info="lean")
    acts = {k: _minmax_action(e) if k == "discrete_minmax" else 1 for k, e in envs.items()}
    c, c_reset = [], []
    sps: dict[str, list[float]] = {k: [] for k in envs}
    rst: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(reps):
        c.append(_loop(cartpole, 1, 20000))
        c_reset.append(_reset_us(cartpole, 2000))
        for k, e in envs.items():
            sps[k].append(_loop(e, acts[k], 300 if k == "discrete_minmax" else 3000))
            rst[k].append(_reset_us(e, 300))
    cm = statistics.median(c)
    print(f"CartPole-v1 gym.make: {cm:.0f} steps/s, reset {statistics.median(c_reset):.1f} us")
    for k in envs:
        m = statistics.median(sps[k])
        print(
            f"single {k:26s} {m:9.0f} steps/s {1e6 / m:8.1f} us/step  ratio {m / cm:.3f}  "
            f"reset {statistics.median(rst[k]):7.1f} us"
        )


def vector(reps: int) -> None:
    for n in (1, 16, 256):
        cp = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
        try:
            env = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point")
            mode = "native"
        except Exception:  # a checkout without the native vector env
            env = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync")
            mode = "sync"
        actions = np.ones((n, env.single_action_space.shape[0]), np.float32)
        steps = max(3000 // n, 30)
        c, r = [], []
        for _ in range(reps):
            c.append(_vloop(cp, np.ones(n, np.int64), steps * 4))
            r.append(_vloop(env, actions, steps))
        cm, m = statistics.median(c), statistics.median(r)
        print(
            f"vector n={n:4d} ({mode}) {m:10.0f} env-steps/s  CartPole native {cm:10.0f}  "
            f"ratio {m / cm:.4f}"
        )


# paths' cases: (config, the discrete rule every action takes: None for uniform choices)
PATH_CASES: dict[str, tuple[dict[str, Any], int | None]] = {
    "continuous": ({}, None),
    "discrete": ({"action_mode": "discrete"}, None),
    "discrete_minmax": ({"action_mode": "discrete"}, 2),
    "discrete_equal": ({"action_mode": "discrete"}, 0),
    "many_devices_weak_server": ({"preset": "many_devices_weak_server"}, None),
    "devices_50": ({"n_devices": 50, "device_types": ("jetson_orin_nano",)}, None),
    "discrete_many_devices_weak_server": (
        {"preset": "many_devices_weak_server", "action_mode": "discrete"},
        None,
    ),
    "discrete_devices_50": (
        {"n_devices": 50, "device_types": ("jetson_orin_nano",), "action_mode": "discrete"},
        None,
    ),
}


def paths(reps: int) -> None:
    """CPU us per env-step of the native vector env's two paths (one lean single env per
    sub-env, stepped in turn, and the batched numpy step), in one process: the thresholds
    ``SCALAR_MAX_ENVS*`` are chosen from this. ``paths REPS CASES SIZES`` (comma lists;
    cases of :data:`PATH_CASES`, default continuous and discrete; sizes default
    1,2,4,8,16,32,64). Random actions drawn beforehand (uniform boxes; uniform discrete
    choices, or every rule the case's); blocks of about 1,024 env-steps (episodes end and
    reset inside them), interleaved in rotating order, ``reps`` rounds after a warm-up round;
    medians of ``time.process_time``."""
    from mei_envs.envs import split_fed_alloc_vector as vmod

    cases = (sys.argv[3] if len(sys.argv) > 3 else "continuous,discrete").split(",")
    sizes = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "1,2,4,8,16,32,64").split(",")]
    kept = vmod.SCALAR_MAX_ENVS, vmod.SCALAR_MAX_ENVS_DISCRETE
    for name in cases:
        cfg, rule = PATH_CASES[name]
        envs, acts = {}, {}
        for n in sizes:
            for path, limit in (("subs", 1 << 20), ("batched", 0)):
                vmod.SCALAR_MAX_ENVS = vmod.SCALAR_MAX_ENVS_DISCRETE = limit
                env = vmod.SplitFedAllocVectorEnv(n, **cfg)
                assert env.scalar is (path == "subs")
                env.reset(seed=0)
                envs[n, path] = env
            space = envs[n, "subs"].action_space
            space.seed(n)
            acts[n] = [space.sample() for _ in range(max(1024 // n, 16))]
            if rule is not None:
                for a in acts[n]:
                    a[:, 2] = rule
        vmod.SCALAR_MAX_ENVS, vmod.SCALAR_MAX_ENVS_DISCRETE = kept
        keys = list(envs)
        times: dict[Any, list[float]] = {k: [] for k in keys}
        for r in range(reps + 1):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                env, a = envs[key], acts[key[0]]
                t0 = time.process_time()
                for x in a:
                    env.step(x)
                if r:  # round 0 warms up
                    times[key].append((time.process_time() - t0) / (len(a) * key[0]) * 1e6)
        for n in sizes:
            sub, bat = (statistics.median(times[n, p]) for p in ("subs", "batched"))
            print(
                f"paths {name:24s} n={n:3d}  per-sub-env {sub:7.1f} us/env-step  "
                f"batched {bat:7.1f} us/env-step  batched/per-sub-env {bat / sub:5.2f}",
                flush=True,
            )


def scale(reps: int) -> None:
    """Single-env step (continuous; discrete with the min-max rule), reset and native vector
    step at 256 envs versus the number of devices, with fitted log-log exponents."""
    sizes = [2, 10, 50, 200]
    res: dict[int, dict[str, list[float]]] = {
        n: {"c": [], "d": [], "r": [], "v": []} for n in sizes
    }
    for _ in range(reps):
        for n in sizes:
            for mode, key, steps in (("continuous", "c", 400), ("discrete", "d", 40)):
                e = gym.make(ENV_ID, n_devices=n, action_mode=mode, time_budget_s=1e9)
                a = 1 if mode == "continuous" else _minmax_action(e)
                res[n][key].append(1e6 / _loop(e, a, steps))
                if key == "c":
                    res[n]["r"].append(_reset_us(e, 100))
            v = gym.make_vec(
                ENV_ID, num_envs=256, vectorization_mode="vector_entry_point", n_devices=n
            )
            acts = np.ones((256, v.single_action_space.shape[0]), np.float32)
            res[n]["v"].append(1e6 / _vloop(v, acts, 20))
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    for n in sizes:
        m = med[n]
        print(
            f"N={n:4d} single continuous {m['c']:9.1f} us/step  discrete-minmax {m['d']:9.1f} "
            f"us/step  reset {m['r']:8.1f} us  vector@256 {m['v']:7.2f} us/env-step"
        )
    x = np.log(sizes)
    for key, name in (("c", "single"), ("d", "single minmax"), ("r", "reset"), ("v", "vector")):
        slope = np.polyfit(x, np.log([med[n][key] for n in sizes]), 1)[0]
        print(f"fitted exponent {name}: {slope:.2f}")


def oracle() -> None:
    from mei_envs.baselines.registry import make_policy

    for p in SplitFedAllocConfig.PRESETS:
        env = gym.make(ENV_ID, preset=p)
        pol = make_policy(ENV_ID, "myopic_oracle", env)
        obs, info = env.reset(seed=0)
        epoch, other = [], []
        done = False
        while not done:  # one whole episode
            t0 = time.perf_counter()
            a = pol.act(obs, info)
            dt = time.perf_counter() - t0
            (epoch if env.unwrapped.decision_state()["decision_epoch"] else other).append(dt)
            obs, _, term, trunc, info = env.step(a)
            done = term or trunc
        print(
            f"{p:26s} myopic_oracle over {len(epoch) + len(other)} rounds: decision epoch "
            f"(a solve over every cut and rank) median {statistics.median(epoch) * 1e3:6.1f} ms, "
            f"max {max(epoch) * 1e3:6.1f} ms; other rounds median "
            f"{statistics.median(other) * 1e3:5.1f} ms"
        )


def minmax(reps: int) -> None:
    """One min-max bandwidth split per preset (the current round at the middle cut and the top
    rank, 20 rounds of one episode): the one-problem float solve
    (``split_fed.minmax_shares_float``, what the env and the baselines call) against the
    array solve (``split_fed._minmax``, what a batch takes), same process, and whether they
    agree bit for bit."""
    from mei_envs import split_fed

    has_float = hasattr(split_fed, "minmax_shares_float")
    for p in SplitFedAllocConfig.PRESETS:
        env = gym.make(ENV_ID, preset=p)
        u = env.unwrapped
        env.reset(seed=0)
        m = u.model
        problems = []
        for _ in range(20):
            st = u.decision_state()
            gamma, snr_d = m.link_params(st["gain"])
            base, up, down, _ = m.round_terms(st["device_types"], u.n_cuts // 2, m.K - 1, 1.0)
            problems.append((base, up, down, gamma, snr_d))
            env.step(1)
        fl: list[float] = []
        ar: list[float] = []
        same = True
        for _ in range(reps):
            for prob in problems:
                lists = [np.broadcast_to(v, base.shape).tolist() for v in prob]
                arrays = tuple(np.asarray(v, float)[None] for v in prob)
                t0 = time.perf_counter()
                with np.errstate(all="ignore"):
                    rt_a, sh_a = split_fed._minmax(arrays, m.band, 1e-12, 200)
                ar.append(time.perf_counter() - t0)
                if has_float:
                    t0 = time.perf_counter()
                    rt, sh = split_fed.minmax_shares_float(*lists, band=m.band)
                    fl.append(time.perf_counter() - t0)
                    same &= rt == float(rt_a[0]) and sh == sh_a[0].tolist()
        a_us = statistics.median(ar) * 1e6
        line = f"{p:26s} minmax array {a_us:8.1f} us/solve"
        if has_float:
            f_us = statistics.median(fl) * 1e6
            line += f"  float {f_us:7.1f} us/solve  x{a_us / f_us:.1f}  bit-identical {same}"
        print(line)


_INSTR_SETUP = """
import gymnasium as gym, mei_envs
env = gym.make({env_id!r})
env.action_space.seed(0)
acts = [env.action_space.sample() for _ in range({n})]
env.reset(seed=0)
"""
_INSTR_LOOP = {
    "single": (
        "for a in acts:\n    _, _, te, tr, _ = env.step(a)\n    if te or tr:\n        env.reset()"
    ),
    "reset": "for _ in acts:\n    env.reset()",
}
# the native vector env at 256 sub-envs, n steps of presampled actions
_INSTR_VEC = """
import gymnasium as gym, numpy as np, mei_envs
env = gym.make_vec({env_id!r}, num_envs=256, vectorization_mode="vector_entry_point")
rng = np.random.default_rng(0)
if {env_id!r} == "CartPole-v1":
    acts = [np.ones(256, np.int64)] * {n}
else:
    shape = (256, env.single_action_space.shape[0])
    acts = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range({n})]
env.reset(seed=0)
for a in acts:
    env.step(a)
"""


def _instructions(env_id: str, what: str, n: int) -> int:
    import os
    import re
    import subprocess

    if what == "vec256":
        code = _INSTR_VEC.format(env_id=env_id, n=n)
    else:
        code = _INSTR_SETUP.format(env_id=env_id, n=n) + _INSTR_LOOP[what]
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same imports, dict layouts in each run
    out = subprocess.run(
        [*cmd, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def instr(_reps: int) -> None:
    """Instructions per step and per reset ((I(n2) - I(n1)) / (n2 - n1), actions presampled)
    and per env-step of the native vector env at 256 sub-envs (120 against 20 steps)."""
    for what, n1, n2, per_call in (
        ("single", 100, 1100, 1),
        ("reset", 100, 1100, 1),
        ("vec256", 20, 120, 256),
    ):
        per = {}
        for env_id in (ENV_ID, "CartPole-v1"):
            lo, hi = _instructions(env_id, what, n1), _instructions(env_id, what, n2)
            per[env_id] = (hi - lo) / (n2 - n1) / per_call
        print(
            f"{what}: {per[ENV_ID]:,.0f} instructions; CartPole-v1 {per['CartPole-v1']:,.0f} "
            f"(ratio {per['CartPole-v1'] / per[ENV_ID]:.3f}: higher is faster)",
            flush=True,
        )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "single"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    modes = {
        "single": single,
        "vector": vector,
        "paths": paths,
        "scale": scale,
        "minmax": minmax,
        "instr": instr,
    }
    modes.get(what, lambda _r: oracle())(repeats)
