"""The sampler's per-row random draws: one CPU generator per row, seeded with the row's seed.

Each step of each row consumes ``2 × gen_length`` float64 uniforms of its own
generator (sampling, then random confidence), whether or not the step reads them:
a row's tokens depend only on its prompt, hints and seed. Drawing ``n`` steps in one
call yields the same numbers as ``n`` single-step calls (the CPU generator fills a
tensor element by element), so a block's draws take one call per row and one copy
to the device instead of one per step.
"""

from __future__ import annotations

import torch


class RowDraws:
    """Uniforms for ``n`` steps at a time, ``[n, 2, B, L]`` on the device (``[:, 0]`` sampling, ``[:, 1]`` confidence)."""

    def __init__(self, seeds: list[int], length: int, device: torch.device) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.length, self.device = length, device

    def take(self, steps: int) -> torch.Tensor:
        """The next ``steps`` steps of every row (one CPU call per row, one host-to-device copy)."""
        draws = torch.stack([torch.rand(steps, 2, self.length, dtype=torch.float64, generator=g) for g in self.generators], dim=2)
        if self.device.type == "cuda":
            return draws.pin_memory().to(self.device, non_blocking=True)
        return draws.to(self.device)
