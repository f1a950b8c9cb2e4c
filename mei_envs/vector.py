"""Shared plumbing of the native vectorised environments.

Every env of mei-envs has a native vector version (its registration's ``vector_entry_point``),
so ``gymnasium.make_vec(id, num_envs=n, vectorization_mode="vector_entry_point")`` steps all
``n`` sub-envs with numpy arrays. They all follow one contract, implemented here once:

- **Seeding.** Sub-env ``i`` owns its own ``numpy.random.Generator``, made exactly as a single
  env's ``reset(seed=s)`` makes its ``np_random`` (``gymnasium.utils.seeding.np_random``).
  ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (``SyncVectorEnv``'s convention);
  ``reset(seed=[s0, s1, ...])`` gives each its own; ``reset()`` keeps the generators. So sub-env
  ``i`` reproduces the single env seeded ``s + i`` step by step, across episodes too.
- **Autoreset:** ``AutoresetMode.SAME_STEP``. When sub-env ``i`` ends, the same ``step`` resets
  it and returns its first observation; the last observation and info are in
  ``infos["final_obs"][i]`` (an object array, ``None`` elsewhere) and ``infos["final_info"]``,
  with the boolean masks ``infos["_final_obs"]`` and ``infos["_final_info"]``: the layout of
  ``SyncVectorEnv(..., autoreset_mode=SAME_STEP)`` over the single envs.
- **Infos** are dicts of arrays with ``_key`` masks (Gymnasium's vector convention).

A subclass sets ``single_env_class``, builds its batched state in ``_setup(single_env)``, and
implements ``_reset_envs(mask, options)`` (draw new episodes for the sub-envs in
``mask`` from ``self.rngs[i]``, exactly as the single env's ``reset`` draws them) and the
batched ``_step(actions)`` (validate, step, call ``_autoreset`` at its end), which the base's
``step`` calls once ``reset`` has been called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

#: What a vector env's ``step`` returns: observations, rewards, terminated, truncated, infos.
VectorStep = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def check_num_envs(num_envs: Any) -> int:
    """``num_envs`` as an int >= 1, or a ValueError naming it."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r}: must be an integer >= 1")
    return int(num_envs)


def seed_list(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-sub-env seeds: ``s + i`` for an int, the sequence itself (length ``num_envs``),
    or ``None`` for each when ``seed`` is None."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed={seed!r}: a sequence of seeds needs {num_envs} entries")
    return seeds


class MeiVectorEnv(VectorEnv):
    """Base class of the native vector envs (see the module docstring for the contract).

    ``XVectorEnv(num_envs, config=None, render_mode=None, **kwargs)`` takes the single env's
    arguments: it builds one ``single_env_class`` instance from them (``self.single_env``),
    takes its spaces, config and domain model, never steps it, and calls ``_setup``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    #: The single env this vector env batches: ``single_env_class(config, render_mode,
    #: **kwargs)`` validates the config and builds the spaces and the domain model once.
    single_env_class: ClassVar[type[gym.Env]]

    def __init__(
        self,
        num_envs: int = 1,
        config: Any = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: this env has no render modes")
        num_envs = check_num_envs(num_envs)
        single_env = self.single_env_class(config, render_mode, **kwargs)
        self.num_envs = num_envs
        self.single_env = single_env
        self.config = getattr(single_env, "config", None)
        self.single_observation_space = single_env.observation_space
        self.single_action_space = single_env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**type(self).metadata, **single_env.metadata}
        self.metadata["autoreset_mode"] = AutoresetMode.SAME_STEP
        self.render_mode = None
        self.rngs: list[np.random.Generator] = []
        self._started = False
        self._setup(single_env)

    def _setup(self, single_env: gym.Env) -> None:
        """Build the batched state from the single env (spaces, config are set)."""

    # ---- seeding and reset -------------------------------------------------------------
    def _seed(self, seed: int | Sequence[int | None] | None) -> None:
        seeds = seed_list(seed, self.num_envs)
        if not self.rngs:
            self.rngs = [seeding.np_random(s)[0] for s in seeds]
            return
        for i, s in enumerate(seeds):
            if s is not None:
                self.rngs[i] = seeding.np_random(s)[0]

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        self._seed(seed)
        self._started = True
        return self._reset_envs(np.ones(self.num_envs, dtype=bool), options)

    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start new episodes in the sub-envs where ``mask`` is True; return the batched
        observation (all sub-envs) and the reset infos (the masked sub-envs')."""
        raise NotImplementedError

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError(f"{type(self).__name__}.step called before reset()")

    # ---- step --------------------------------------------------------------------------
    def step(self, actions: Any) -> VectorStep:
        """Step every sub-env (``_step``); a RuntimeError before the first ``reset``."""
        self._check_started()
        return self._step(actions)

    def _step(self, actions: Any) -> VectorStep:
        """The batched step: validate ``actions`` (a ValueError naming them, state unchanged),
        advance every sub-env and end with ``_autoreset``."""
        raise NotImplementedError

    # ---- SAME_STEP autoreset -----------------------------------------------------------
    def _autoreset(
        self,
        obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        infos: dict[str, Any],
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the sub-envs that ended; return the observation to hand out (their first
        observations in place of the last) and ``infos`` with ``final_obs``/``final_info``."""
        done = terminated | truncated
        if not done.any():
            return obs, infos
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            final_obs[i] = obs[i].copy()
        final_info = _masked(infos, done)
        new_obs, reset_infos = self._reset_envs(done)
        out = _merge(infos, reset_infos, done)
        out["final_obs"], out["_final_obs"] = final_obs, done.copy()
        out["final_info"], out["_final_info"] = final_info, done.copy()
        return new_obs, out


def _merge(step: dict[str, Any], reset: dict[str, Any], done: np.ndarray) -> dict[str, Any]:
    """Top-level infos after an autoreset, as ``SyncVectorEnv`` builds them: a sub-env that
    ended reports its reset info (its step info moves to ``final_info``), the others their
    step info."""
    out: dict[str, Any] = {}
    for k in [k for k in step if not k.startswith("_")]:
        out[k], out["_" + k] = step[k], step["_" + k] & ~done
    for k in [k for k in reset if not k.startswith("_")]:
        rm = reset["_" + k] & done
        if k in out:
            v = np.array(out[k], copy=True)
            v[rm] = reset[k][rm]
            out[k], out["_" + k] = v, out["_" + k] | rm
        else:
            out[k], out["_" + k] = reset[k], rm
    return out


def _masked(info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """``info`` restricted to the sub-envs in ``mask`` (values kept, ``_key`` masks ANDed)."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        if k.startswith("_"):
            continue
        present = info.get("_" + k)
        out[k], out["_" + k] = v, (mask.copy() if present is None else present & mask)
    return out
