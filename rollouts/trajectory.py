"""What a sampler hands to the RL objectives (docs/sampling.md §7).

A ``Trajectory`` holds the final canvas and, when recorded, one compact record per
denoising step. Storage is linear in ``T × L`` per sequence: the canvas before
step ``t`` is not stored but rebuilt from the masks and predictions
(``canvas(t)``), which is exact also under RCR where committed tokens can change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from unmask.diffusion.process import DiffusionProcess

if TYPE_CHECKING:
    from unmask.rollouts.uniform_sampler import UniformTrajectory

#: fields with one entry per batch row, and per-step records ``[T, B, ...]``
PER_ROW = ("tokens", "attention_mask", "answer_mask", "commit_step", "hint_mask", "nfe", "flops")
PER_STEP = ("step_masked", "step_pred", "step_confidence", "step_logprob", "step_cached")


@dataclass
class Trajectory:
    #: final canvas ``[B, P + L]`` (left-padded prompt ⊕ answer)
    tokens: torch.Tensor
    #: ``[B, P + L]`` bool, False on left padding of the prompt
    attention_mask: torch.Tensor
    #: padded prompt length ``P``
    prompt_length: int
    #: ``[B, L]`` bool: answer positions up to and including the first EOS
    answer_mask: torch.Tensor
    #: ``[B, L]`` long: global step at which each answer position got its final token (−1: hint)
    commit_step: torch.Tensor
    #: ``[B, L]`` bool: positions fixed by inpainting hints
    hint_mask: torch.Tensor
    #: ``[B]`` long: forward passes spent on each row
    nfe: torch.Tensor
    #: sampler settings and seed, enough to replay the rollout
    settings: dict[str, Any] = field(default_factory=dict)
    #: ``[B]`` long: forward FLOPs spent on each row (``rollouts.flops``), when counted
    flops: torch.Tensor | None = None
    # -- per-step record (``record=True``); T = number of steps run ---------
    #: ``[T, B, L]`` bool: answer positions masked in ``x_t`` (before step t)
    step_masked: torch.Tensor | None = None
    #: ``[T, B, L]`` long: prediction ``x̂_t`` (meaningful where ``step_masked``)
    step_pred: torch.Tensor | None = None
    #: ``[T, B, L]`` half: confidence of each prediction (RCR: running confidence)
    step_confidence: torch.Tensor | None = None
    #: ``[T, B, L]`` float: log-prob of each prediction under the sampling distribution
    step_logprob: torch.Tensor | None = None
    #: ``[T, B]`` bool: the row's forward at step t attended to cached keys/values (approximate)
    step_cached: torch.Tensor | None = None
    #: uniform-noise rollouts (DiffusionGemma): the renoise sampler's own record, which the
    #: renoise replay rescores (docs/diffusion-gemma.md); the masked per-step fields are then None
    renoise: UniformTrajectory | None = None

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def gen_length(self) -> int:
        return int(self.tokens.shape[1] - self.prompt_length)

    @property
    def num_steps(self) -> int:
        return 0 if self.step_masked is None else int(self.step_masked.shape[0])

    @property
    def prompt_ids(self) -> torch.Tensor:
        return self.tokens[:, : self.prompt_length]

    @property
    def answer_ids(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_length :]

    def canvas(self, t: int, process: DiffusionProcess) -> torch.Tensor:
        """The canvas ``x_t`` as the model saw it before step ``t`` (``[B, P + L]``).

        An unmasked answer position holds the prediction of the last earlier step
        at which it was masked (it was committed then); hints hold their token.
        ``process`` (the family's ``DiffusionLM.process``) writes the noise.
        """
        if self.step_masked is None or self.step_pred is None:
            raise ValueError("canvas() needs a trajectory generated with record=True")
        answer = self.answer_ids.clone()
        if t > 0:
            predicted = self.step_masked[:t]  # [t, B, L]
            steps = torch.arange(t, device=predicted.device).view(t, 1, 1).expand_as(predicted)
            last = torch.where(predicted, steps, torch.full_like(steps, -1)).amax(0)
            rows = torch.arange(answer.shape[0], device=answer.device)[:, None]
            cols = torch.arange(answer.shape[1], device=answer.device)[None, :]
            answer = torch.where(last >= 0, self.step_pred[last.clamp(min=0), rows, cols], answer)
        if t < self.num_steps:
            answer = process.corrupt(answer, self.step_masked[t])
        return torch.cat([self.prompt_ids, answer], dim=1)

    def select(self, rows: torch.Tensor | list[int]) -> Trajectory:
        """A trajectory with only the given batch rows."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        per_row = {
            name: None if getattr(self, name) is None else getattr(self, name)[rows]
            for name in PER_ROW
        }
        per_step = {
            name: None if getattr(self, name) is None else getattr(self, name)[:, rows]
            for name in PER_STEP
        }
        renoise = None if self.renoise is None else self.renoise.select(rows)
        return replace(self, **per_row, **per_step, renoise=renoise)

    @classmethod
    def cat(cls, parts: list[Trajectory]) -> Trajectory:
        """Rows of several trajectories with one prompt length, in order (e.g. from pool workers).

        Per-step records of parts that ran fewer steps (threshold decoding) are
        padded with steps where nothing is masked, which leaves ``canvas`` exact.
        """
        if len({part.prompt_length for part in parts}) != 1:
            raise ValueError("Trajectory.cat needs parts with the same prompt length")
        first = parts[0]
        per_row = {
            name: None if getattr(first, name) is None else torch.cat([getattr(part, name) for part in parts])
            for name in PER_ROW
        }
        steps = max(part.num_steps for part in parts)
        per_step = {}
        for name in PER_STEP:
            if getattr(first, name) is None:
                per_step[name] = None
                continue
            padded = []
            for part in parts:
                value = getattr(part, name)
                filler = part.answer_ids if name == "step_pred" else torch.zeros_like(value[0])
                extra = filler.to(value.dtype).unsqueeze(0).expand(steps - value.shape[0], *value.shape[1:])
                padded.append(torch.cat([value, extra]))
            per_step[name] = torch.cat(padded, dim=1)
        seeds = [seed for part in parts for seed in part.settings.get("seed", [])]
        renoise = None if first.renoise is None else type(first.renoise).cat([part.renoise for part in parts])
        return replace(first, **per_row, **per_step, renoise=renoise, settings={**first.settings, "seed": seeds})

    def to(self, device: torch.device | str) -> Trajectory:
        moved = {
            name: value.to(device)
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor)
        }
        renoise = None if self.renoise is None else self.renoise.to(device)
        return replace(self, **moved, renoise=renoise)
