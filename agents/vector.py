"""Stable-Baselines3 on a Gymnasium vector env: :class:`VectorEnvAdapter`.

SB3 trains on its own ``VecEnv`` API: ``step_async``/``step_wait``, one ``done`` per sub-env,
one info dict per sub-env, the last observation of an episode in
``infos[i]["terminal_observation"]``, truncation in ``infos[i]["TimeLimit.truncated"]``, and
seeds set by ``VecEnv.seed(s)`` that the next ``reset()`` uses (sub-env ``i`` gets ``s + i``).
Gymnasium 1.x vector envs return batched arrays and dicts of arrays with ``_key`` masks
instead; SB3 has no bridge between the two. This module is that bridge, for vector envs with
``AutoresetMode.SAME_STEP`` (the native vector envs of mei-envs, :mod:`mei_envs.vector`, and
``gymnasium.vector.SyncVectorEnv(..., autoreset_mode=AutoresetMode.SAME_STEP)``).

What SB3 sees is what ``DummyVecEnv`` over the single envs gives, step for step: the same
observations, float32 rewards and dones, terminal observations and ``TimeLimit.truncated``
flags, reset infos in ``reset_infos``; so an algorithm seeded alike collects the same rollouts
(``tests/test_sb3_vector.py`` checks it). Sub-env ``i`` of a native vector env is the single
env seeded ``seed + i``, which is how ``DummyVecEnv`` seeds its envs.

The adapter also does the job of SB3's ``Monitor`` on every sub-env (``monitor=True``): each
finished episode's ``infos[i]["episode"]`` (return ``r``, length ``l``, time ``t`` and the
env's info metrics), which fills the algorithm's ``ep_info_buffer``, and optionally one
monitor file per sub-env, ``<monitor_dir>/<i>.monitor.csv``, in ``Monitor``'s format. An
episode's info metrics come from the env's per-episode totals ``episode_<key>`` when its
last step reports them (lean info), else they are aggregated from the per-step keys as the
env's ``metadata["info_metrics"]`` says (sum, mean or last), with numpy over all sub-envs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from mei_envs.vector import MeiVectorEnv

_SKIP = frozenset({"final_obs", "final_info"})


def unbatch_infos(
    infos: Mapping[str, Any], n: int, extra: Mapping[str, list[Any]] | None = None
) -> list[dict[str, Any]]:
    """Per-sub-env info dicts from a vector env's dict of arrays with ``_key`` masks.

    Sub-env ``i`` gets the keys whose mask is set at ``i``, as plain Python scalars (1-D
    numeric arrays) or rows (other arrays, copied); nested dicts are split the same way.
    ``final_obs``/``final_info`` are left out (the adapter moves them where SB3 wants them).
    ``extra`` adds keys every sub-env has (``{key: [value of sub-env 0, 1, ...]}``).
    """
    keys: list[str] = []
    columns: list[Sequence[Any]] = []
    partial: list[tuple[str, Sequence[Any], list[bool]]] = []
    for key, value in infos.items():
        if key[:1] == "_" or key in _SKIP:
            continue
        # Exact type checks first: isinstance against the Mapping ABC costs ~1 us a key.
        if type(value) is np.ndarray and value.ndim == 1 and value.dtype.kind != "O":
            values: Sequence[Any] = value.tolist()
        elif type(value) is dict or isinstance(value, Mapping):
            values = unbatch_infos(value, n)
        else:  # rows of a 2-D array or objects: copies, so a reused buffer cannot change them
            values = [np.array(v, copy=True) for v in value]
        mask = infos.get("_" + key)
        if mask is None or mask.all():
            keys.append(key)
            columns.append(values)
        else:
            partial.append((key, values, mask.tolist()))
    if extra:
        keys.extend(extra)
        columns.extend(extra.values())
    if keys:
        out = [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
    else:
        out = [{} for _ in range(n)]
    for key, values, present in partial:
        for i, p in enumerate(present):
            if p:
                out[i][key] = values[i]
    return out


def unbatch_rows(infos: Mapping[str, Any], rows: Sequence[int]) -> list[dict[str, Any]]:
    """``[unbatch_infos(infos, n)[i] for i in rows]`` without splitting the other sub-envs'
    values: the same keys in the same order, the same values (Python scalars from 1-D
    numeric arrays, copied rows otherwise, nested dicts split alike)."""
    whole: list[tuple[str, Any]] = []
    partial: list[tuple[str, Any, Any]] = []
    all_set: dict[int, bool] = {}  # mask id -> mask.all() (envs share masks across keys)
    for key, value in infos.items():
        if key[:1] == "_" or key in _SKIP:
            continue
        mask = infos.get("_" + key)
        if mask is None:
            whole.append((key, value))
            continue
        full = all_set.get(id(mask))
        if full is None:
            full = all_set[id(mask)] = bool(mask.all())
        if full:
            whole.append((key, value))
        else:
            partial.append((key, value, mask))
    out = []
    for i in rows:
        row: dict[str, Any] = {}
        for key, value in whole:
            row[key] = _value_at(value, i)
        for key, value, mask in partial:
            if mask[i]:
                row[key] = _value_at(value, i)
        out.append(row)
    return out


def _value_at(value: Any, i: int) -> Any:
    """Sub-env ``i``'s entry of one batched info value, as :func:`unbatch_infos` gives it."""
    if type(value) is np.ndarray and value.ndim == 1 and value.dtype.kind != "O":
        return value.item(i)
    if type(value) is dict or isinstance(value, Mapping):
        return unbatch_rows(value, [i])[0]
    return np.array(value[i], copy=True)


class VectorEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium ``VectorEnv`` with SAME_STEP autoreset.

    Args:
        venv: the vector env (``gym.make_vec(id, n, vectorization_mode="vector_entry_point")``
            or a ``SyncVectorEnv`` with ``autoreset_mode=AutoresetMode.SAME_STEP``).
        monitor: record episodes as SB3's ``Monitor`` does (``infos[i]["episode"]``).
        info_metrics: ``{info key: "sum" | "mean" | "last"}`` to add to each episode's record
            (default: the env's ``metadata["info_metrics"]``).
        monitor_dir: write ``<monitor_dir>/<i>.monitor.csv`` per sub-env (None: no files).
        append_monitor: append to existing monitor files (a resumed run) instead of
            overwriting them.
        env_id: the id written in the monitor files' header (default: ``venv.spec.id``).
        step_info: give SB3 the env's per-step info keys in every sub-env's info dict (as
            ``DummyVecEnv`` does). ``False``: a sub-env whose episode goes on gets only
            ``{"TimeLimit.truncated": False}``, which is all SB3's algorithms, the episode
            records (kept from the vector env's own infos) and the trainer's callbacks read;
            a sub-env whose episode ends gets its full last info as with ``True`` (final
            info, ``terminal_observation``, ``episode``, ``TimeLimit.truncated``), and
            ``reset_infos`` is the same. Rollouts are the same either way; ``False`` saves
            unbatching the per-step keys (``mei-envs train`` uses it for its training env).

    Per-sub-env methods: ``env_method("action_masks")`` splits the vector env's
    ``action_masks()`` (shape ``(num_envs, n_actions)``) into rows, which is what
    sb3-contrib's ``MaskablePPO`` calls. A vector env that keeps its sub-envs as objects
    (``SyncVectorEnv.envs``) serves any ``env_method``/``get_attr``/``set_attr`` from them; a
    native vector env has no per-sub-env objects, so ``get_attr`` returns its own attribute
    (shared by all sub-envs) and other methods raise ``AttributeError``.

    Raises:
        ValueError: a vector env whose autoreset mode is not SAME_STEP, or a ``Dict``/``Tuple``
            observation space.
    """

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        *,
        monitor: bool = True,
        info_metrics: Mapping[str, str] | None = None,
        monitor_dir: str | Path | None = None,
        append_monitor: bool = False,
        env_id: str | None = None,
        step_info: bool = True,
    ) -> None:
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) is not AutoresetMode.SAME_STEP:
            raise ValueError(
                f"{type(venv).__name__}: autoreset_mode={mode!r}; VectorEnvAdapter needs "
                "AutoresetMode.SAME_STEP (SB3 expects the first observation of the next "
                "episode in the step that ends one)"
            )
        obs_space = venv.single_observation_space
        if isinstance(obs_space, (spaces.Dict, spaces.Tuple)):
            raise ValueError(
                f"observation space {obs_space}: VectorEnvAdapter takes array observations "
                "(Box, Discrete, MultiDiscrete, MultiBinary), not Dict/Tuple"
            )
        self.venv = venv
        super().__init__(venv.num_envs, obs_space, venv.single_action_space)
        self.metadata = dict(venv.metadata)
        self._obs_dtype = obs_space.dtype
        self._actions: np.ndarray | None = None
        self.step_info = bool(step_info)
        self._no_truncation = {"TimeLimit.truncated": [False] * self.num_envs}
        self.env_id = env_id or (venv.spec.id if venv.spec is not None else None)

        self.monitor = bool(monitor or monitor_dir is not None)
        if info_metrics is None:
            info_metrics = venv.metadata.get("info_metrics", {}) or {}
        bad = {k: v for k, v in info_metrics.items() if v not in ("sum", "mean", "last")}
        if bad:
            raise ValueError(f"info_metrics={dict(bad)!r}: aggregations must be sum, mean, last")
        self.info_metrics = dict(info_metrics)
        self.t_start = time.time()
        self._writers: list[ResultsWriter] = []
        if monitor_dir is not None:
            header = {"t_start": self.t_start, "env_id": str(self.env_id)}
            self._writers = [
                ResultsWriter(
                    str(Path(monitor_dir) / str(i)),
                    header=header,
                    extra_keys=tuple(self.info_metrics),
                    override_existing=not append_monitor,
                )
                for i in range(self.num_envs)
            ]
        # Per-step aggregation is needed until an episode's end shows the env reports the
        # per-episode totals (episode_<key>) for every metric; then it stops. The native
        # vector envs of mei-envs report them for every key of their metadata's info_metrics
        # at every episode end (the mei_envs.vector contract), so for those keys it never
        # starts (a missing total would then be recorded as NaN, with a warning).
        own = venv.metadata.get("info_metrics", {}) or {}
        self._aggregate = bool(self.info_metrics) and not (
            isinstance(venv, MeiVectorEnv) and set(self.info_metrics) <= set(own)
        )
        self._warned = False
        self._start_episodes(np.ones(self.num_envs, dtype=bool))

    # ---- the VecEnv API -----------------------------------------------------------------
    def reset(self) -> np.ndarray:
        """Reset every sub-env with the seeds and options set since the last reset."""
        seed: list[int | None] | None = None
        if any(s is not None for s in self._seeds):
            seed = list(self._seeds)
        options = None
        if any(self._options):
            first = self._options[0]
            if any(o != first for o in self._options):
                raise ValueError(
                    "set_options: a vector env resets all sub-envs with one options dict; "
                    f"got different options per sub-env {self._options!r}"
                )
            options = dict(first)
        obs, infos = self.venv.reset(seed=seed, options=options)
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        self._start_episodes(np.ones(self.num_envs, dtype=bool))
        return np.array(obs, dtype=self._obs_dtype, copy=True)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("VectorEnvAdapter.step_wait called without step_async")
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        n = self.num_envs
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        rewards64 = np.asarray(rewards, dtype=np.float64)
        if not dones.any():
            ended: list[int] = []
            if self.step_info:
                out = unbatch_infos(infos, n, self._no_truncation)
            else:
                out = [{"TimeLimit.truncated": False} for _ in range(n)]
        elif not self.step_info:  # split only the sub-envs that ended
            ended = np.flatnonzero(dones).tolist()
            time_limit = (truncated & ~terminated).tolist()
            final_info = infos.get("final_info")
            final = (
                unbatch_rows(final_info, ended) if final_info is not None else [{} for _ in ended]
            )
            final_obs = infos["final_obs"]
            out = [{"TimeLimit.truncated": False} for _ in range(n)]
            for i, top, last in zip(ended, unbatch_rows(infos, ended), final, strict=True):
                self.reset_infos[i] = top
                last["terminal_observation"] = final_obs[i]
                last["TimeLimit.truncated"] = time_limit[i]
                out[i] = last
        else:
            ended = np.flatnonzero(dones).tolist()
            out = unbatch_infos(infos, n)
            time_limit = (truncated & ~terminated).tolist()
            final_info = infos.get("final_info")
            final = (
                unbatch_infos(final_info, n) if final_info is not None else [{} for _ in range(n)]
            )
            final_obs = infos["final_obs"]
            for i in range(n):
                if dones[i]:
                    self.reset_infos[i] = out[i]
                    out[i] = final[i]
                    out[i]["terminal_observation"] = final_obs[i]
                elif not self.step_info:
                    out[i] = {}
                out[i]["TimeLimit.truncated"] = time_limit[i]
        if self.monitor:
            self._record(rewards64, dones, infos, ended, out)
        return (
            np.array(obs, dtype=self._obs_dtype, copy=True),
            rewards64.astype(np.float32),  # DummyVecEnv's reward buffer is float32
            dones,
            out,
        )

    def close(self) -> None:
        self.venv.close()
        for w in self._writers:
            w.close()
        self._writers = []

    def get_images(self) -> Sequence[np.ndarray | None]:
        warnings.warn(f"{type(self.venv).__name__}: VectorEnvAdapter does not render", stacklevel=2)
        return [None] * self.num_envs

    # ---- per-sub-env access ---------------------------------------------------------------
    def _sub_envs(self) -> list[gym.Env] | None:
        envs = getattr(self.venv, "envs", None)
        return list(envs) if envs is not None else None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = self._get_indices(indices)
        envs = self._sub_envs()
        if envs is not None:
            return [envs[i].get_wrapper_attr(attr_name) for i in idx]
        value = getattr(self.venv, attr_name)  # AttributeError names it
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            for i in idx:
                envs[i].set_wrapper_attr(attr_name, value)
            return
        if sorted(idx) != list(range(self.num_envs)):
            raise ValueError(
                f"set_attr({attr_name!r}, indices={indices!r}): {type(self.venv).__name__} has "
                "no per-sub-env objects; set it for all sub-envs (indices=None)"
            )
        setattr(self.venv, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        idx = self._get_indices(indices)
        if method_name == "action_masks" and hasattr(self.venv, "action_masks"):
            masks = np.array(self.venv.action_masks(*method_args, **method_kwargs), dtype=bool)
            if masks.shape[:1] != (self.num_envs,):
                raise ValueError(
                    f"{type(self.venv).__name__}.action_masks() returned shape {masks.shape}; "
                    f"expected ({self.num_envs}, n_actions)"
                )
            return [masks[i] for i in idx]
        envs = self._sub_envs()
        if envs is not None:
            return [
                envs[i].get_wrapper_attr(method_name)(*method_args, **method_kwargs) for i in idx
            ]
        raise AttributeError(
            f"env_method({method_name!r}): {type(self.venv).__name__} steps all sub-envs at once "
            "and has no per-sub-env methods (only action_masks, split by rows)"
        )

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        idx = self._get_indices(indices)
        if wrapper_class is Monitor:
            return [self.monitor for _ in idx]
        envs = self._sub_envs()
        if envs is None:
            return [False for _ in idx]
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(envs[i], wrapper_class) for i in idx]

    # ---- episode records (SB3's Monitor, for all sub-envs at once) ------------------------
    def _start_episodes(self, mask: np.ndarray) -> None:
        if not hasattr(self, "_returns"):
            n, k = self.num_envs, len(self.info_metrics)
            self._keys = list(self.info_metrics)
            self._returns = np.zeros(n)
            # Episode lengths: steps recorded so far minus each sub-env's count at the start
            # of its episode (one Python int a step instead of an array update).
            self._steps = 0
            self._start_step = np.zeros(n, dtype=np.int64)
            # Row j: metric self._keys[j]; column i: sub-env i.
            self._sums = np.zeros((k, n))
            self._counts = np.zeros((k, n), dtype=np.int64)
            self._last = np.full((k, n), np.nan)
            self._zeros = np.zeros(n)
            self._trues = np.ones(n, dtype=bool)
            self._falses = np.zeros(n, dtype=bool)
        self._returns[mask] = 0.0
        self._start_step[mask] = self._steps
        if not self._aggregate:
            return
        self._sums[:, mask] = 0.0
        self._counts[:, mask] = 0
        self._last[:, mask] = np.nan

    def _step_values(
        self, infos: Mapping[str, Any], key: str, dones: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """This step's value of ``key`` per sub-env and where it is present (a sub-env that
        ended has its step info under ``final_info``)."""
        present = np.zeros(self.num_envs, dtype=bool)
        values = np.zeros(self.num_envs)
        if key in infos:
            m = np.asarray(infos.get("_" + key, np.ones(self.num_envs, dtype=bool))) & ~dones
            values[m] = np.asarray(infos[key], dtype=np.float64)[m]
            present |= m
        final_info = infos.get("final_info")
        if final_info is not None and key in final_info:
            m = np.asarray(final_info.get("_" + key, dones)) & dones
            values[m] = np.asarray(final_info[key], dtype=np.float64)[m]
            present |= m
        return values, present

    def _record(
        self,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: Mapping[str, Any],
        ended: list[int],
        out: list[dict[str, Any]],
    ) -> None:
        self._returns += rewards
        self._steps += 1
        if self._aggregate:
            if not ended:  # all metrics of all sub-envs at once
                keys = self._keys
                values = np.array(
                    [infos[k] if k in infos else self._zeros for k in keys], dtype=np.float64
                )
                present = np.array(
                    [infos.get("_" + k, self._trues) if k in infos else self._falses for k in keys],
                    dtype=bool,
                )
                if present.all():
                    self._sums += values
                    self._counts += 1
                    self._last[...] = values  # a copy: never alias the env's arrays
                else:
                    self._sums += np.where(present, values, 0.0)
                    self._counts += present
                    np.copyto(self._last, values, where=present)
            else:  # a sub-env that ended has its last step's info under final_info
                for j, k in enumerate(self._keys):
                    values, present = self._step_values(infos, k, dones)
                    self._sums[j] += np.where(present, values, 0.0)
                    self._counts[j] += present
                    self._last[j] = np.where(present, values, self._last[j])
        if not ended:
            return
        now = time.time()
        totals_everywhere = True
        for i in ended:
            ep: dict[str, Any] = {
                "r": round(float(self._returns[i]), 6),
                "l": self._steps - int(self._start_step[i]),
                "t": round(now - self.t_start, 6),
            }
            info = out[i]
            for j, (k, how) in enumerate(self.info_metrics.items()):
                total = info.get("episode_" + k)
                if total is not None:
                    ep[k] = float(total)
                    continue
                totals_everywhere = False
                if not self._aggregate:  # the env stopped reporting its totals
                    if not self._warned:
                        warnings.warn(
                            f"episode_{k} missing at an episode end after earlier episodes "
                            "reported it; the episode records hold NaN for it",
                            stacklevel=3,
                        )
                        self._warned = True
                    ep[k] = float("nan")
                elif how == "sum":
                    ep[k] = float(self._sums[j, i])
                elif how == "mean":
                    c = int(self._counts[j, i])
                    ep[k] = float(self._sums[j, i]) / c if c else float("nan")
                else:
                    ep[k] = float(self._last[j, i])
            if self._writers:
                self._writers[i].write_row(ep)
            info["episode"] = ep
        self._aggregate = self._aggregate and not totals_everywhere
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[ended] = True
        self._start_episodes(mask)
