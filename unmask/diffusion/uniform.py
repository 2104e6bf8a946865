"""Uniform-token noise over block canvases: DiffusionGemma (docs/diffusion-gemma.md).

A noised position holds a uniformly random id over the *whole* vocabulary (special
ids included), so no token marks noise: the model infers it, and a sampler knows
which positions it accepted only from what it recorded. Blocks are canvases of
``canvas_length`` tokens decoded one after another against a cache of finished ones.
Everything that reads noise from the tokens (the absorbing samplers, the one-step,
ELBO and Monte-Carlo estimators) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from unmask.diffusion.process import Attention, DiffusionProcess
from unmask.errors import UserError

NO_MASK = (
    "the uniform_noise process (DiffusionGemma) has no mask token: {what} needs absorbing-mask noise; "
    "use the uniform sampler and the renoise-replay estimator"
)


def uniform_tokens(
    shape: tuple[int, int], vocab_size: int, generators: Sequence[torch.Generator] | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:  # fmt: skip
    """``[B, L]`` ids uniform over ``vocab_size``; row ``b`` drawn from ``generators[b]`` when given.

    Per-row generators make a row's noise independent of the rest of the batch; without
    them the draw is one ``torch.randint`` on the global RNG, as transformers' sampler does.
    """
    if generators is None:
        return torch.randint(0, vocab_size, shape, device=device)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for {shape[0]} rows")
    rows = [torch.randint(0, vocab_size, (shape[1],), generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)


@dataclass(frozen=True)
class UniformNoise(DiffusionProcess):
    vocab_size: int
    block_size: int
    attention: Attention = "block_causal"
    name: str = "uniform_noise"
    sampler: ClassVar[str] = "uniform"
    mask_token: ClassVar[bool] = False

    def noised(self, tokens: torch.Tensor) -> torch.Tensor:
        raise UserError(NO_MASK.format(what="reading which positions hold noise from the tokens"))

    def corrupt(
        self, tokens: torch.Tensor, where: torch.Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """``tokens`` with fresh uniform ids at ``where`` (``[B, L]``; per-row ``generators`` optional)."""
        noise = uniform_tokens(tuple(tokens.shape), self.vocab_size, generators, tokens.device)
        return torch.where(where, noise, tokens)

    def is_noise_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """All False: every id may be committed (noise uses the real vocabulary)."""
        return torch.zeros_like(tokens, dtype=torch.bool)

    def forbid_noise(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` unchanged: no id is reserved for noise."""
        return logits

    def forbid_noise_(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def answer_blocks(self, prompt_mask: torch.Tensor, gen_length: int, block_length: int) -> torch.Tensor:
        """Canvases of ``block_size`` answer tokens, decoded in order (the prompt is encoded, not in a canvas)."""
        if block_length != self.block_size:
            raise UserError(
                f"block_length ({block_length}) must equal DiffusionGemma's canvas_length ({self.block_size})"
            )
        return super().answer_blocks(prompt_mask, gen_length, block_length)

    def in_reach(self, answer_blocks: torch.Tensor, current: int) -> torch.Tensor:
        """The current canvas only: finished canvases are in the encoder's cache."""
        return answer_blocks == current

    def scoring_logits(self, *args: object, **options: object) -> torch.Tensor:
        raise UserError(NO_MASK.format(what="scoring a corrupted canvas (one-step, MC-ELBO, SPG/ESPO/BGPO)"))

    def two_stream_logits(self, *args: object) -> torch.Tensor:
        raise UserError(NO_MASK.format(what="[x_t ; x_0] two-stream scoring"))
