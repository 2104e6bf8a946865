"""DiffusionGemma's adaptive stop: a row stops when its argmax canvas is stable and its entropy is low."""

from __future__ import annotations

import torch

from unmask.rollouts.uniform.state import UniformCanvas, UniformStep


class AdaptiveStop:
    """After a step: the argmax canvas equals the last ``stability_threshold`` ones and the mean entropy of
    softmax(z) is below ``confidence_threshold``; the round ends when every row has stopped."""

    def __init__(self, canvas: UniformCanvas, stability_threshold: int, confidence_threshold: float) -> None:
        self.canvas, self.stability, self.confidence = canvas, stability_threshold, confidence_threshold
        self.block = -1  # the round whose argmax canvases ``history`` holds
        self.history = torch.empty(0)  # [S, B, L] the last S argmax canvases (-1 before the round has S)

    def __call__(self, step: UniformStep, accept: torch.Tensor) -> bool:
        c = self.canvas
        if self.block != c.block:
            self.block, self.history = c.block, torch.full((self.stability, *c.argmax.shape), -1, device=c.argmax.device)
        stable = (self.history == c.argmax[None]).all(-1).all(0)
        if self.stability:
            self.history = torch.cat([self.history[1:], c.argmax[None]])
        # the step's own entropy: a live row's z is the step's logits, and a stopped row stays stopped
        confident = step.entropy.mean(-1) < self.confidence
        c.stop_at = torch.where(c.frozen, c.stop_at, torch.full_like(c.stop_at, step.n))
        c.frozen = c.frozen | (stable & confident)
        return bool(c.frozen.all())
