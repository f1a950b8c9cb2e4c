"""A rollout oracle for ``mei_envs/EdgeLLMCache-v0``: one-step lookahead over the legal
actions, each followed by offline base policies (Bertsekas, *Rollout, Policy Iteration, and
Distributed Reinforcement Learning*, 2020, ch. 2: rollout with a "superheuristic").

At a decision, ``rollout`` tries every legal action (each eviction that frees bytes, and the
bypass) from a snapshot of the env, lets each base policy (default: ``belady`` and
``belady_bytes``, both of which read the future requests; ``belady_bytes`` is the rule that was
named ``belady_shared`` up to session 5, so rollout's numbers are unchanged) play on from
there, and takes the action with the best return of any base. The env's dynamics are
deterministic once the request sequence is drawn, and the bases are functions of the state
and the time (``belady_shared`` too: its solves are memoised per anchor time), so with
the whole remaining episode as horizon (``horizon=None``) the rollout policy is at least as
good as every base policy on every episode (the cost-improvement property of rollout with
sequentially consistent bases); the tests check this, and that it never beats the exact
``offline_opt``, on tiny instances. With a finite ``horizon`` (decisions looked ahead; the
default 50 keeps a 1000-request episode to about a minute) the guarantee is lost: it is then
a stronger offline reference in practice, measured against the others in
``experiments/figures/edge_llm_cache_note.md``, not an optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mei_envs.baselines.edge_llm_cache import (
    ENV_ID,
    BeladyBytesPolicy,
    BeladyPolicy,
    BeladySharedPolicy,
    TrimGreedyPolicy,
    _CachePolicy,
)
from mei_envs.baselines.registry import register_policy

BASES = {
    "belady": BeladyPolicy,
    "belady_bytes": BeladyBytesPolicy,
    "belady_shared": BeladySharedPolicy,
    "trim_greedy": TrimGreedyPolicy,
}


class RolloutPolicy(_CachePolicy):
    """Best legal action by lookahead: each candidate, then each base policy, for
    ``horizon`` decisions (None: to the episode's end). Ties go to the lowest model id, the
    bypass last."""

    def __init__(
        self,
        env: gym.Env,
        bases: Sequence[str] = ("belady", "belady_bytes"),
        horizon: int | None = 50,
    ) -> None:
        super().__init__(env)
        if isinstance(bases, str):
            bases = (bases,)
        unknown = [b for b in bases if b not in BASES]
        if not bases or unknown:
            raise ValueError(f"rollout: bases={list(bases)!r}: each must be one of {list(BASES)}")
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1
        ):
            raise ValueError(f"rollout: horizon={horizon!r}: must be None or an integer >= 1")
        self.horizon = None if horizon is None else int(horizon)
        self.bases = [BASES[b](env) for b in bases]

    def reset(self, obs: Any, info: Any) -> None:
        for base in self.bases:
            base.reset(obs, info)

    def choose(self, s: dict[str, Any], legal: np.ndarray) -> int:
        env = self.env
        root = env.snapshot()
        best, arg = -np.inf, self.bypass
        try:
            for a in [*legal.tolist(), self.bypass]:
                for base in self.bases:
                    env.restore(root)
                    v = self._play(a, base)
                    if v > best + 1e-12:
                        best, arg = v, a
        finally:
            env.restore(root)
        return arg

    def _play(self, action: int, base: _CachePolicy) -> float:
        """Return of ``action`` then ``base`` for ``horizon`` more decisions."""
        env = self.env
        _, total, term, trunc, _ = env.step(action)
        k = 0
        while not (term or trunc) and (self.horizon is None or k < self.horizon):
            _, r, term, trunc, _ = env.step(base.act(None, None))
            total += r
            k += 1
        return float(total)


register_policy(
    ENV_ID,
    "rollout",
    RolloutPolicy,
    kind="oracle",
    description="lookahead over legal actions with belady/belady_bytes playing on "
    "(reads the future requests; horizon 50 decisions)",
)
