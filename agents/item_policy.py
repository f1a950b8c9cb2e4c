"""A MaskablePPO policy that scores every item (cached model) with one shared network.

Environments whose observation is a table of items (EdgeLLMCache-v0: one row of features per
catalog model, action ``i`` evicts model ``i``) expose that layout through
``env.unwrapped.obs_item_layout()``: ``{"n_items": M, "n_features": F, "item_blocks":
[[offset, rows], ...]}``, each block ``rows`` per-item features stored feature-major from
``offset`` (entry ``offset + k * M + m`` is feature ``k`` of item ``m``; default one block
``[0, F]``), every other entry global, and actions ``0..M-1`` acting on items ``0..M-1``;
actions from ``M`` on (the bypass) are not items.

:class:`ItemScorerPolicy` replaces the actor of ``MaskableActorCriticPolicy`` (a plain MLP
over the flat observation, whose first layer gives every model its own weights) with a
permutation-equivariant one, so what it learns about one model carries over to every other:

    h_m = enc([x_m, g])                      item m's features x_m, globals g
    c   = mean_m h_m                         the cache as a whole
    r   = sum_m x_m[req] h_m                 the pending request's embedding
    a_m = attn(h_m; h_1..h_M)                optional: multi-head self-attention over items
    s_m = sum_n R[m, n] h_n / sum_n R[m, n]  optional: the items m shares bytes with
    z_m = mix([h_m, c, r, a_m, s_m])         item m next to the cache and the request
    z_B = extra([c, r, g])                   one row per non-item action (the bypass), or,
                                             with item_bypass="request", z_B = z_req: the
                                             pending request's own row (Belady's candidate)
    logit_a = w . z_a + b                    one scorer for every action

``a_m`` (``item_attention_heads > 0``) lets a model's row weigh the others one by one instead
of only through their mean. ``s_m`` (``item_relation``: an ``(M, M)`` matrix, EdgeLLMCache-v0's
``obs_item_layout()["item_relation"]``: the share of model m's bytes that model n also uses)
pools the rows of the models that share blocks with m, so a foundation model's row sees its
children's popularity. Both are off by default (the architecture is then the one above
without them). ``item_bypass="request"`` scores the one non-item action (the bypass) with the
pending request's own row instead of a separate head: bypassing is "the request is the item to
drop", as in Belady's rule, and its score is the same function of features as every eviction.

``enc``, ``mix`` and ``extra`` are one-hidden-layer-deep MLPs of width ``item_hidden``; the
scorer starts near zero (gain 0.01, as SB3 initialises its action head), so the untrained
agent plays uniformly over the legal actions. The critic is SB3's MLP on the flat
observation (``net_arch``'s ``vf`` part). ``request_feature`` names the item feature that
marks the pending request (EdgeLLMCache-v0: feature 1, "requested now").

The rows are read from the raw observation: train with ``normalize: dict(norm_obs=False,
...)`` (EdgeLLMCache-v0's observation is already in [0, 1]); per-entry ``VecNormalize``
statistics would give each model's row its own scale and undo the weight sharing.

Use: ``policy: ItemScorerPolicy`` in the hyperparameters (``--hp policy=ItemScorerPolicy``);
the trainer fills ``n_items`` and ``n_features`` from the env, and ``item_relation`` when the
policy kwargs ask for it with ``item_relation=True``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn

POLICY_NAME = "ItemScorerPolicy"


class ItemExtractor(nn.Module):
    """The actor's permutation-equivariant latent (one ``hidden``-wide row per action) and
    the critic's MLP latent, in SB3's ``mlp_extractor`` interface."""

    def __init__(
        self,
        obs_dim: int,
        n_items: int,
        n_features: int,
        n_actions: int,
        hidden: int,
        vf_arch: list[int],
        activation_fn: type[nn.Module],
        request_feature: int,
        item_blocks: list[list[int]],
        attention_heads: int = 0,
        relation: np.ndarray | None = None,
        bypass: str = "extra",
    ) -> None:
        super().__init__()
        self.bypass_from_request = bypass == "request"
        self.M, self.F, self.hidden = n_items, n_features, hidden
        self.G = obs_dim - n_items * n_features
        table = np.concatenate(
            [off + np.arange(rows * n_items).reshape(rows, n_items) for off, rows in item_blocks]
        )  # table[k, m]: the observation entry of feature k of item m
        rest = np.setdiff1d(np.arange(obs_dim), table.ravel())
        self.register_buffer(
            "table_idx", th.as_tensor(table.T.ravel(), dtype=th.long), persistent=False
        )
        self.register_buffer("global_idx", th.as_tensor(rest, dtype=th.long), persistent=False)
        self.n_extra = n_actions - n_items
        self.request_feature = request_feature
        act = activation_fn
        self.enc = nn.Sequential(
            nn.Linear(n_features + self.G, hidden), act(), nn.Linear(hidden, hidden), act()
        )
        self.attn = (
            nn.MultiheadAttention(hidden, attention_heads, batch_first=True)
            if attention_heads > 0
            else None
        )
        if relation is not None:
            rel = np.asarray(relation, dtype=np.float64)
            rows = rel.sum(axis=1, keepdims=True)
            rel = np.divide(rel, rows, out=np.zeros_like(rel), where=rows > 0)
            self.register_buffer("relation", th.as_tensor(rel, dtype=th.float32), persistent=False)
        else:
            self.relation = None
        width_mix = hidden * (3 + (self.attn is not None) + (relation is not None))
        self.mix = nn.Sequential(nn.Linear(width_mix, hidden), act())
        self.extra = (
            None
            if self.bypass_from_request
            else nn.Sequential(
                nn.Linear(2 * hidden + self.G, hidden),
                act(),
                nn.Linear(hidden, self.n_extra * hidden),
                act(),  # bounded like the items' rows, so no action's score starts out of scale
            )
        )
        layers: list[nn.Module] = []
        width = obs_dim
        for size in vf_arch:
            layers += [nn.Linear(width, size), act()]
            width = size
        self.value = nn.Sequential(*layers)
        self.latent_dim_pi = n_actions * hidden
        self.latent_dim_vf = width

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        B, M, F = features.shape[0], self.M, self.F
        items = features[:, self.table_idx].reshape(B, M, F)
        g = features[:, self.global_idx]
        h = self.enc(th.cat([items, g.unsqueeze(1).expand(B, M, self.G)], dim=2))
        c = h.mean(dim=1)
        req = th.einsum("bm,bmh->bh", items[:, :, self.request_feature], h)
        ctx = th.cat([c, req], dim=1).unsqueeze(1).expand(B, M, 2 * self.hidden)
        parts = [h, ctx]
        if self.attn is not None:
            parts.append(self.attn(h, h, h, need_weights=False)[0])
        if self.relation is not None:
            parts.append(th.einsum("mn,bnh->bmh", self.relation, h))
        z = self.mix(th.cat(parts, dim=2))
        if self.bypass_from_request:  # the pending request's own row
            zx = th.einsum("bm,bmh->bh", items[:, :, self.request_feature], z).unsqueeze(1)
        else:
            zx = self.extra(th.cat([c, req, g], dim=1)).reshape(B, self.n_extra, self.hidden)
        return th.cat([z, zx], dim=1).reshape(B, -1)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value(features)


class SlotScorer(nn.Module):
    """One linear scorer applied to each action's ``hidden``-wide row: ``(B, A * H) -> (B, A)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.score = nn.Linear(hidden, 1)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        return self.score(latent.reshape(latent.shape[0], -1, self.hidden)).squeeze(-1)


