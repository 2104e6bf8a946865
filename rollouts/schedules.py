"""How many tokens to commit at each step of a block (docs/sampling.md §1–§2).

``linear`` is the reference even split; the others are MaskGIT-style schedules
where ``γ(r)`` is the fraction of the block still masked after a fraction ``r`` of
its steps. Counts are per row because rows can start a block with different numbers
of masked positions (inpainting hints).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from unmask.errors import UserError
from unmask.rollouts.options import SCHEDULES

#: γ(r): fraction still masked after fraction ``r`` of the steps; γ(0) = 1, γ(1) = 0
_GAMMAS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "cosine": lambda r, k: torch.cos(math.pi / 2 * r),
    "pow_k": lambda r, k: 1 - r**k,
    "log": lambda r, k: 1 - torch.log1p((math.e - 1) * r),
    "exp": lambda r, k: 1 - torch.expm1(r) / (math.e - 1),
}


def step_counts(masked: torch.Tensor, steps: int, schedule: str = "linear", k: float = 2.0) -> torch.Tensor:
    """Tokens to commit at each of ``steps`` steps, ``[B, steps]`` long, rows summing to ``masked``.

    ``linear``: ``m // s`` per step plus one for the first ``m % s`` steps (the
    remainder goes to the earliest steps, as in the reference sampler). Others: the
    successive differences of ``m − floor(m · γ(t / s))``.
    """
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    masked = masked.long()
    t = torch.arange(1, steps + 1, device=masked.device)
    if schedule == "linear":
        base = masked[:, None] // steps
        return base + (t[None, :] <= masked[:, None] % steps).long()
    gamma = _GAMMAS[schedule](t.double() / steps, float(k)).clamp(0.0, 1.0)
    gamma[-1] = 0.0  # the block is complete after its last step, whatever rounding says
    done = masked[:, None] - torch.floor(masked[:, None].double() * gamma[None, :]).long()
    return torch.diff(done, dim=1, prepend=torch.zeros_like(done[:, :1]))


def remaining(counts: torch.Tensor) -> torch.Tensor:
    """``[B, steps]``: of a block's ``counts`` (:func:`step_counts`), how many are still to commit before each step."""
    return counts.flip(1).cumsum(1).flip(1)
