"""Starting a DiffusionGemma round: encode the committed context into the cache, seed a uniform canvas."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from unmask.diffusion.uniform import uniform_tokens
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.rollouts.uniform.state import UniformCanvas


class EncodeAndSeed:
    """The causal encoder writes the context (the prompt, then each committed block) into the KV cache;
    the canvas starts as uniform ids and runs ``steps`` denoising steps at most."""

    def __init__(self, model: DiffusionGemma, canvas: UniformCanvas, steps: int,
                 generators: Sequence[torch.Generator] | None) -> None:
        self.model, self.canvas, self.steps, self.generators = model, canvas, steps, generators

    def __call__(self, k: int) -> int:
        c, model = self.canvas, self.model
        length, device = model.config.canvas_length, c.sequences.device
        done, b = c.sequences.shape[1], c.sequences.shape[0]
        model.encode(c.context, c.cache, c.padded, torch.arange(done - c.context.shape[1], done, device=device)[None])
        c.block = k
        c.positions = torch.arange(done, done + length, device=device)[None]
        c.decoder_mask = None if c.padded is None else F.pad(c.padded, (0, length), value=True)
        c.canvas = uniform_tokens((b, length), model.text_config.vocab_size, self.generators, device)
        c.argmax, c.stop_at, c.z = c.canvas, torch.full((b,), 1, device=device), None
        c.frozen = torch.zeros(b, dtype=torch.bool, device=device)
        return self.steps
