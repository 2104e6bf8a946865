"""MDPO: intermediate-prediction rewards, per-step advantages, per-step conditional likelihood.

Each rollout contributes its ``sample_train_steps`` most informative steps; an
item of the batch is one (rollout, step) pair and costs one forward/backward.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.errors import UserError
from unmask.rl.advantages import all_wrong_groups, mdpo_advantages, top_steps
from unmask.rl.estimators import Estimator, Key, Scores, StepEstimator
from unmask.rl.losses import masked_mean
from unmask.rl.objective import Encoder, Objective, Rollout, RolloutContext, TrainBatch, register
from unmask.rollouts.trajectory import Trajectory

#: prompts per greedy pre-pass batch (over_denoising_filter: greedy)
PRE_PASS_BATCH = 256


@register
class MDPO(Objective):
    name = "mdpo"
    kl = "k2"

    @property
    def record_steps(self) -> bool:
        return True

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        # greedy rollouts have no sampling distribution; score them at temperature 1
        return StepEstimator(mask_token_id, temperature=temperature or 1.0)

    def key(self, batch: TrainBatch, seed: int) -> Key:
        return batch.steps

    def step_rewards(self, ctx: RolloutContext, traj: Trajectory, rows: list[dict[str, Any]]) -> torch.Tensor:
        """``[N, T]`` rewards of the intermediate predictions (correctness only unless the recipe says so)."""
        rewards = ctx.score_steps(traj, rows)
        if self.config.step_reward == "correctness":
            # shaping credit (Countdown's 0.1 for a well-formed wrong answer) would become a
            # full-size advantage once each step is normalised across a group with no correct answer
            rewards = (rewards >= self.config.correct_threshold).float()
        return rewards

    def over_denoised(self, step_rewards: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: some intermediate prediction was correct but the final answer was not."""
        return (step_rewards >= self.config.correct_threshold).any(1) & ~correct.bool()

    def training_rows(self, rows: list[dict[str, Any]], ctx: RolloutContext, encode: Encoder) -> list[dict[str, Any]]:
        """With ``over_denoising_filter: greedy``, the prompts a greedy pre-pass finds over-denoised."""
        if self.config.over_denoising_filter != "greedy":
            return rows
        kept = []
        for start in range(0, len(rows), PRE_PASS_BATCH):
            batch = rows[start : start + PRE_PASS_BATCH]
            traj = ctx.generate(*encode(batch), temperature=0.0)
            hit = self.over_denoised(self.step_rewards(ctx, traj, batch), ctx.score(traj, batch).correct)
            kept += [row for row, keep in zip(batch, hit.tolist(), strict=True) if keep]
        if not kept:
            raise UserError(
                f"algorithm.over_denoising_filter: greedy: none of the {len(rows)} training prompts is over-denoised "
                "(right at some step, wrong at the end) under greedy decoding; use 'rollout' or 'off'"
            )
        return kept

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        group = rollout.group_size
        step_rewards = self.step_rewards(ctx, rollout.traj, rollout.rows)  # [N, T]
        advantages = mdpo_advantages(step_rewards, group)
        steps = top_steps(advantages, self.config.sample_train_steps)  # [N, k]
        keep = torch.ones(len(rollout.rows), dtype=torch.bool)
        if self.config.over_denoising_filter == "rollout":
            # the in-rollout variant: whole groups of prompts where some answer showed it
            hit = self.over_denoised(step_rewards, rollout.correct)
            keep = hit.reshape(-1, group).any(1).repeat_interleave(group)
        rows = torch.arange(len(rollout.rows))[keep].repeat_interleave(steps.shape[1])
        item_steps = steps[keep].flatten()
        metrics = {
            "all_wrong_fraction": float(all_wrong_groups(rollout.correct, group).float().mean()),
            "step_reward": float(step_rewards.float().mean()),
            "kept_fraction": float(keep.float().mean()),
        }
        return TrainBatch(rollout.traj.select(rows), advantages[rows, item_steps], item_steps, metrics)

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = scores.mask
        rows = torch.arange(len(batch), device=mask.device)
        weight = torch.ones_like(scores.logprobs)
        if self.config.confidence_weight and batch.traj.step_confidence is not None:
            weight = batch.traj.step_confidence[batch.steps, rows].float()
        scale = torch.ones(len(batch), 1, device=mask.device)
        if self.config.elbo_weight:
            scale = (self.gen_length / mask.sum(1, keepdim=True).clamp(min=1)).float()
        policy, kl, clipped = self.surrogate_terms(scores, old, ref, batch.advantages[:, None])
        per_token = weight * (scale * policy + self.config.beta * kl)
        loss = masked_mean(per_token, mask, dim=1).mean()
        return loss, self.token_metrics(scores, kl, clipped, mask)
