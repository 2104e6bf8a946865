"""diffu-GRPO (d1): group advantages, one-step prompt-masked estimator, clipped ratio + k3 KL."""

from __future__ import annotations

import torch

from unmask.rl.advantages import all_wrong_groups, group_advantages
from unmask.rl.estimators import (
    ElboEstimator,
    Estimator,
    OneStepEstimator,
    Scores,
    TrajectoryEstimator,
)
from unmask.rl.losses import masked_mean
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch, register


@register
class DiffuGRPO(Objective):
    name = "diffu_grpo"

    @property
    def record_steps(self) -> bool:
        return isinstance(self.estimator, TrajectoryEstimator)

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        choice = getattr(self.config, "estimator", "one_step")
        if choice == "elbo":
            return ElboEstimator(mask_token_id, coupled=True)
        if choice == "trajectory":
            return TrajectoryEstimator(
                mask_token_id, temperature=temperature or 1.0, steps_per_row=self.config.trajectory_steps
            )
        return OneStepEstimator(mask_token_id, p_mask=self.config.p_mask)

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        advantages = group_advantages(rollout.rewards, rollout.group_size, self.config.scale_rewards)
        all_wrong = all_wrong_groups(rollout.correct, rollout.group_size)
        return TrainBatch(
            rollout.traj, advantages, metrics={"all_wrong_fraction": float(all_wrong.float().mean())}
        )

    def loss_mask(self, batch: TrainBatch, scores: Scores) -> torch.Tensor:
        """Answer tokens up to the first EOS that the estimator scored."""
        return batch.traj.answer_mask & scores.mask

    def log_ratio(self, batch: TrainBatch, scores: Scores, old: Scores | None) -> torch.Tensor | None:
        """Per-token ratios by default (``None``); IGPO may use GSPO's sequence ratio."""
        return None

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = self.loss_mask(batch, scores)
        policy, kl, clipped = self.surrogate_terms(
            scores, old, ref, batch.advantages[:, None], self.log_ratio(batch, scores, old)
        )
        per_token = (policy * scores.weight + self.config.beta * kl)
        return masked_mean(per_token, mask), self.token_metrics(scores, kl, clipped, mask)
