"""What a decoding rule is: the part of a denoising step that picks commits and re-masks (docs/sampling.md §9).

The absorbing-mask sampler (``rollouts.generate`` over ``rollouts.driver``) predicts
every position a step reads, then asks the rule which predictions to write
(:meth:`DecodingRule.commits`) and which positions to noise again
(:meth:`DecodingRule.remask`). A rule sees ``[B, L]``
tensors and answers with ``[B, L]`` bool masks built from tensor ops, so a step
reads nothing back to the host. A new rule is one file in this folder: a subclass
whose :meth:`DecodingRule.build` returns an instance for the settings that select it
(``rules.registry`` finds it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.diffusion.process import DiffusionProcess


@dataclass(frozen=True)
class RuleSettings:
    """The sampler settings a rule may read (validated before a rule is built), and the model's process.

    A rule may select itself by the process too (a uniform-noise process brings its own rules).
    """

    process: DiffusionProcess
    remasking: str
    threshold: float | None
    dynamic_threshold: float | None
    schedule: str
    schedule_k: float
    block_length: int
    #: steps per block for scheduled rules (``steps // blocks``, at least one)
    block_steps: int


@dataclass(frozen=True)
class BlockStart:
    """A decoding round as it begins; all ``[B, L]`` bool."""

    index: int
    current: torch.Tensor  # positions of this round
    in_reach: torch.Tensor  # positions a step of this round may decode or re-mask (the process decides)
    masked: torch.Tensor  # noised positions of the answer at the round's start
    hint_mask: torch.Tensor  # fixed (inpainted) positions: never decoded, never re-masked


@dataclass
class Step:
    """One denoising step after prediction; ``[B, L]`` tensors, ``index`` counts the round's steps."""

    index: int
    answer: torch.Tensor  # x_t
    masked: torch.Tensor  # noised positions of x_t
    scope: torch.Tensor  # what this step may commit (``DecodingRule.scope``)
    predict: torch.Tensor  # positions whose prediction was computed (scope, or every masked one when recording)
    pred: torch.Tensor  # predicted tokens at ``predict``, x_t elsewhere
    conf: torch.Tensor  # float64 confidence at ``predict``, -inf elsewhere
    logprob: torch.Tensor  # log-probability of the prediction at ``predict``, 0 elsewhere


@dataclass(frozen=True)
class Decision:
    """What a rule makes of a step: ``[B, L]`` bool commits, and re-masks (``None``: none)."""

    commit: torch.Tensor
    remask: torch.Tensor | None


class DecodingRule(ABC):
    """Chooses commits (and optionally re-masks) from a step's predictions."""

    #: the round ends at the first step whose scope is empty everywhere (a data-decided length)
    ends_when_done: bool = False

    @classmethod
    @abstractmethod
    def build(cls, settings: RuleSettings) -> DecodingRule | None:
        """An instance when ``settings`` select this rule, else ``None`` (exactly one rule is selected)."""

    @abstractmethod
    def start(self, block: BlockStart) -> int:
        """Prepare for a round; returns its number of steps (an upper bound when ``ends_when_done``)."""

    def scope(self, masked: torch.Tensor, in_reach: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` bool: what a step predicts and may commit, by default the noised positions in reach.

        A rule that re-predicts accepted positions (uniform-noise renoising) widens it.
        """
        return masked & in_reach

    def planned(self) -> torch.Tensor | None:
        """``[B, steps]`` long: the scope's size before each step, when the schedule fixes it.

        ``None`` when the data decides (thresholds): the driver then reads which rows
        have work at every step. A plan lets it read that once per round instead.
        """
        return None

    @abstractmethod
    def commits(self, step: Step) -> torch.Tensor:
        """``[B, L]`` bool: positions whose prediction is written into the answer."""

    def decide(self, step: Step) -> Decision:
        """The step's commits, then its re-masks (the driver's ``decide``; a rule may re-mask by what it committed)."""
        commit = self.commits(step)
        return Decision(commit, self.remask(step))

    def remask(self, step: Step) -> torch.Tensor | None:
        """``[B, L]`` bool: positions to noise again after the commits (``None``: none)."""
        return None

    def recorded_confidence(self, step: Step) -> torch.Tensor:
        """The ``step_confidence`` a recording keeps: the step's confidence, 0 where nothing was predicted."""
        return step.conf.masked_fill(~step.predict, 0.0)


def absorbing(settings: RuleSettings) -> bool:
    """The model's noise is an absorbing mask (the rules that read and write ``[MASK]`` apply)."""
    return isinstance(settings.process, AbsorbingMask)


def scored(step: Step) -> torch.Tensor:
    """The step's confidence with every position outside its scope at ``-inf``."""
    return step.conf.masked_fill(~step.scope, float("-inf"))

