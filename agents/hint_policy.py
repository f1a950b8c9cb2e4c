"""A MaskablePPO policy that starts from the hinted heuristic: a residual on its action.

With an observation hint (:mod:`mei_envs.agents.hint`, feature ``"action"``) the observation
carries a one-hot of the heuristic's action at ``obs[hint_start : hint_start + n]``.
:class:`HintResidualPolicy` adds ``hint_logit`` to the logit of that action:

    logits = action_net(latent) + hint_logit * onehot(heuristic's action)

so the untrained agent (``action_net`` starts near zero: SB3 initialises it with gain 0.01)
plays the heuristic with probability ``e^b / (e^b + k - 1)`` among ``k`` legal actions, and
PPO learns where to deviate. The agent is a learned correction on top of the heuristic.
``hint_logit = 0`` is plain MaskablePPO on the hinted observation.

The one-hot is read as ``obs > 0`` on the slice, which holds before and after
``VecNormalize`` (a 0/1 feature normalises to a negative value for 0 and a positive one for
1 whenever it varies; a feature that never varied is 0 and reads as "not hinted").

Use: ``policy: HintResidualPolicy`` in the hyperparameters (``--hp policy=HintResidualPolicy``)
with ``--hint``; the trainer fills ``hint_start`` and ``hint_size`` from the env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

POLICY_NAME = "HintResidualPolicy"


class HintResidualPolicy(MaskableActorCriticPolicy):
    """``MaskableActorCriticPolicy`` whose logits get ``hint_logit`` on the hinted action."""

    def __init__(
        self,
        *args: Any,
        hint_start: int = -1,
        hint_size: int = 0,
        hint_logit: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        n = int(self.action_space.n)
        dim = int(np.prod(self.observation_space.shape))
        if hint_size != n or not 0 <= hint_start <= dim - n:
            raise ValueError(
                f"HintResidualPolicy: hint_start={hint_start}, hint_size={hint_size}: need the "
                f"one-hot of the hint's action ({n} entries) inside the {dim}-entry observation; "
                "train with --hint and the 'action' hint feature"
            )
        self.hint_start, self.hint_size, self.hint_logit = int(hint_start), n, float(hint_logit)
        self._hint_bias: th.Tensor | None = None

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            hint_start=self.hint_start, hint_size=self.hint_size, hint_logit=self.hint_logit
        )
        return data

    def _set_hint(self, obs: th.Tensor) -> None:
        hot = obs[..., self.hint_start : self.hint_start + self.hint_size] > 0
        self._hint_bias = hot.to(th.float32) * self.hint_logit

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> MaskableDistribution:
        logits = self.action_net(latent_pi)
        if self._hint_bias is not None:
            logits = logits + self._hint_bias
        return self.action_dist.proba_distribution(action_logits=logits)

    # Each entry point that builds the action distribution records its observations' hint
    # first (the same batch the distribution is computed for).
    def forward(self, obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
        self._set_hint(obs)
        return super().forward(obs, *args, **kwargs)

    def evaluate_actions(self, obs: th.Tensor, *args: Any, **kwargs: Any) -> Any:
        self._set_hint(obs)
        return super().evaluate_actions(obs, *args, **kwargs)

    def get_distribution(self, obs: Any, *args: Any, **kwargs: Any) -> MaskableDistribution:
        self._set_hint(obs)
        return super().get_distribution(obs, *args, **kwargs)
