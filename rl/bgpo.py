"""BGPO: a lower bound of the ELBO ratio that is a sum of per-sample terms, one backward each.

``R̂ = exp(Ê_θ − Ê_old)·A`` with ``Ê`` an ``n_t``-sample ELBO is non-linear in the
samples, so all ``n_t`` graphs would stay alive. BGPO maximises instead
``Σ_j g_j``: ``(1 + d_j)·A/n_t`` for ``A ≥ 0`` (tangent) and ``e^{d_j}·A/n_t`` for
``A < 0`` (Jensen), ``d_j`` the sample's ELBO difference to θ_old. Each (answer,
sample) is its own item of the batch, so micro-batching and gradient accumulation
do the sum and peak memory does not grow with ``n_t``. On-policy (``d ≡ 0``) this
is REINFORCE on the MC ELBO; the bound acts once θ has moved off θ_old
(objectives-2026.md, BGPO).
"""

from __future__ import annotations

import torch

from unmask.rl.advantages import all_wrong_groups, group_advantages
from unmask.rl.estimators import ElboEstimator, Estimator, Scores, sequence_elbo
from unmask.rl.losses import masked_mean
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch, register


@register
class BGPO(Objective):
    name = "bgpo"

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        return ElboEstimator(mask_token_id, answer_only=True)

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        advantages = group_advantages(rollout.rewards, rollout.group_size, self.config.scale_rewards)
        items = torch.arange(len(rollout.rows)).repeat_interleave(self.config.mc_samples)
        all_wrong = all_wrong_groups(rollout.correct, rollout.group_size)
        metrics = {"all_wrong_fraction": float(all_wrong.float().mean())}
        return TrainBatch(rollout.traj.select(items), advantages[items], metrics=metrics)

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        elbo = sequence_elbo(scores)
        d = elbo - (elbo.detach() if old is None else sequence_elbo(old))
        if self.config.length_normalized:
            d = d / batch.traj.gen_length
        advantages = batch.advantages
        negative = advantages < 0
        # 1 + d, never exp(log(1 + d)) (NaN for d ≤ −1); exp only where it is used, so it cannot overflow elsewhere
        bound = torch.where(negative, torch.exp(torch.where(negative, d, 0.0)), 1.0 + d)
        loss = -(bound * advantages).mean()
        metrics = {
            "entropy": float(masked_mean(scores.entropy, scores.mask)),
            "bgpo/abs_d": float(d.detach().abs().mean()),
        }
        return loss, metrics
