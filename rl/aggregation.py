"""Which tokens a loss reads, how they are weighted, and how the terms become one number.

Three small registries: ``LOSS_MASKS`` (the tokens), ``TOKEN_WEIGHTS`` (per-token
factors of token-level terms: ``outer · (inner · policy + β·KL)``) and
``AGGREGATIONS`` (the reduction; ``levels`` lists the policy-loss levels it accepts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unmask.rl.estimators import Scores
from unmask.rl.losses import masked_mean
from unmask.rl.policy_losses import LossInputs
from unmask.rl.registry import Registry

LOSS_MASKS: Registry[Callable[[Any, Scores, Any], torch.Tensor]] = Registry("loss mask")
TOKEN_WEIGHTS: Registry[Callable[[Any, Scores, torch.Tensor, Any], tuple[torch.Tensor | None, torch.Tensor]]] = (
    Registry("token weight")
)
AGGREGATIONS: Registry[Callable[[torch.Tensor, LossInputs], torch.Tensor]] = Registry("loss aggregation")


@LOSS_MASKS.register("answer")
def answer_mask(batch: Any, scores: Scores, config: Any) -> torch.Tensor:
    """Answer tokens up to the first EOS that the estimator scored."""
    return batch.traj.answer_mask & scores.mask


@LOSS_MASKS.register("scored")
def scored_mask(batch: Any, scores: Scores, config: Any) -> torch.Tensor:
    """Every token the estimator scored (the EOS fill too where the estimator scores it)."""
    return scores.mask


@TOKEN_WEIGHTS.register("estimator")
def estimator_weight(batch: Any, scores: Scores, mask: torch.Tensor, config: Any) -> tuple[None, torch.Tensor]:
    """The estimator's own per-token weight on the policy term (``1/t`` for an ELBO, else 1)."""
    return None, scores.weight


@AGGREGATIONS.register("token_mean", levels=("token",))
def token_mean(values: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """Mean over every selected token of the micro-batch (d1, GRPO)."""
    return masked_mean(values, x.mask)


@AGGREGATIONS.register("sequence_mean", levels=("token", "sequence"))
def sequence_mean(values: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """Mean over items of each item's token mean (MDPO), or of the per-item terms."""
    return values.mean() if values.dim() == 1 else masked_mean(values, x.mask, dim=1).mean()


@AGGREGATIONS.register("constant", levels=("token",))
def constant(values: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """Dr.GRPO: the selected tokens' sum over the constant ``B·L``, so no answer length reweights a token."""
    return (values * x.mask.to(values.dtype)).sum() / (values.shape[0] * x.length)


@AGGREGATIONS.register("valid_answers", levels=("token",))
def valid_answers(values: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """JustGRPO: ``Σ / (L·n_v)``, ``n_v`` the micro-batch's answers with ``A ≠ 0`` (0 when there are none).

    An item counts as the share of its answer's ``L`` positions it scores, so an answer split
    into chunk items counts once, and a whole scored answer exactly once.
    """
    valid = (x.mask.sum(1) * (x.advantages != 0)).sum() / x.length
    return (values * x.mask.to(values.dtype)).sum() / (x.length * valid.clamp(min=1 / x.length))


@AGGREGATIONS.register("answer_tokens", levels=("sequence",))
def answer_tokens(values: torch.Tensor, x: LossInputs) -> torch.Tensor:
    """SPG: the per-answer terms' sum over the batch's answer tokens (to the first EOS)."""
    return values.sum() / x.traj.answer_mask.sum(1).float().sum().clamp(min=1.0)
