"""Native vector version of ``mei_envs/EdgeLLMCache-v0`` (``vector_entry_point``).

``gym.make_vec("mei_envs/EdgeLLMCache-v0", num_envs=n, vectorization_mode="vector_entry_point")``
follows the contract of :mod:`mei_envs.vector` (SAME_STEP autoreset, sub-env ``i`` seeded
``seed + i`` reproduces the single env seeded ``seed + i``, ``action_masks()`` of shape
``(n, M + 1)``).

How it is batched, and why: each step of this env fast-forwards over a variable number of
requests (hits and misses that fit) until the next miss that needs space, and every request
changes the cache state the next one sees. The sub-envs' step counts diverge at once, so a
batched numpy step would loop over "sub-envs still fast-forwarding" with ~20 numpy calls per
request; on the decision-sparse default scenario (~1.3 requests per step) that costs more
than it saves. This vector env instead loops over the sub-envs and runs each one's own
:class:`~mei_envs.envs.edge_llm_cache.EdgeLLMCacheEnv` step (the one copy of the dynamics,
calling the domain model :mod:`mei_envs.cache`), without Gymnasium's wrappers, writing the
observations into one batch array and the lean info keys into arrays. Its speed is therefore
the single env's step speed (see the issue-12 report), not a numpy batch speed.

Infos carry the lean keys (``info="lean"`` of the single env, whatever the config's ``info``
says): the four episode-so-far ratios and the per-step sums of
``EdgeLLMCacheEnv.metadata["info_metrics"]``, plus ``episode_<key>`` on the steps that end an
episode (in ``final_info``), laid out as ``SyncVectorEnv`` lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mei_envs.envs.edge_llm_cache import (
    LEAN_LAST_KEYS,
    LEAN_SUM_KEYS,
    EdgeLLMCacheConfig,
    EdgeLLMCacheEnv,
)
from mei_envs.vector import MeiVectorEnv

_STEP_KEYS = (*LEAN_LAST_KEYS, *LEAN_SUM_KEYS)
_EPISODE_KEYS = tuple(f"episode_{k}" for k in _STEP_KEYS)


class EdgeLLMCacheVectorEnv(MeiVectorEnv):
    """``num_envs`` EdgeLLMCache-v0 episodes stepped together (see the module docstring)."""

    def __init__(
        self,
        num_envs: int = 1,
        config: EdgeLLMCacheConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        single = EdgeLLMCacheEnv(config, **kwargs)
        super().__init__(single, num_envs, render_mode)
        cfg = single.config
        lean = cfg if cfg.info == "lean" else cfg.replace(info="lean")
        self.envs = [EdgeLLMCacheEnv(lean) for _ in range(self.num_envs)]
        self.n_models = single.n_models
        self.raise_on_invalid = cfg.invalid_action == "raise"
        self._rows = np.arange(self.num_envs)

    # ---- reset -------------------------------------------------------------------------
    def _reset_envs(
        self, mask: np.ndarray, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.num_envs
        obs = getattr(self, "_last_obs", None)
        obs = (
            np.zeros((n, *self.single_observation_space.shape), np.float32) if obs is None else obs
        )
        obs = obs.copy()
        infos: dict[str, Any] = {}
        arrays = {k: np.zeros(n) for k in _STEP_KEYS}
        for i in np.flatnonzero(mask).tolist():
            env = self.envs[i]
            env._np_random = self.rngs[i]  # the sub-env's own generator, seeded seed + i
            o, info = env.reset(options=options)
            obs[i] = o
            for k in _STEP_KEYS:
                arrays[k][i] = info[k]
        for k in _STEP_KEYS:
            infos[k], infos["_" + k] = arrays[k], mask.copy()
        self._last_obs = obs
        return obs, infos

    # ---- step --------------------------------------------------------------------------
    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._check_started()
        n = self.num_envs
        acts = np.asarray(actions)
        if acts.shape != (n,) or not np.issubdtype(acts.dtype, np.integer):
            raise ValueError(
                f"actions={actions!r}: must be {n} integers in [0, {self.n_models}] "
                "(one per sub-env)"
            )
        if ((acts < 0) | (acts > self.n_models)).any():
            i = int(np.flatnonzero((acts < 0) | (acts > self.n_models))[0])
            raise ValueError(f"actions[{i}]={acts[i]}: must be in [0, {self.n_models}]")
        if self.raise_on_invalid:
            ok = self.action_masks()[self._rows, acts]
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                # The sub-env's own check raises with the legal actions; no sub-env stepped.
                self.envs[i].step(int(acts[i]))
        obs = np.empty((n, *self.single_observation_space.shape), np.float32)
        rew = np.empty(n)
        term = np.zeros(n, dtype=bool)
        arrays = {k: np.zeros(n) for k in _STEP_KEYS}
        episode: dict[str, np.ndarray] = {}
        for i, (env, a) in enumerate(zip(self.envs, acts.tolist(), strict=True)):
            o, r, t, _, info = env.step(a)
            obs[i], rew[i], term[i] = o, r, t
            for k in _STEP_KEYS:
                arrays[k][i] = info[k]
            if t:
                if not episode:
                    episode = {k: np.zeros(n) for k in _EPISODE_KEYS}
                for k in _EPISODE_KEYS:
                    episode[k][i] = info[k]
        infos: dict[str, Any] = {}
        everyone = np.ones(n, dtype=bool)
        for k in _STEP_KEYS:
            infos[k], infos["_" + k] = arrays[k], everyone
        for k in _EPISODE_KEYS if episode else ():
            infos[k], infos["_" + k] = episode[k], term
        trunc = np.zeros(n, dtype=bool)
        self._last_obs = obs
        obs, infos = self._autoreset(obs, term, trunc, infos)
        for k in _EPISODE_KEYS if episode else ():  # only in final_info (SyncVectorEnv's way)
            del infos[k], infos["_" + k]
        self._last_obs = obs
        return obs, rew, term, trunc, infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, M + 1)`` legal actions of every sub-env (a new array)."""
        return np.stack([env.action_masks() for env in self.envs])
