"""LLaDA's rule: each step commits the schedule's count of most confident predictions (docs/sampling.md §1–§2).

The count of step ``i`` comes from the block's schedule (``rollouts.schedules``);
the confidence is any of ``rollouts.confidence`` (``low_confidence``, ``random``,
``margin``, ``entropy`` or a callable). Exact ties at the k-th confidence go to the
lower position on every device (``torch.topk`` leaves that choice to its
implementation; the CPU's depends on ``k``).
"""

from __future__ import annotations

import torch

from unmask.kernels.ops import select_commits
from unmask.rollouts.rules.base import (
    BlockStart,
    DecodingRule,
    RuleSettings,
    Step,
    absorbing,
    scored,
)
from unmask.rollouts.schedules import remaining, step_counts


class TopKSchedule(DecodingRule):
    """The top-``counts[:, i]`` confident positions of the scope at step ``i``."""

    def __init__(self, settings: RuleSettings) -> None:
        self.steps, self.schedule, self.schedule_k = settings.block_steps, settings.schedule, settings.schedule_k
        self.counts = self.left = torch.empty(0, 0, dtype=torch.long)

    @classmethod
    def build(cls, settings: RuleSettings) -> TopKSchedule | None:
        plain = absorbing(settings) and settings.threshold is None and settings.dynamic_threshold is None and settings.remasking != "rcr"
        return cls(settings) if plain else None

    def start(self, block: BlockStart) -> int:
        self.counts = step_counts((block.masked & block.current).sum(1), self.steps, self.schedule, self.schedule_k)
        self.left = remaining(self.counts)
        return self.steps

    def planned(self) -> torch.Tensor | None:
        """Every step commits exactly its count, so the noised positions in reach follow the schedule."""
        return self.left

    def commits(self, step: Step) -> torch.Tensor:
        return select_commits(scored(step), k=self.counts[:, step.index], eligible=step.scope)
