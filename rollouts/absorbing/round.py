"""Starting an absorbing-mask round: the rule's step budget, the forward's block, the step plan, the draws."""

from __future__ import annotations

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.rollouts.absorbing.state import MaskedCanvas
from unmask.rollouts.block_forward import BlockStepForward
from unmask.rollouts.cache import StepForward
from unmask.rollouts.draws import RowDraws
from unmask.rollouts.rules.base import BlockStart, DecodingRule


class MaskedRound:
    """``start`` prepares block ``k``; ``end`` reads nothing out (the answer is the canvas)."""

    def __init__(self, canvas: MaskedCanvas, process: DiffusionProcess, rule: DecodingRule,
                 forward: StepForward | BlockStepForward, draws: RowDraws | None, block_length: int,
                 record_all: bool) -> None:
        self.canvas, self.process, self.rule, self.forward, self.draws = canvas, process, rule, forward, draws
        self.block_length = block_length
        #: every noised position is predicted (and recorded), not only the scope
        self.record_all = record_all

    def start(self, k: int) -> int:
        c = self.canvas
        c.span = (k * self.block_length, (k + 1) * self.block_length)
        c.in_reach = self.process.in_reach(c.rounds, k)
        steps = self.rule.start(BlockStart(k, c.rounds == k, c.in_reach, c.masked, c.hint_mask))
        self.forward.new_block(k)
        outside = (c.masked & ~self.rule.scope(c.masked, c.in_reach)).sum(1) if self.record_all else None
        c.plan = plan(self.rule, outside)
        if self.draws is not None:
            self.draws.start(steps, ahead=c.plan is not None)
        return steps

    def end(self, k: int) -> bool:
        return False


def plan(rule: DecodingRule, outside: torch.Tensor | None) -> list[tuple[int, int]] | None:
    """Per step of the round: (rows with work, positions to predict), read once; ``None`` without a plan.

    ``outside`` ``[B]``: noised positions outside the scope, predicted too when every noised
    position is recorded (they lie beyond the round's reach, so they do not change during it).
    """
    left = rule.planned()
    if left is None:
        return None
    predicted = left if outside is None else left + outside[:, None]
    counts = torch.stack([(predicted > 0).sum(0), predicted.sum(0)], dim=1)
    return [(int(rows), int(n)) for rows, n in counts.tolist()]
