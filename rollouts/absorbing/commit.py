"""Applying an absorbing-mask step: write the commits, noise the re-masked positions again, stamp the step."""

from __future__ import annotations

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.rollouts.absorbing.state import MaskedCanvas
from unmask.rollouts.rules.base import Decision, Step


class CommitAndRemask:
    """Commits become answer tokens; re-masked positions return to the process's noise."""

    def __init__(self, canvas: MaskedCanvas, process: DiffusionProcess) -> None:
        self.canvas, self.process = canvas, process

    def __call__(self, step: Step, decision: Decision) -> None:
        c = self.canvas
        commit = changed = decision.commit
        c.answer = torch.where(commit, step.pred, c.answer)
        c.masked = c.masked & ~commit
        if decision.remask is not None:
            c.answer = self.process.corrupt(c.answer, decision.remask)
            changed, c.masked = commit & ~decision.remask, c.masked | decision.remask
        c.commit_step = c.commit_step.masked_fill(changed, c.steps_run)
        c.steps_run += 1
