"""CJ-GRPO's token weight (as DARE trains it): trajectory replay with every denoising step weighted alike.

DARE takes one token mean per step ``i`` over the tokens ``U_i`` it committed, divides it
by ``T`` and sums the steps, so a step that commits few tokens weighs as much as one that
commits many. Over the micro-batch's scored tokens (``M`` of them) that is the token mean
with per-token weight ``M / (T · N_i)``, ``N_i`` the micro-batch's tokens committed at the
token's step; with a constant ``N_i`` every weight is 1 (a plain token mean). The rest is
``dual_clip``, ``trajectory`` and ``group`` advantages (docs/objectives.md).
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.rl.aggregation import TOKEN_WEIGHTS
from unmask.rl.estimators import Scores, TrajectoryEstimator


@TOKEN_WEIGHTS.register("per_step", answer_tokens=True)
def per_step_weight(batch: Any, scores: Scores, mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    commit = batch.traj.commit_step.clamp(min=0)
    steps = TrajectoryEstimator.steps(batch.traj)
    counts = torch.zeros(steps, device=commit.device).index_add_(0, commit[mask], torch.ones(int(mask.sum()), device=commit.device))
    weight = mask.sum() / (steps * counts[commit].clamp(min=1.0))
    return weight.masked_fill(~mask, 0.0), scores.weight
