"""Fast-dLLM's parallel decoding: commit every prediction above a threshold (docs/sampling.md §4).

A row with none above commits its single most confident one; the block runs until
nothing in reach is noised (at most ``block_length`` steps), so ``steps`` and
``schedule`` are unused.
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


class Threshold(DecodingRule):
    """Every scope position above ``threshold``, else the row's best."""

    ends_when_done = True

    def __init__(self, threshold: float, block_length: int) -> None:
        self.threshold, self.block_length = threshold, block_length

    @classmethod
    def build(cls, settings: RuleSettings) -> Threshold | None:
        selected = absorbing(settings) and settings.threshold is not None
        return cls(settings.threshold, settings.block_length) if selected else None

    def start(self, block: BlockStart) -> int:
        return self.block_length

    def commits(self, step: Step) -> torch.Tensor:
        return select_commits(scored(step), threshold=self.threshold, eligible=step.scope)
