"""The uniform-noise block sampler of DiffusionGemma, recording what a renoise replay rescores.

The loop is the driver's (``rollouts.driver``); the parts are in ``rollouts/uniform/``.
Per canvas (block): encode the uncached context into the cache, start from uniform
ids, then for n = N..1: logits = decode(x_n, SC = z_{n+1}); z_n = logits / T_n (linear
temperature schedule); sample s_n ~ softmax(z_n) at every slot; accept the lowest-entropy
slots whose summed entropy, the largest left out, stays within the bound; the next canvas
keeps s_n at accepted slots and fresh uniform ids elsewhere; z_n conditions the next step.
A row stops when its argmax canvas repeats for ``stability_threshold`` steps and its mean
entropy is below ``confidence_threshold``; its block is the argmax canvas of that step
(docs/diffusion-gemma.md).

Randomness: without ``generators`` every draw is on the global RNG in transformers' order
(so the tokens equal ``DiffusionGemmaForBlockDiffusion.generate`` under the same seed);
with one ``torch.Generator`` per row, a row's tokens do not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.rollouts.driver import SamplerParts, drive
from unmask.rollouts.uniform.adaptive_stop import AdaptiveStop
from unmask.rollouts.uniform.entropy_bound import EntropyBound
from unmask.rollouts.uniform.predict import SelfConditionedDecode
from unmask.rollouts.uniform.readout import ArgmaxReadout
from unmask.rollouts.uniform.record import UniformRecord
from unmask.rollouts.uniform.renoise import Renoise
from unmask.rollouts.uniform.round_start import EncodeAndSeed
from unmask.rollouts.uniform.state import UniformCanvas


@dataclass(frozen=True)
class UniformSettings:
    """transformers' ``generate`` defaults; ``eos_token_id`` / ``pad_token_id`` None = no EOS padding."""

    max_new_tokens: int = 256
    steps: int = 48
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_new_tokens < 1 or self.stability_threshold < 0:
            raise UserError("uniform sampler: steps and max_new_tokens must be >= 1, stability_threshold >= 0")
        if not 0 <= self.t_min < self.t_max or self.entropy_bound <= 0 or self.confidence_threshold <= 0:
            raise UserError("uniform sampler: need 0 <= t_min < t_max, entropy_bound > 0, confidence_threshold > 0")

    def temperature(self, n: int) -> torch.Tensor:
        """T_n = t_min + (t_max - t_min) · n / N, in float32 as transformers computes it (bit parity)."""
        return self.t_min + (self.t_max - self.t_min) * (torch.tensor(n, dtype=torch.int32) / self.steps)


