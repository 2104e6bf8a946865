"""A DiffusionGemma step's prediction: the decoder on x_n with self-conditioning, tempered by T_n, and a draw."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.distributions import Categorical

from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.rollouts.uniform.draws import draw
from unmask.rollouts.uniform.state import UniformCanvas, UniformStep


class SelfConditionedDecode:
    """Step ``i`` runs noise level n = steps - i: z_n = decode(x_n, SC = soft embeddings of z_{n+1}) / T_n."""

    def __init__(self, model: DiffusionGemma, canvas: UniformCanvas, steps: int,
                 temperature: Callable[[int], torch.Tensor], generators: Sequence[torch.Generator] | None) -> None:
        self.model, self.canvas, self.steps, self.generators = model, canvas, steps, generators
        self.temperature = temperature  # the schedule T_n

    def __call__(self, i: int) -> UniformStep:
        c, model, n = self.canvas, self.model, self.steps - i
        temperature = self.temperature(n)
        # SC reads the previous logits in the model's dtype (transformers casts them before embedding)
        sc = None if c.z is None else model.soft_embeddings(c.z.to(model.dtype))
        logits = model.decode(c.canvas, c.cache, sc, attention_mask=c.decoder_mask, position_ids=c.positions) / temperature
        probs = logits.softmax(-1, dtype=torch.float32)
        sample = draw(probs, self.generators, c.frozen)
        return UniformStep(n, temperature, c.canvas, sc, logits, probs, sample, Categorical(logits=logits).entropy())
