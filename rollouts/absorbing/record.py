"""Recording an absorbing-mask step (``rollouts.record.StepRecorder``): x_t's mask, predictions, the rule's confidence."""

from __future__ import annotations

from unmask.rollouts.absorbing.state import MaskedCanvas
from unmask.rollouts.record import StepRecorder
from unmask.rollouts.rules.base import Decision, DecodingRule, Step


class MaskedRecord:
    """Keeps each step in ``recorder`` (a disabled recorder drops it)."""

    def __init__(self, canvas: MaskedCanvas, rule: DecodingRule, recorder: StepRecorder) -> None:
        self.canvas, self.rule, self.recorder = canvas, rule, recorder

    def __call__(self, step: Step, decision: Decision) -> None:
        self.recorder.add(step.masked, step.pred, self.rule.recorded_confidence(step), step.logprob, self.canvas.cached)