@dataclass
class UniformTrajectory:
    """A rollout and, per executed step t (flat over blocks and steps), the replay's inputs.

    ``step_canvas[t]`` is the canvas x_n decoded at step t, ``step_sc[t]`` its SC input as
    soft embeddings (zeros at a block's first step), ``step_accept[t]`` the accepted set
    A_n, ``step_sample[t]`` the draw s_n; x_{n-1} = where(A_n, s_n, uniform). ``step_active
    [t, b]``: row b was still denoising (not frozen by the stop rule, not finished at EOS).
    ``step_logprob[t]`` = log softmax(z_n) at s_n. ``step_argmax[t]`` the argmax canvas y_n
    (frozen rows keep theirs: MDPO grades it). ``stop_step[k, b]``: the step n* whose
    argmax became block k (the last n run when the rule never fired).
    """

    sequences: torch.Tensor
    prompt_length: int
    step_canvas: torch.Tensor
    step_sample: torch.Tensor
    step_accept: torch.Tensor
    step_logprob: torch.Tensor
    step_sc: torch.Tensor
    step_temperature: torch.Tensor
    step_n: torch.Tensor
    step_block: torch.Tensor
    step_active: torch.Tensor
    stop_step: torch.Tensor
    step_argmax: torch.Tensor

    def select(self, rows: torch.Tensor) -> UniformTrajectory:
        """Only the given batch rows (``[T]`` step fields are shared by all rows)."""
        per_step = {name: getattr(self, name)[:, rows] for name in PER_STEP_ROW}
        return replace(self, sequences=self.sequences[rows], stop_step=self.stop_step[:, rows], **per_step)

    def to(self, device: torch.device | str) -> UniformTrajectory:
        return replace(self, **{k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)})

    def intermediate_answers(self, answers: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """``[T, B, G]`` from the final ``answers [B, G]``: at step t of block k, the blocks before k, then
        that step's argmax canvas y_n, then padding (MDPO's grading)."""
        length = self.step_argmax.shape[-1]
        out = answers.new_full((len(self.step_n), *answers.shape), pad_token_id)
        for t, block in enumerate(self.step_block.tolist()):
            out[t, :, : block * length] = answers[:, : block * length]
            out[t, :, block * length : (block + 1) * length] = self.step_argmax[t]
        return out

    @classmethod
    def cat(cls, parts: list[UniformTrajectory]) -> UniformTrajectory:
        """Rows of several rollouts (e.g. pool workers), whose canvases may have stopped at other steps.

        The joined steps run, per canvas, from N down to the last step any part ran; a part's
        rows are inactive (``step_active`` False) at steps it did not run, which the replay skips.
        ``sequences`` are right-padded with 0 where a part ended early (``Trajectory.tokens`` holds
        the padded answers).
        """
        layout = sorted({key for part in parts for key in part.steps()}, key=lambda key: (key[0], -key[1]))
        temperature = {int(n): part.step_temperature[t] for part in parts for t, n in enumerate(part.step_n.tolist())}
        per_step: dict[str, list[torch.Tensor]] = {name: [] for name in PER_STEP_ROW}
        for part in parts:
            index, ran = part.gather_index(layout)
            for name in PER_STEP_ROW:
                per_step[name].append(getattr(part, name)[index])
            per_step["step_active"][-1] = per_step["step_active"][-1] & ran[:, None]
        blocks = max(part.stop_step.shape[0] for part in parts)
        width = max(part.sequences.shape[1] for part in parts)
        return replace(
            parts[0],
            sequences=torch.cat([F.pad(part.sequences, (0, width - part.sequences.shape[1])) for part in parts]),
            stop_step=torch.cat([F.pad(part.stop_step, (0, 0, 0, blocks - part.stop_step.shape[0]), value=1)
                                 for part in parts], 1),
            step_n=torch.tensor([n for _, n in layout]), step_block=torch.tensor([k for k, _ in layout]),
            step_temperature=torch.stack([temperature[n] for _, n in layout]),
            **{name: torch.cat(values, 1) for name, values in per_step.items()},
        )  # fmt: skip

    def steps(self) -> list[tuple[int, int]]:
        """``(block, n)`` of every recorded step, in order."""
        return list(zip(self.step_block.tolist(), self.step_n.tolist(), strict=True))

    def gather_index(self, layout: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """For each ``(block, n)`` of ``layout``: this rollout's step (its block's last one when it stopped
        earlier, step 0 for a block it never ran) and whether it ran that step."""
        own = {key: t for t, key in enumerate(self.steps())}
        last = {block: t for t, (block, _) in enumerate(self.steps())}
        index = [own.get(key, last.get(key[0], 0)) for key in layout]
        device = self.step_n.device
        return torch.tensor(index, device=device), torch.tensor([key in own for key in layout], device=device)


#: the recorded ``[T, B, ...]`` fields (``step_temperature``, ``step_n``, ``step_block`` are ``[T]``)
PER_STEP_ROW = ("step_canvas", "step_sample", "step_accept", "step_logprob", "step_sc", "step_active", "step_argmax")


def generate_uniform(
    model: DiffusionGemma,
    prompt: torch.Tensor,
    settings: UniformSettings,
    attention_mask: torch.Tensor | None = None,
    generators: Sequence[torch.Generator] | None = None,
    record: bool = True,
) -> UniformTrajectory:
    """Sample ``ceil(max_new_tokens / canvas_length)`` canvases after ``prompt [B, P]`` (left padding in ``attention_mask``)."""
    b, p = prompt.shape
    text = model.text_config
    canvas = UniformCanvas(sequences=prompt, context=prompt, cache=model.new_cache(),
                           padded=None if attention_mask is None else attention_mask.bool(),
                           finished=torch.zeros(b, dtype=torch.bool, device=prompt.device))  # fmt: skip
    recorder = UniformRecord(record, canvas, text.hidden_size, model.dtype)
    parts = SamplerParts(
        rounds=-(-settings.max_new_tokens // model.config.canvas_length),
        start_round=EncodeAndSeed(model, canvas, settings.steps, generators),
        predict=SelfConditionedDecode(model, canvas, settings.steps, settings.temperature, generators),
        decide=EntropyBound(settings.entropy_bound), apply=Renoise(canvas, text.vocab_size, generators), record=recorder,
        stop=AdaptiveStop(canvas, settings.stability_threshold, settings.confidence_threshold),
        end_round=ArgmaxReadout(canvas, settings.eos_token_id, settings.pad_token_id),
    )  # fmt: skip
    with torch.no_grad():
        drive(parts)
    steps = {f.name: torch.empty(0) for f in fields(UniformTrajectory) if f.name.startswith("step_")}
    return UniformTrajectory(sequences=canvas.sequences, prompt_length=p, stop_step=torch.stack(canvas.stops),
                             **{**steps, **recorder.tensors()})  # fmt: skip
