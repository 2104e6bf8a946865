"""SPG (Sandwiched Policy Gradient): a lower bound for good answers, an upper bound for bad ones.

``log π(o)`` is intractable for a dLLM. SPG maximises the ELBO of answers with
``A > 0`` and minimises an upper bound (the Rényi EUBO, or its mix with the ELBO,
``ω``) of answers with ``A ≤ 0``, so the surrogate stays below ``Σ_i A_i log π(o_i)``.
No ratio, no clipping, no old policy, no KL; fresh block-wise masks every inner
iteration (objectives-2026.md, SPG).
"""

from __future__ import annotations

import torch

from unmask.rl.advantages import all_wrong_groups, group_advantages
from unmask.rl.estimators import Estimator, Scores, sequence_elbo
from unmask.rl.losses import masked_mean
from unmask.rl.mc_estimators import BlockEstimator
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch, register


@register
class SPG(Objective):
    name = "spg"
    needs_old = False

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        c = self.config
        return BlockEstimator(
            mask_token_id, samples=c.mc_samples, block_length=c.mask_block_length, p_mask=c.p_mask, beta=c.eubo_beta
        )

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        advantages = group_advantages(rollout.rewards, rollout.group_size, self.config.scale_rewards)
        all_wrong = all_wrong_groups(rollout.correct, rollout.group_size)
        return TrainBatch(rollout.traj, advantages, metrics={"all_wrong_fraction": float(all_wrong.float().mean())})

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if scores.upper is None:
            raise ValueError("SPG needs an estimator that returns the upper-bound term (BlockEstimator)")
        completion = batch.traj.answer_mask.sum(1).float()
        lower = sequence_elbo(scores)  # |C|·ē
        upper = completion * masked_mean(scores.upper, scores.mask, dim=1)  # |C|·ū
        omega = self.config.omega
        negative = omega * upper + (1 - omega) * lower
        value = torch.where(batch.advantages > 0, lower, negative)
        loss = -(batch.advantages * value).sum() / completion.sum().clamp(min=1.0)
        metrics = {
            "entropy": float(masked_mean(scores.entropy, scores.mask)),
            "spg/bound_gap": float((upper - lower).detach().mean()),
        }
        return loss, metrics
