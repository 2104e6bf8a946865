"""MDPO's parts: (answer, step) items with per-step advantages from intermediate-prediction
rewards, and its confidence and length weights on each step's tokens.

Each rollout contributes its ``sample_train_steps`` most informative steps; an
item of the batch is one (rollout, step) pair and costs one forward/backward.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.errors import UserError
from unmask.rl.advantages import all_wrong_groups, top_steps
from unmask.rl.aggregation import TOKEN_WEIGHTS
from unmask.rl.batches import BATCHES, Batches
from unmask.rl.estimators import Scores
from unmask.rl.objective import Encoder, Objective, Rollout, RolloutContext, TrainBatch
from unmask.rollouts.trajectory import Trajectory

#: prompts per greedy pre-pass batch (over_denoising_filter: greedy)
PRE_PASS_BATCH = 256


def step_rewards(config: Any, ctx: RolloutContext, traj: Trajectory, rows: list[dict[str, Any]]) -> torch.Tensor:
    """``[N, T]`` rewards of the intermediate predictions (correctness only unless the recipe says so)."""
    rewards = ctx.score_steps(traj, rows)
    if config.step_reward == "correctness":
        # shaping credit (Countdown's 0.1 for a well-formed wrong answer) would become a
        # full-size advantage once each step is normalised across a group with no correct answer
        rewards = (rewards >= config.correct_threshold).float()
    return rewards


def over_denoised(config: Any, step_rewards: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: some intermediate prediction was correct but the final answer was not."""
    return (step_rewards >= config.correct_threshold).any(1) & ~correct.bool()


class Steps(Batches):
    """Items are (answer, step) pairs: each answer's ``sample_train_steps`` steps of largest ``|A_t|``."""

    per_step = True
    item_key = "step"

    def training_rows(
        self, objective: Objective, rows: list[dict[str, Any]], ctx: RolloutContext, encode: Encoder
    ) -> list[dict[str, Any]]:
        """With ``over_denoising_filter: greedy``, the prompts a greedy pre-pass finds over-denoised."""
        config = objective.config
        if config.over_denoising_filter != "greedy":
            return rows
        kept = []
        for start in range(0, len(rows), PRE_PASS_BATCH):
            batch = rows[start : start + PRE_PASS_BATCH]
            traj = ctx.generate(*encode(batch), temperature=0.0)
            hit = over_denoised(config, step_rewards(config, ctx, traj, batch), ctx.score(traj, batch).correct)
            kept += [row for row, keep in zip(batch, hit.tolist(), strict=True) if keep]
        if not kept:
            raise UserError(
                f"algorithm.over_denoising_filter: greedy: none of the {len(rows)} training prompts is over-denoised "
                "(right at some step, wrong at the end) under greedy decoding; use 'rollout' or 'off'"
            )
        return kept

    def prepare(self, objective: Objective, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        config, group = objective.config, rollout.group_size
        rewards = step_rewards(config, ctx, rollout.traj, rollout.rows)  # [N, T]
        advantages = objective.advantages(rewards, group)
        steps = top_steps(advantages, config.sample_train_steps)  # [N, k]
        keep = torch.ones(len(rollout.rows), dtype=torch.bool)
        if config.over_denoising_filter == "rollout":
            # the in-rollout variant: whole groups of prompts where some answer showed it
            hit = over_denoised(config, rewards, rollout.correct)
            keep = hit.reshape(-1, group).any(1).repeat_interleave(group)
        rows = torch.arange(len(rollout.rows))[keep].repeat_interleave(steps.shape[1])
        item_steps = steps[keep].flatten()
        metrics = {
            "all_wrong_fraction": float(all_wrong_groups(rollout.correct, group).float().mean()),
            "step_reward": float(rewards.float().mean()),
            "kept_fraction": float(keep.float().mean()),
        }
        return TrainBatch(rollout.traj.select(rows), advantages[rows, item_steps], item_steps, metrics)


BATCHES.register("steps", needs=("sample_train_steps", "over_denoising_filter", "step_reward"))(Steps())


@TOKEN_WEIGHTS.register("mdpo", per_step=True, needs=("confidence_weight", "elbo_weight"))
def step_weights(batch: TrainBatch, scores: Scores, mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's confidence of each token at the trained step (outer), and ``L/|M|`` (inner)."""
    rows = torch.arange(len(batch), device=mask.device)
    weight = torch.ones_like(scores.logprobs)
    if config.confidence_weight and batch.traj.step_confidence is not None:
        weight = batch.traj.step_confidence[batch.steps, rows].float()
    scale = torch.ones(len(batch), 1, device=mask.device)
    if config.elbo_weight:
        scale = (batch.traj.gen_length / mask.sum(1, keepdim=True).clamp(min=1)).float()
    return weight, scale
