"""Absorbing ``[MASK]`` noise over one canvas: LLaDA, Dream and the tiny family.

A noised position holds the mask token; decoding replaces it with a real token,
re-masking (RCR) writes the mask token back. The mask token itself is never a
valid prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.diffusion.process import Attention, DiffusionProcess


@dataclass(frozen=True)
class AbsorbingMask(DiffusionProcess):
    mask_token_id: int
    attention: Attention = "full"
    name: str = "absorbing_mask"

    def noised(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens == self.mask_token_id

    def corrupt(self, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return tokens.masked_fill(where, self.mask_token_id)

    def is_noise_token(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens == self.mask_token_id

    def forbid_noise(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_fill(-1, torch.tensor([self.mask_token_id], device=logits.device), float("-inf"))

    def forbid_noise_(self, logits: torch.Tensor) -> torch.Tensor:
        logits[..., self.mask_token_id] = float("-inf")
        return logits
