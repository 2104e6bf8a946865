"""Absorbing noise over block-causal canvases: SDAR and TraDo.

Attention is bidirectional inside a block of ``block_size`` tokens and causal
across blocks (blocks counted on compact positions from each row's first real
token: the "global" origin SDAR was trained with). Samplers decode block by block
and keep finished blocks in an exact KV cache. Training scores ``[x_t ; x_0]``
(two streams at the same positions), so each noisy block conditions on clean
earlier blocks, the context it has at sampling time (docs/diffusion.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.diffusion.process import Attention
from unmask.errors import UserError
from unmask.models.block_mask import compact_positions, two_stream_mask

if TYPE_CHECKING:
    from unmask.models.base import DiffusionLM


@dataclass(frozen=True)
class BlockAbsorbingMask(AbsorbingMask):
    block_size: int = 4
    attention: Attention = "block_causal"
    two_stream: bool = True
    name: str = "block_absorbing_mask"

    def answer_blocks(self, prompt_mask: torch.Tensor, gen_length: int, block_length: int) -> torch.Tensor:
        """Rounds on the global grid: the block ids of compact positions, counted from the
        block holding each row's first answer token (which may also hold the prompt's tail)."""
        if block_length != self.block_size:
            raise UserError(
                f"block_length ({block_length}) must equal this block-diffusion family's block size "
                f"({self.block_size}): its attention is block-causal over blocks of that size"
            )
        prompt_tokens = prompt_mask.long().sum(1, keepdim=True)
        positions = prompt_tokens + torch.arange(gen_length, device=prompt_mask.device)
        return positions // self.block_size - prompt_tokens // self.block_size

    def in_reach(self, answer_blocks: torch.Tensor, current: int) -> torch.Tensor:
        """The current block only: earlier blocks are final (in the KV cache), so RCR never re-masks them."""
        return answer_blocks == current

    def scoring_logits(
        self,
        model: DiffusionLM,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_length: int,
        **options: object,
    ) -> torch.Tensor:
        """Noisy-stream logits of ``[x_t ; x_0]`` under the two-stream block mask.

        Both streams get the same rotary positions; ``logits_at`` (default: every
        noisy column) selects columns of the noisy stream. Called through the
        model's ``forward`` so a DDP wrapper synchronises the gradients.
        """
        valid = None if attention_mask is None else attention_mask.bool()
        positions = compact_positions(noisy, valid)
        at = options.pop("logits_at", None)
        return model(
            torch.cat([noisy, clean], dim=1),
            attention_mask=two_stream_mask(positions, valid, self.block_size),
            positions=positions.repeat(1, 2),
            logits_at=torch.arange(noisy.shape[1], device=noisy.device) if at is None else at,
            **options,
        )

    def two_stream_logits(self, model: DiffusionLM, noisy: torch.Tensor, clean: torch.Tensor,
                          attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.scoring_logits(model, noisy, clean, attention_mask, 0)
