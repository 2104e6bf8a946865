"""The sampler's per-row random draws: one CPU generator per row, seeded with the row's seed.

Each step of each row consumes ``2 × gen_length`` float64 uniforms of its own
generator (sampling, then random confidence), whether or not the step reads them:
a row's tokens depend only on its prompt, hints and seed. Drawing ``n`` steps in one
call yields the same numbers as ``n`` single-step calls (the CPU generator fills a
tensor element by element), so when a round's step count is known in advance its
draws are made a chunk of steps at a time: one call per row and one asynchronous
copy to the device per chunk instead of per step. A round that may end early
draws step by step, so a generator never runs ahead of the steps taken.
"""

from __future__ import annotations

import torch

#: uniforms held at once per chunk (32 MiB of float64), whatever the batch and answer length
CHUNK_VALUES = 1 << 22


class RowDraws:
    """Each step's uniforms, ``[2, B, L]`` on the device (``[0]`` sampling, ``[1]`` confidence)."""

    def __init__(self, seeds: list[int], length: int, device: torch.device) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.length, self.device = length, device
        self._chunk = max(1, CHUNK_VALUES // (2 * len(seeds) * length))
        self._ahead = self._left = 0
        self._buffer = torch.empty(0)

    def start(self, steps: int, *, ahead: bool) -> None:
        """A round of at most ``steps`` steps; ``ahead``: it runs all of them, so draw ahead."""
        self._left, self._ahead, self._buffer = steps, ahead, torch.empty(0)

    def next(self) -> torch.Tensor:
        """The next step's uniforms of every row."""
        if not len(self._buffer):
            n = min(self._chunk, self._left) if self._ahead else 1
            self._buffer = self.take(n)
        self._left -= 1
        step, self._buffer = self._buffer[0], self._buffer[1:]
        return step

    def take(self, steps: int) -> torch.Tensor:
        """The next ``steps`` steps of every row, ``[steps, 2, B, L]`` (one CPU call per row, one copy)."""
        draws = torch.stack([torch.rand(steps, 2, self.length, dtype=torch.float64, generator=g) for g in self.generators], dim=2)
        if self.device.type == "cuda":
            return draws.pin_memory().to(self.device, non_blocking=True)
        return draws.to(self.device)
