"""Training progress of LoRA fine-tuning: held-out loss versus tokens processed (numpy only).

The model (used by SplitFedAlloc-v0, its baselines and its oracles)::

    L(u; r, t) = L_inf(r, t) + (L_0 - L_inf(r, t)) / (1 + (u / tau(r, t)) ** k_t)
    L_inf(r, t) = E_t + A_t * r ** (-beta_t)        (capacity floor of rank r, targets t)
    tau(r, t)   = S_t * r ** (-gamma)               (token scale of the decay)
    u           = sum over steps of eta * B / (1 + B / B_crit)   (effective tokens)
    eta         = 1 / (1 + phi * (kappa * Gamma + zeta(Gamma) * (I - 1))),
    zeta        = z_iid + Gamma (z_noniid - z_iid)

The log-logistic decay (flat start, power-law tail ``u ** -k``) follows the measured
curves: LoRA starts with ``B = 0``, so the loss first falls slowly, then fast, then slowly.

``B`` is the number of tokens in one optimizer step (a round of split-federated learning
averages the gradients/adapters of all devices' batches, so ``B = N b s``).

* **Rank and targets.** Higher rank lowers the floor with diminishing returns (Hu et al.
  2021, Table 6: on GPT-3 rank 1-64 barely matters for q,v adapters, so ``A_t`` is small
  when the task is easy); adapters on every linear layer reach lower loss than
  attention-only ones (QLoRA, Dettmers et al. 2023: all-linear targets are needed to match
  full fine-tuning) -> one ``E_t, A_t, beta_t, S_t, k_t`` per target class. ``gamma``
  measures whether higher ranks also converge faster: with peft's default ``alpha/r`` scaling rsLoRA
  (Kalajdzievski 2023) finds they do not (``gamma ~ 0``).
* **Batch size.** Tokens in a larger batch are worth less per token: McCandlish et al. 2018
  ("An Empirical Model of Large-Batch Training", arXiv 1812.06162) find the tokens needed
  grow as ``E_min (1 + B / B_noise)``, so one step of ``B`` tokens is worth
  ``B / (1 + B / B_crit)`` small-batch tokens; ``B_crit`` is fitted from centralised steps
  (one batch) against FedAvg rounds (``n_clients`` batches per averaged step).
* **Aggregation interval and non-IID drift.** With FedAvg every ``I`` local steps, the
  client-drift term of Li et al. (ICLR 2020, "On the convergence of FedAvg on non-IID data")
  grows with ``I - 1`` and with the data heterogeneity ``Gamma``, and heterogeneous clients
  cost progress even when averaging every step (``kappa``, measured); here they lower the
  efficiency ``eta`` of each token (``Gamma`` in [0, 1]: 0 = IID clients, 1 = each client
  sees one topic, as in the fitting run). ``phi`` is the share of the adapters that is
  averaged (device-side layers in split-federated learning; 1 in FL; 0 in sequential SL).
* **Changing rank mid-training.** :func:`advance` maps the current loss to the effective
  tokens that reach it at the new rank (the inverse curve) and moves on from there; a loss
  already at or below the new rank's floor stays (the loss never increases).

The parameters are FITTED to real LoRA fine-tuning curves by
``experiments/fit_training_progress.py`` and shipped in ``mei_envs/data/training_progress.json``
with the raw curves, the fit's error, the seed and the library versions. The fit's losses are
nats/token on generated text; an env maps its token counts onto the fit's with a multiplier
(its config), since a 1B-parameter model on real text has its own scale.

Every function broadcasts over numpy arrays (rank, targets' index, loss, tokens).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "TARGET_CLASSES",
    "TRAINING_PROGRESS_JSON",
    "TrainingProgressParams",
    "TrainingSegment",
    "advance",
    "drift_efficiency",
    "effective_tokens",
    "floor_loss",
    "load_params",
    "loss_curve",
    "tokens_to_loss",
]

TRAINING_PROGRESS_JSON = Path(__file__).parent / "data" / "training_progress.json"
# Target classes of the fit: "attention" = adapters on the q, k, v projections (GPT-2's fused
# c_attn); "all_linear" = every linear layer of the block.
TARGET_CLASSES: tuple[str, ...] = ("attention", "all_linear")


@dataclasses.dataclass(frozen=True)
class TrainingProgressParams:
    """Fitted parameters (see the module docstring for the formula); per-class fields are
    dicts keyed by :data:`TARGET_CLASSES`.

    Attributes:
        initial_loss: ``L_0``, loss of the pre-trained model on the fine-tuning data [nats].
        floor_loss: ``E_t`` [nats].
        capacity_gap: ``A_t`` [nats].
        capacity_exponent: ``beta_t``.
        tokens_scale: ``S_t`` [tokens].
        decay_exponent: ``k_t``.
        rank_speed_exponent: ``gamma``.
        drift_iid: ``zeta`` for IID clients.
        drift_noniid: ``zeta`` for one-topic-per-client clients.
        noniid_penalty: ``kappa``.
        critical_batch_tokens: ``B_crit`` [tokens].
    """

    initial_loss: float
    floor_loss: dict[str, float]
    capacity_gap: dict[str, float]
    capacity_exponent: dict[str, float]
    tokens_scale: dict[str, float]
    decay_exponent: dict[str, float]
    rank_speed_exponent: float
    drift_iid: float
    drift_noniid: float
    noniid_penalty: float
    critical_batch_tokens: float

    def __post_init__(self) -> None:
        for field in _PER_CLASS:
            table = getattr(self, field)
            for cls_ in TARGET_CLASSES:
                if cls_ not in table:
                    raise ValueError(f"TrainingProgressParams.{field}: missing class {cls_!r}")
        for cls_ in TARGET_CLASSES:
            if not self.initial_loss > self.floor_loss[cls_] >= 0.0:
                raise ValueError(
                    f"TrainingProgressParams: need initial_loss={self.initial_loss!r} > "
                    f"floor_loss[{cls_!r}]={self.floor_loss[cls_]!r} >= 0"
                )
            if self.decay_exponent[cls_] <= 0 or self.tokens_scale[cls_] <= 0:
                raise ValueError("TrainingProgressParams: decay_exponent, tokens_scale must be > 0")
        if self.critical_batch_tokens <= 0:
            raise ValueError("TrainingProgressParams: critical_batch_tokens must be > 0")


_PER_CLASS = ("floor_loss", "capacity_gap", "capacity_exponent", "tokens_scale", "decay_exponent")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> TrainingProgressParams:
    data = json.loads(Path(path).read_text())
    return TrainingProgressParams(**data["params"])


def load_params(path: str | Path | None = None) -> TrainingProgressParams:
    """The fitted parameters shipped with the package (or from another fit's JSON)."""
    return _load(str(TRAINING_PROGRESS_JSON if path is None else path))


def _target_index(targets: Any) -> np.ndarray:
    """Target class name(s) -> 0 (attention) / 1 (all_linear); ints pass through."""
    arr = np.asarray(targets)
    if arr.dtype.kind in "iu":
        return arr
    if arr.ndim == 0:
        name = str(arr)
        if name not in TARGET_CLASSES:
            raise ValueError(f"targets={name!r}: must be one of {list(TARGET_CLASSES)}")
        return np.asarray(TARGET_CLASSES.index(name))
    return np.vectorize(lambda t: TARGET_CLASSES.index(str(t)))(arr)


def _per_target(p: TrainingProgressParams, field: str, t: np.ndarray) -> np.ndarray:
    table = getattr(p, field)
    return np.asarray([table[c] for c in TARGET_CLASSES])[t]


def floor_loss(p: TrainingProgressParams, rank: Any, targets: Any) -> Any:
    """``L_inf(r, t) = E_t + A_t r^-beta_t``: the loss rank ``r`` approaches with many tokens."""
    t = _target_index(targets)
    r = np.asarray(rank, dtype=float)
    gap = _per_target(p, "capacity_gap", t)
    return _per_target(p, "floor_loss", t) + gap * r ** (-_per_target(p, "capacity_exponent", t))


def _scale(p: TrainingProgressParams, rank: Any, targets: Any) -> Any:
    t = _target_index(targets)
    r = np.asarray(rank, dtype=float)
    return _per_target(p, "tokens_scale", t) * r ** (-p.rank_speed_exponent)


def drift_efficiency(
    p: TrainingProgressParams, interval: Any, noniid: Any, device_share: Any
) -> Any:
    """``eta = 1 / (1 + phi (kappa Gamma + zeta(Gamma) (I - 1)))``: useful share of a token."""
    g = np.asarray(noniid, float)
    zeta = np.maximum(p.drift_iid + g * (p.drift_noniid - p.drift_iid), 0.0)
    excess = np.asarray(interval, float) - 1.0
    drift = p.noniid_penalty * g + zeta * excess
    return 1.0 / (1.0 + np.asarray(device_share, float) * drift)


def effective_tokens(
    p: TrainingProgressParams,
    tokens: Any,
    batch_tokens: Any,
    *,
    interval: Any = 1,
    noniid: Any = 0.0,
    device_share: Any = 1.0,
) -> Any:
    """Effective tokens ``u`` of ``tokens`` tokens processed in steps of ``batch_tokens``."""
    b = np.asarray(batch_tokens, float)
    per_token = drift_efficiency(p, interval, noniid, device_share) / (
        1.0 + b / p.critical_batch_tokens
    )
    return np.asarray(tokens, float) * per_token


class _SegmentRequired(TypedDict):
    batch_tokens: Any  # tokens per optimizer step ``B``


class TrainingSegment(_SegmentRequired, total=False):
    """Keywords saying how a stretch of tokens is trained (:func:`loss_curve`,
    :func:`advance`); passed on to :func:`effective_tokens`, which holds their defaults."""

    interval: Any  # local steps between aggregations ``I`` (default 1)
    noniid: Any  # data heterogeneity ``Gamma`` in [0, 1] (default 0.0)
    device_share: Any  # share ``phi`` of the adapters that is averaged (default 1.0)


def _loss_at(p: TrainingProgressParams, u: Any, rank: Any, targets: Any) -> Any:
    """``L(u; r, t)``: the loss after ``u`` effective tokens from the pre-trained model."""
    lf = floor_loss(p, rank, targets)
    k = _per_target(p, "decay_exponent", _target_index(targets))
    return lf + (p.initial_loss - lf) / (1.0 + (u / _scale(p, rank, targets)) ** k)


def loss_curve(
    p: TrainingProgressParams,
    tokens: Any,
    rank: Any,
    targets: Any,
    **segment: Unpack[TrainingSegment],
) -> Any:
    """Loss after ``tokens`` tokens (in steps of ``batch_tokens``) from the pre-trained
    model at a fixed rank and interval (``segment``: see :class:`TrainingSegment`)."""
    return _loss_at(p, effective_tokens(p, tokens, **segment), rank, targets)


def tokens_to_loss(p: TrainingProgressParams, loss: Any, rank: Any, targets: Any) -> Any:
    """Effective tokens at which rank ``r`` reaches ``loss`` (``inf`` at or below its floor;
    0 at or above the initial loss)."""
    lf = floor_loss(p, rank, targets)
    loss = np.asarray(loss, float)
    k = _per_target(p, "decay_exponent", _target_index(targets))
    frac = np.clip((loss - lf) / (p.initial_loss - lf), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        u = _scale(p, rank, targets) * np.maximum(1.0 / frac - 1.0, 0.0) ** (1.0 / k)
    return np.where(frac > 0.0, u, np.inf)


def advance(
    p: TrainingProgressParams,
    loss: Any,
    tokens: Any,
    rank: Any,
    targets: Any,
    **segment: Unpack[TrainingSegment],
) -> Any:
    """Loss after ``tokens`` more tokens (in steps of ``batch_tokens``) from ``loss`` at rank
    ``rank`` (never increases; ``segment``: see :class:`TrainingSegment`)."""
    loss = np.asarray(loss, float)
    u0 = tokens_to_loss(p, loss, rank, targets)
    u = u0 + effective_tokens(p, tokens, **segment)
    with np.errstate(invalid="ignore"):
        new = _loss_at(p, u, rank, targets)
    out = np.where(np.isfinite(u0), np.minimum(new, loss), loss)
    return float(out) if out.ndim == 0 else out
