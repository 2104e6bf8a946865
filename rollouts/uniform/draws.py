"""DiffusionGemma's random draws: on the global RNG in transformers' order, or one generator per row.

With per-row generators a stopped (frozen) row draws nothing: its draws would be discarded
anyway, and not making them keeps each row's generator stream its own, whether the batch
around it keeps denoising or stops (a row's tokens do not depend on its batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unmask.diffusion.uniform import uniform_tokens


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator] | None, frozen: torch.Tensor) -> torch.Tensor:
    """One token per slot from ``probs [B, L, V]``: every row in one call on the global RNG, or one
    generator per row, where a ``frozen`` row draws nothing and gets its argmax."""
    b, length, vocab = probs.shape
    if generators is None:
        return torch.multinomial(probs.view(-1, vocab), 1).view(b, length)
    return torch.stack([
        probs[i].argmax(-1) if stopped else torch.multinomial(probs[i], 1, generator=g)[:, 0]
        for i, (g, stopped) in enumerate(zip(generators, frozen.tolist(), strict=True))
    ])


def noise_tokens(
    canvas: torch.Tensor, vocab: int, generators: Sequence[torch.Generator] | None, frozen: torch.Tensor
) -> torch.Tensor:
    """Fresh uniform ids shaped like ``canvas``; with per-row generators a ``frozen`` row keeps its canvas (no draw)."""
    if generators is None:
        return uniform_tokens(tuple(canvas.shape), vocab, None, canvas.device)
    live = (~frozen).nonzero()[:, 0]
    noise = canvas.clone()
    if len(live):
        own = [generators[i] for i in live.tolist()]
        noise[live] = uniform_tokens((len(own), canvas.shape[1]), vocab, own, canvas.device)
    return noise
