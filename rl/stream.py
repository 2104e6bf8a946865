"""A deterministic, resumable stream of training prompts: epoch-wise shuffles by seed.

The stream position (prompts consumed) is all a checkpoint needs to continue with
exactly the prompts an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.errors import UserError


class PromptStream:
    def __init__(self, rows: list[dict[str, Any]], seed: int) -> None:
        if not rows:
            raise UserError("data: the training set is empty; check data.path, data.split and data.limit")
        missing = [i for i, row in enumerate(rows) if "prompt" not in row]
        if missing:
            raise UserError(f"data: row {missing[0]} has no 'prompt' column")
        self.rows = rows
        self.seed = seed

    def order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.rows), generator=gen).tolist()

    def take(self, position: int, count: int) -> list[dict[str, Any]]:
        """``count`` rows starting at stream ``position`` (wrapping into later epochs)."""
        out = []
        for index in range(position, position + count):
            epoch, offset = divmod(index, len(self.rows))
            out.append(self.rows[self.order(epoch)[offset]])
        return out
