"""Recording DiffusionGemma's steps: what the renoise replay rescores (``UniformTrajectory``'s step fields)."""

from __future__ import annotations

import torch

from unmask.rollouts.uniform.state import UniformCanvas, UniformStep


class UniformRecord:
    """Per executed step (flat over rounds), stacked at the end; nothing kept when off."""

    def __init__(self, on: bool, canvas: UniformCanvas, hidden: int, dtype: torch.dtype) -> None:
        self.on, self.canvas, self.hidden, self.dtype = on, canvas, hidden, dtype
        self.rows: dict[str, list[torch.Tensor]] = {}

    def __call__(self, step: UniformStep, accept: torch.Tensor) -> None:
        """After the step's apply and before its stop: ``canvas.argmax`` is y_n, ``canvas.frozen`` the rows stopped before it."""
        if not self.on:
            return
        c = self.canvas
        b, length = step.canvas.shape
        sc = torch.zeros(b, length, self.hidden, dtype=self.dtype, device=step.canvas.device) if step.sc is None else step.sc
        for key, value in (
            ("step_canvas", step.canvas), ("step_sample", step.sample), ("step_accept", accept), ("step_sc", sc),
            ("step_logprob", step.probs.gather(-1, step.sample[..., None])[..., 0].log()),
            ("step_temperature", step.temperature), ("step_n", torch.tensor(step.n)),
            ("step_block", torch.tensor(c.block)), ("step_active", ~(c.frozen | c.finished)), ("step_argmax", c.argmax),
        ):
            self.rows.setdefault(key, []).append(value)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Each recorded field stacked ``[T, ...]`` (none when off)."""
        return {name: torch.stack(values) for name, values in self.rows.items()}
