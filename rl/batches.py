"""Batch builders: how a rewarded rollout becomes the items an update trains on.

``prepare`` turns a ``Rollout`` into a ``TrainBatch`` (advantages from the
objective's advantage part, one item per answer unless a builder says otherwise);
``training_rows`` may filter the prompts once before training. MDPO's (answer, step)
items and IGPO's hinted regeneration are registered in their own files.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.rl.advantages import all_wrong_groups
from unmask.rl.objective import Encoder, Objective, Rollout, RolloutContext, TrainBatch
from unmask.rl.registry import Registry


class Batches:
    """One item per answer, advantages from the objective's advantage part."""

    #: advantages are per step (MDPO)
    per_step = False
    #: what ``TrainBatch.steps`` holds per item, which a ``keyed_by`` estimator reads as its key
    item_key: str | None = None

    def training_rows(
        self, objective: Objective, rows: list[dict[str, Any]], ctx: RolloutContext, encode: Encoder
    ) -> list[dict[str, Any]]:
        """The prompts to train on, chosen once before training (all of them unless a builder filters)."""
        return rows

    def prepare(self, objective: Objective, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        advantages = objective.advantages(rollout.rewards, rollout.group_size)
        return TrainBatch(rollout.traj, advantages, metrics=all_wrong_metrics(rollout))


def all_wrong_metrics(rollout: Rollout) -> dict[str, float]:
    return {"all_wrong_fraction": float(all_wrong_groups(rollout.correct, rollout.group_size).float().mean())}


BATCHES: Registry[Batches] = Registry("batch builder")
BATCHES.register("rows")(Batches())


class Samples(Batches):
    """Each answer repeated ``mc_samples`` times, one item per draw (BGPO, GDSD): micro-batching and
    accumulation sum the draws, so no draw's graph outlives its own backward."""

    def prepare(self, objective: Objective, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        batch = super().prepare(objective, rollout, ctx)
        items = torch.arange(len(rollout.rows)).repeat_interleave(objective.config.mc_samples)
        return TrainBatch(rollout.traj.select(items), batch.advantages[items], metrics=batch.metrics)


BATCHES.register("samples", needs=("mc_samples",))(Samples())
