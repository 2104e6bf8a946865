"""wd1: weighted likelihood ``Σ_i (w⁻_i − w⁺_i) log π̂(o_i)`` — no ratio, no old policy, no clip."""

from __future__ import annotations

import torch

from unmask.rl.advantages import group_advantages, wd1_weights
from unmask.rl.diffu_grpo import DiffuGRPO
from unmask.rl.estimators import Scores
from unmask.rl.losses import KL_ESTIMATORS, masked_mean
from unmask.rl.objective import Rollout, RolloutContext, TrainBatch, register


@register
class WD1(DiffuGRPO):
    """Reuses diffu-GRPO's estimator and batch; the advantage becomes ``w⁺ − w⁻``."""

    name = "wd1"

    needs_old = False

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        batch = super().prepare(rollout, ctx)
        advantages = group_advantages(rollout.rewards, rollout.group_size)
        batch.advantages = wd1_weights(advantages, rollout.group_size, self.config.psi)
        return batch

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = self.loss_mask(batch, scores)
        sequence = masked_mean(scores.logprobs * scores.weight, mask, dim=1)  # log π̂(o_i) per token
        loss = -(batch.advantages * sequence).mean()
        metrics = {"entropy": float(masked_mean(scores.entropy, mask))}
        if ref is not None and self.config.beta > 0:
            kl = KL_ESTIMATORS[self.kl](scores.logprobs, ref.logprobs)
            loss = loss + self.config.beta * masked_mean(kl, mask)
            metrics["kl"] = float(masked_mean(kl.detach(), mask))
        return loss, metrics