class ItemScorerPolicy(MaskableActorCriticPolicy):
    """``MaskableActorCriticPolicy`` with a shared per-item actor (see the module docstring)."""

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        lr_schedule: Any,
        *args: Any,
        n_items: int = 0,
        n_features: int = 0,
        item_hidden: int = 64,
        request_feature: int = 1,
        item_blocks: list[list[int]] | None = None,
        item_attention_heads: int = 0,
        item_relation: Any = None,
        item_bypass: str = "extra",
        **kwargs: Any,
    ) -> None:
        dim = int(np.prod(observation_space.shape))
        n = int(action_space.n)
        blocks = [[0, int(n_features)]] if item_blocks is None else item_blocks
        blocks = [[int(off), int(rows)] for off, rows in blocks]
        spans = sorted((off, off + rows * int(n_items)) for off, rows in blocks)
        if (
            sum(rows for _, rows in blocks) != n_features
            or any(rows < 1 for _, rows in blocks)
            or spans[0][0] < 0
            or spans[-1][1] > dim
            or any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False))
        ):
            raise ValueError(
                f"ItemScorerPolicy: item_blocks={item_blocks}: need [offset, rows] blocks of "
                f"{n_items} entries per row inside the {dim}-entry observation, not overlapping, "
                f"with rows adding up to n_features={n_features}"
            )
        if not (
            1 <= n_items < n
            and 1 <= n_features
            and n_items * n_features <= dim
            and 0 <= request_feature < n_features
            and item_hidden >= 1
        ):
            raise ValueError(
                f"ItemScorerPolicy: n_items={n_items}, n_features={n_features}, "
                f"request_feature={request_feature}, item_hidden={item_hidden}: need 1 <= "
                f"n_items < {n} actions, n_items * n_features <= {dim} observation entries, "
                "0 <= request_feature < n_features and item_hidden >= 1 (the env's "
                "obs_item_layout() gives n_items and n_features)"
            )
        heads = item_attention_heads
        if (
            isinstance(heads, bool)
            or not isinstance(heads, (int, np.integer))
            or heads < 0
            or (heads > 0 and item_hidden % heads != 0)
        ):
            raise ValueError(
                f"ItemScorerPolicy: item_attention_heads={heads!r}: need an int >= 0 (0: no "
                f"attention) that divides item_hidden={item_hidden}"
            )
        relation = None
        if item_relation is not None:
            relation = np.asarray(item_relation, dtype=np.float64)
            if (
                relation.shape != (int(n_items), int(n_items))
                or not np.isfinite(relation).all()
                or (relation < 0).any()
            ):
                raise ValueError(
                    f"ItemScorerPolicy: item_relation of shape {relation.shape}: need a "
                    f"({n_items}, {n_items}) matrix of finite values >= 0 (the env's "
                    "obs_item_layout()['item_relation']; pass item_relation=True to the "
                    "trainer to have it filled)"
                )
        if item_bypass not in ("extra", "request") or (
            item_bypass == "request" and int(action_space.n) - int(n_items) != 1
        ):
            raise ValueError(
                f"ItemScorerPolicy: item_bypass={item_bypass!r}: need 'extra' (a head of its "
                "own for every non-item action) or 'request' (exactly one non-item action, "
                f"scored with the pending request's row; this space has {int(action_space.n)} "
                f"actions for {n_items} items)"
            )
        self.item_bypass = item_bypass
        self.item_attention_heads = int(heads)
        self.item_relation = None if relation is None else relation.tolist()
        self.n_items, self.n_features = int(n_items), int(n_features)
        self.item_hidden, self.request_feature = int(item_hidden), int(request_feature)
        self.item_blocks = blocks
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            n_items=self.n_items,
            n_features=self.n_features,
            item_hidden=self.item_hidden,
            request_feature=self.request_feature,
            item_blocks=self.item_blocks,
            item_attention_heads=self.item_attention_heads,
            item_relation=self.item_relation,
            item_bypass=self.item_bypass,
        )
        return data

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch
        vf = list(arch.get("vf", [])) if isinstance(arch, dict) else list(arch or [])
        self.mlp_extractor = ItemExtractor(
            self.features_dim,
            self.n_items,
            self.n_features,
            int(self.action_space.n),
            self.item_hidden,
            vf,
            self.activation_fn,
            self.request_feature,
            self.item_blocks,
            self.item_attention_heads,
            None if self.item_relation is None else np.asarray(self.item_relation),
            self.item_bypass,
        ).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = SlotScorer(self.item_hidden).to(self.device)
        if self.ortho_init:
            self.action_net.apply(lambda m: self.init_weights(m, gain=0.01))
        self.optimizer = self.optimizer_class(
            self.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
