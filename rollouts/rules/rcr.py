"""Running confidence remasking (RCR, MDPO; docs/sampling.md §3).

Every step writes all its predictions and their confidences into a running buffer
over the answer (1.0 where nothing was predicted yet), then, except at a block's
last step, noises again the in-reach positions with the lowest buffered confidence,
as many as the schedule still has to commit. Hints are never re-masked; the
process says what is in reach (a block-causal family never re-masks a finished
block). The recorded confidence is the buffer, which MDPO uses as token weights.
"""

from __future__ import annotations

import torch

from unmask.kernels.ops import select_commits
from unmask.rollouts.rules.base import BlockStart, RuleSettings, Step, absorbing
from unmask.rollouts.rules.topk_schedule import TopKSchedule


class RunningConfidence(TopKSchedule):
    """Write the whole scope, then re-mask the ``remaining`` least confident in-reach positions."""

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.buffer: torch.Tensor | None = None
        self.block: BlockStart | None = None

    @classmethod
    def build(cls, settings: RuleSettings) -> RunningConfidence | None:
        return cls(settings) if absorbing(settings) and settings.remasking == "rcr" else None

    def start(self, block: BlockStart) -> int:
        if self.buffer is None:
            self.buffer = torch.ones(block.masked.shape, dtype=torch.float64, device=block.masked.device)
        self.block = block
        return super().start(block)

    def commits(self, step: Step) -> torch.Tensor:
        self.buffer = torch.where(step.scope, step.conf, self.buffer)
        return step.scope

    def remask(self, step: Step) -> torch.Tensor | None:
        """After a step, exactly the schedule's remaining count stays noised, which keeps the plan exact."""
        if step.index == self.steps - 1:
            return None
        eligible = self.block.in_reach & ~self.block.hint_mask
        return select_commits(-self.buffer, k=self.left[:, step.index + 1], eligible=eligible)

    def recorded_confidence(self, step: Step) -> torch.Tensor:
        return self.buffer
