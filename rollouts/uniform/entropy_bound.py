"""DiffusionGemma's decoding rule: accept the draws of the lowest-entropy slots within an entropy budget."""

from __future__ import annotations

import torch

from unmask.rollouts.uniform.state import UniformStep


def entropy_bound_accept(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """Accept the longest lowest-entropy prefix whose summed entropy minus its largest is <= ``bound``."""
    ordered, order = entropy.sort(dim=-1)
    keep = ordered.cumsum(-1) - ordered <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


class EntropyBound:
    """The accepted set A_n ``[B, L]`` of a step (the rest is renoised)."""

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def __call__(self, step: UniformStep) -> torch.Tensor:
        return entropy_bound_accept(step.entropy, self.bound)
