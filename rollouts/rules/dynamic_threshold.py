"""SDAR's dynamic low-confidence rule: the schedule's count, topped up by everything above a threshold.

Every position whose confidence exceeds ``dynamic_threshold`` is committed, and at
least the schedule's count of most confident ones, so a block may finish in fewer
steps than its schedule (docs/sampling.md §2).
"""

from __future__ import annotations

import torch

from unmask.rollouts.rules.base import RuleSettings, Step, absorbing, scored
from unmask.rollouts.rules.topk_schedule import TopKSchedule


class DynamicThreshold(TopKSchedule):
    """Top-``counts[:, i]`` (at most what is left) plus every scope position above the threshold."""

    def __init__(self, settings: RuleSettings, threshold: float) -> None:
        super().__init__(settings)
        self.threshold = threshold

    @classmethod
    def build(cls, settings: RuleSettings) -> DynamicThreshold | None:
        selected = absorbing(settings) and settings.dynamic_threshold is not None
        return cls(settings, settings.dynamic_threshold) if selected else None

    def planned(self) -> torch.Tensor | None:
        """Commits beyond the schedule depend on the confidences: no plan."""
        return None

    def commits(self, step: Step) -> torch.Tensor:
        return super().commits(step) | (scored(step) > self.threshold)
