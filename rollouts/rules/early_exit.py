"""Early exit: a row whose first committed EOS has nothing noised before it is finished at once.

Tokens after the first EOS are padding for rewards, so the row's noised tail is
filled with EOS and the row leaves every later forward. It wraps any rule whose
commits stay (not RCR, which may re-mask the EOS).
"""

from __future__ import annotations

import torch

from unmask.rollouts.rules.base import BlockStart, DecodingRule, RuleSettings, Step


class EarlyExit(DecodingRule):
    """``rule``'s commits, plus the EOS-filled tail of every row they finish."""

    def __init__(self, rule: DecodingRule, eos_ids: torch.Tensor, fill: int) -> None:
        self.rule = rule
        self.ends_when_done = rule.ends_when_done
        self.eos_ids, self.fill = eos_ids, fill  # every EOS id (on the answer's device), and the one written

    @classmethod
    def build(cls, settings: RuleSettings) -> None:
        """Never selected by the settings alone: the driver wraps the selected rule when ``early_exit`` is on."""
        return None

    def start(self, block: BlockStart) -> int:
        return self.rule.start(block)

    def scope(self, masked: torch.Tensor, in_reach: torch.Tensor) -> torch.Tensor:
        return self.rule.scope(masked, in_reach)

    def commits(self, step: Step) -> torch.Tensor:
        """Writes EOS into ``step.pred`` at the filled tail, so the recorded prediction shows it too."""
        chosen = self.rule.commits(step)
        filled = eos_tail(torch.where(chosen, step.pred, step.answer), step.masked & ~chosen, self.eos_ids)
        step.pred = step.pred.masked_fill(filled, self.fill)
        return chosen | filled

    def recorded_confidence(self, step: Step) -> torch.Tensor:
        return self.rule.recorded_confidence(step)


def eos_tail(answer: torch.Tensor, masked: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: the ``masked`` (noised) positions of rows whose first EOS has nothing noised before it."""
    eos = torch.isin(answer, eos_ids)
    first_eos = torch.where(eos.any(1), eos.long().argmax(1), answer.shape[1])
    first_masked = torch.where(masked.any(1), masked.long().argmax(1), answer.shape[1])
    finished = first_eos < first_masked
    return masked & finished[:, None]
