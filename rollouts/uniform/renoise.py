"""Applying a DiffusionGemma step: keep the accepted draws, renoise the rest; a stopped row keeps everything."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unmask.rollouts.uniform.draws import noise_tokens
from unmask.rollouts.uniform.state import UniformCanvas, UniformStep


class Renoise:
    """x_{n-1} = where(A_n, s_n, uniform ids); the argmax canvas and the SC source z follow the live rows."""

    def __init__(self, canvas: UniformCanvas, vocab: int, generators: Sequence[torch.Generator] | None) -> None:
        self.canvas, self.vocab, self.generators = canvas, vocab, generators

    def __call__(self, step: UniformStep, accept: torch.Tensor) -> None:
        c = self.canvas
        noise = noise_tokens(c.canvas, self.vocab, self.generators, c.frozen)
        keep = c.frozen[:, None]
        c.canvas = torch.where(keep, c.canvas, torch.where(accept, step.sample, noise))
        c.argmax = torch.where(keep, c.argmax, step.logits.argmax(-1))
        c.z = step.logits if c.z is None else torch.where(keep[..., None], c.z, step.logits)
