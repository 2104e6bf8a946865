"""The one sampling loop every diffusion process runs through; the process supplies the parts (docs/sampling.md §10).

A rollout is a sequence of rounds (blocks, canvases), each a sequence of denoising
steps. Per round the driver starts it, then per step predicts, decides, applies,
records and asks whether to stop, then ends the round. What those words mean is the
process's: for an absorbing mask a step commits predictions and re-masks
(``rollouts/absorbing/``); for DiffusionGemma's uniform noise it keeps the accepted
draws and renoises the rest (``rollouts/uniform/``). A new process is a new set of
parts and an entry point that assembles them, not a new loop.

The parts share the process's canvas state (one object they all hold), so the driver
passes only what a step produces: the prediction and the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

StepT = TypeVar("StepT")
ChoiceT = TypeVar("ChoiceT")


@dataclass(frozen=True)
class SamplerParts(Generic[StepT, ChoiceT]):
    """A process's sampler as the driver runs it."""

    rounds: int
    #: prepares round ``k`` (initial canvas, context); returns its step budget
    start_round: Callable[[int], int]
    #: step ``i`` of the round: the forward and its draws, or ``None`` when the round has no work left
    predict: Callable[[int], StepT | None]
    #: the decoding rule: what of the prediction to keep (commits, an accepted set)
    decide: Callable[[StepT], ChoiceT]
    #: writes the decision into the canvas (commit and re-mask, or keep and renoise)
    apply: Callable[[StepT, ChoiceT], None]
    record: Callable[[StepT, ChoiceT], None]
    #: after a step: the round is over (every row stopped)
    stop: Callable[[StepT, ChoiceT], bool]
    #: reads out round ``k`` and commits it; ``True`` when no later round is needed
    end_round: Callable[[int], bool]


def never(step: object, choice: object) -> bool:
    """A ``stop`` for processes whose rounds run their budget (or end by having no work)."""
    return False


def drive(parts: SamplerParts[StepT, ChoiceT], advance: Callable[[], None] = lambda: None) -> None:
    """Run every round of ``parts``; ``advance`` is called after each step (a progress bar)."""
    for k in range(parts.rounds):
        for i in range(parts.start_round(k)):
            step = parts.predict(i)
            if step is None:
                break
            choice = parts.decide(step)
            parts.apply(step, choice)
            parts.record(step, choice)
            advance()
            if parts.stop(step, choice):
                break
        if parts.end_round(k):
            break
