"""DiffusionGemma rollouts as the trainer and ``unmask eval`` take them: ``generate``'s keywords in, a ``Trajectory`` out.

The uniform-noise sampler (``uniform_sampler.generate_uniform``) has its own settings
(temperature schedule, entropy bound, adaptive stop); of ``generate``'s keywords it reads
``gen_length`` (``max_new_tokens``), ``block_length`` (must be the canvas length), ``steps``
(the total over all canvases, as ``generate`` counts them, so ``steps / blocks`` denoising
steps per canvas), ``seed`` (one generator per row, so a row's tokens do not depend on its
batch) and ``record``. The absorbing sampler's settings (remasking, threshold, schedule,
cache, CFG, temperature, ...) have no meaning here: the trainer and ``unmask eval`` pass
every ``SamplerConfig`` field, so each may come at its default, and any other value is
refused in one line rather than ignored (docs/diffusion-gemma.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.recipe import RolloutConfig
from unmask.rollouts.generate import Seed, row_seeds
from unmask.rollouts.record import answer_mask
from unmask.rollouts.sampler_config import SamplerConfig
from unmask.rollouts.trajectory import Trajectory
from unmask.rollouts.uniform_sampler import UniformSettings, UniformTrajectory, generate_uniform


def rollout_settings(model: DiffusionGemma, gen_length: int, steps: int, block_length: int | None) -> UniformSettings:
    """The family's sampler defaults with the rollout's length and steps per canvas, EOS padding on."""
    length = model.config.canvas_length
    if gen_length % length or block_length not in (None, length):
        raise UserError(f"gen_length ({gen_length}) must be a multiple of DiffusionGemma's canvas_length ({length}), "
                        f"and block_length equal to it (got {block_length})")  # fmt: skip
    blocks = gen_length // length
    if steps % blocks:
        raise UserError(f"steps ({steps}) must be a multiple of the {blocks} canvases of {gen_length} tokens")
    return UniformSettings(max_new_tokens=gen_length, steps=steps // blocks, eos_token_id=model.eos_token_ids[0],
                           pad_token_id=model.pad_token_id)  # fmt: skip


def refuse_absorbing_settings(settings: dict[str, Any]) -> None:
    """One ``UserError`` for the first of ``generate``'s settings that is not at ``SamplerConfig``'s default
    (this sampler does not read them). ``temperature`` may also be the RL rollout's default, which the
    trainer passes whether or not a recipe sets it."""
    fields = SamplerConfig.model_fields
    for name, value in settings.items():
        if name not in fields:
            raise UserError(f"unknown sampler setting {name}")
        default = fields[name].default
        if value != default and not (name == "temperature" and value == RolloutConfig.model_fields[name].default):
            raise UserError(f"{name}={value!r}: DiffusionGemma's sampler does not use it (its temperature schedule, "
                            f"entropy-bound accept and adaptive stop decide instead); leave it at {default!r}")  # fmt: skip


def generate_renoise(
    model: DiffusionGemma,
    prompt_ids: torch.Tensor,
    *,
    gen_length: int,
    steps: int,
    block_length: int | None = None,
    attention_mask: torch.Tensor | None = None,
    seed: Seed = None,
    record: bool = False,
    hints: torch.Tensor | None = None,
    **absorbing: Any,
) -> Trajectory:
    """``generate`` for a uniform-noise family: one ``torch.Generator`` per row from ``seed``."""
    refuse_absorbing_settings(absorbing)
    if hints is not None:
        raise UserError("DiffusionGemma's uniform sampler takes no hints (IGPO's inpainting needs a mask token)")
    settings = rollout_settings(model, gen_length, steps, block_length)
    seeds = row_seeds(seed, prompt_ids.shape[0])
    generators = [torch.Generator(device=prompt_ids.device).manual_seed(s) for s in seeds]
    run = generate_uniform(model, prompt_ids, settings, attention_mask, generators, record)
    traj = to_trajectory(run, settings, attention_mask, model.config.canvas_length)
    traj.settings["seed"] = seeds
    return traj


def to_trajectory(
    run: UniformTrajectory, settings: UniformSettings, attention_mask: torch.Tensor | None, canvas_length: int
) -> Trajectory:
    """The rollout as a ``Trajectory``: answers padded to ``max_new_tokens`` (blocks never run when every
    row had ended); ``commit_step`` is the global step whose argmax became the position's token, and
    ``nfe`` counts the decoder passes of each row's live blocks."""
    plen, length = run.prompt_length, canvas_length
    prompt = run.sequences[:, :plen]
    answer = F.pad(run.sequences[:, plen:], (0, settings.max_new_tokens - run.sequences.shape[1] + plen),
                   value=settings.pad_token_id)  # fmt: skip
    prompt_mask = torch.ones_like(prompt, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    eos = answer == settings.eos_token_id
    stop = run.stop_step  # [K, B]: blocks run
    blocks = stop.shape[0]
    ran = settings.steps - stop.min(1).values + 1  # steps each block ran (until every row stopped)
    offsets = torch.cat([ran.new_zeros(1), ran.cumsum(0)])
    commit = (offsets[:-1, None] + settings.steps - stop).T.repeat_interleave(length, 1)  # [B, K·L]
    commit = F.pad(commit, (0, answer.shape[1] - commit.shape[1]), value=int(offsets[-1]))
    ended = eos[:, : blocks * length].reshape(-1, blocks, length).any(2).long().cumsum(1)
    live = torch.cat([torch.ones_like(ended[:, :1]), (ended[:, :-1] == 0).long()], 1)  # [B, K]: no EOS before
    return Trajectory(
        tokens=torch.cat([prompt, answer], 1),
        attention_mask=torch.cat([prompt_mask, torch.ones_like(answer, dtype=torch.bool)], 1),
        prompt_length=plen, answer_mask=answer_mask(answer, [settings.eos_token_id]), commit_step=commit,
        hint_mask=torch.zeros_like(answer, dtype=torch.bool), nfe=((settings.steps - stop.T + 1) * live).sum(1),
        settings={"sampler": "uniform", **vars(settings)},
        renoise=run if run.step_canvas.numel() else None,
    )  # fmt: skip
