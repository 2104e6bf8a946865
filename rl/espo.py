"""ESPO: the whole answer is one action, with one clipped ratio from ELBO differences.

The ELBO bounds only the sequence log-likelihood, so ESPO uses it only there:
``log ρ = (E_θ − E_old)/L`` (a per-token-scale ratio, since ELBO differences are
tens of nats), PPO's pessimistic clip on ``ρA``, and a k2 penalty on the sequence
difference ``½(E_θ − E_ref)²/L``. One term per sequence, no token mean
(objectives-2026.md, ESPO).
"""

from __future__ import annotations

import torch

from unmask.rl.advantages import all_wrong_groups, leave_one_out_advantages
from unmask.rl.estimators import Estimator, Scores, sequence_elbo
from unmask.rl.losses import clipped_surrogate, masked_mean
from unmask.rl.mc_estimators import ExactCountEstimator
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch, register


@register
class ESPO(Objective):
    name = "espo"

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        return ExactCountEstimator(mask_token_id, samples=self.config.mc_samples)

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        advantages = leave_one_out_advantages(rollout.rewards, rollout.group_size)
        all_wrong = all_wrong_groups(rollout.correct, rollout.group_size)
        return TrainBatch(rollout.traj, advantages, metrics={"all_wrong_fraction": float(all_wrong.float().mean())})

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        length = batch.traj.gen_length
        elbo = sequence_elbo(scores)
        old_elbo = elbo.detach() if old is None else sequence_elbo(old)
        gain, clipped = clipped_surrogate(
            (elbo - old_elbo) / length, batch.advantages, self.config.epsilon, self.config.epsilon_high
        )
        loss = -gain.mean()
        metrics = {
            "clip_fraction": float(clipped.float().mean()),
            "entropy": float(masked_mean(scores.entropy, scores.mask)),
        }
        if ref is not None and self.config.beta > 0:
            k2 = 0.5 * (elbo - sequence_elbo(ref)) ** 2 / length
            loss = loss + self.config.beta * k2.mean()
            metrics["kl"] = float(k2.detach().mean())
        return loss, metrics
