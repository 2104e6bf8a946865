"""Advantages shared by every objective: group baselines, MDPO per-step values, wd1 weights.

Each advantage a recipe can name is registered in ``ADVANTAGES``; the group filters (which
prompts' groups train at all, applied before advantages) in ``GROUP_FILTERS``.

Rewards arrive flat, ``[N]`` with ``N = prompts × G`` and the ``G`` answers of a
prompt contiguous (the order the trainer samples them in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from unmask.rl.registry import Registry

Scale = Literal["group", "batch", "none"]


def _groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    if values.shape[0] % group_size:
        raise ValueError(f"{values.shape[0]} rewards do not split into groups of {group_size}")
    return values.reshape(-1, group_size, *values.shape[1:])


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Scale = "none", eps: float = 1e-4
) -> torch.Tensor:
    """``r_i − mean_g(r)``, optionally divided by the group's or the batch's std (TRL semantics)."""
    grouped = _groups(rewards.float(), group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    if scale == "group":
        centred = centred / (grouped.std(1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.float().std() + eps)
    return centred.reshape(rewards.shape)


def all_wrong_groups(correct: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[N / G]`` bool: groups where no answer is correct (zero advantage everywhere)."""
    return ~_groups(correct.bool(), group_size).any(1)


def mdpo_step_values(step_rewards: torch.Tensor) -> torch.Tensor:
    """MDPO's raw per-step value ``Ã_t = 1 + (R_t − R_{t−1}) + m_t`` for ``[N, T]`` rewards.

    ``R_{−1} = 0``; ``m_t`` is the mean of ``R`` over later steps and
    ``m_{T−1} = R_{T−1}``. A step scores when it improves the answer and when good
    answers follow from it.
    """
    rewards = step_rewards.float()
    steps = rewards.shape[1]
    previous = torch.cat([torch.zeros_like(rewards[:, :1]), rewards[:, :-1]], dim=1)
    later_sum = rewards.flip(1).cumsum(1).flip(1) - rewards  # Σ_{t' > t} R_{t'}
    later_count = torch.arange(steps - 1, -1, -1, device=rewards.device).clamp(min=1)
    future = later_sum / later_count
    future[:, -1] = rewards[:, -1]
    return 1.0 + (rewards - previous) + future


def mdpo_advantages(step_rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Per-step values normalised across each group: ``(Ã − mean_g) / (std_g + eps)``, ``[N, T]``."""
    grouped = _groups(mdpo_step_values(step_rewards), group_size)
    normalised = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + eps)
    return normalised.reshape(step_rewards.shape)


def top_steps(advantages: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` steps of each answer with the largest ``|A_t|``, ``[N, k]`` ascending.

    Chosen per answer, as the published MDPO trainer does: each answer trains the
    steps where its own advantage is largest, not those of its group's sum.
    """
    k = min(k, advantages.shape[1])
    return advantages.abs().topk(k, dim=1).indices.sort(dim=1).values


def wd1_weights(advantages: torch.Tensor, group_size: int, psi: float) -> torch.Tensor:
    """``w⁺ − w⁻`` with ``w^± = softmax_g(±ψA)``: the coefficient of ``log π̂(o_i)`` in wd1."""
    grouped = _groups(advantages.float(), group_size)
    weights = torch.softmax(psi * grouped, dim=1) - torch.softmax(-psi * grouped, dim=1)
    return weights.reshape(advantages.shape)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``r_i − mean_{j≠i} r_j = G/(G−1)·(r_i − mean_g r)``: a baseline that ignores the answer itself (ESPO)."""
    return group_advantages(rewards, group_size) * group_size / (group_size - 1)


#: ``(rewards, group_size, config) -> advantages``; per-step parts take ``[N, T]`` rewards
Advantage = Callable[[torch.Tensor, int, Any], torch.Tensor]
ADVANTAGES: Registry[Advantage] = Registry("advantage estimator")


@ADVANTAGES.register("group")
def _group(rewards: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    """GRPO's: the group mean removed, divided by the std the recipe's ``scale_rewards`` names."""
    return group_advantages(rewards, group_size, config.scale_rewards)


@ADVANTAGES.register("zscore")
def _zscore(rewards: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    """TraceRL's: ``(r − mean_g) / std_g`` with the population std, exactly 0 for an all-equal group."""
    grouped = _groups(rewards.float(), group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    std = grouped.std(1, correction=0, keepdim=True)
    return torch.where(std > 0, centred / std.clamp(min=torch.finfo(std.dtype).tiny), 0.0).reshape(rewards.shape)


@ADVANTAGES.register("leave_one_out")
def _leave_one_out(rewards: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    return leave_one_out_advantages(rewards, group_size)


@ADVANTAGES.register("wd1", needs=("psi",))
def _wd1(rewards: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    """wd1's coefficients ``w⁺ − w⁻`` of the unscaled group advantages."""
    return wd1_weights(group_advantages(rewards, group_size), group_size, config.psi)


@ADVANTAGES.register("mdpo", per_step=True)
def _mdpo(step_rewards: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    return mdpo_advantages(step_rewards, group_size)


def truncated(answer_lengths: torch.Tensor, gen_length: int, margin: int | None) -> torch.Tensor:
    """``[N]`` bool: answers of at least ``gen_length − margin`` tokens (TraceRL counts them wrong: a
    cut-off answer's final line is not its conclusion); all False when ``margin`` is None."""
    if margin is None:
        return torch.zeros_like(answer_lengths, dtype=torch.bool)
    return answer_lengths >= gen_length - margin


#: ``(correct [N], group_size, config) -> [N / G]`` bool, the groups whose answers train
GroupFilter = Callable[[torch.Tensor, int, Any], torch.Tensor]
GROUP_FILTERS: Registry[GroupFilter] = Registry("group filter")


@GROUP_FILTERS.register("none")
def _keep_all(correct: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    return torch.ones(correct.shape[0] // group_size, dtype=torch.bool, device=correct.device)


@GROUP_FILTERS.register("correct_fraction", needs=("correct_fraction_min", "correct_fraction_max"))
def _correct_fraction(correct: torch.Tensor, group_size: int, config: Any) -> torch.Tensor:
    """TraceRL's: keep a prompt when the share of its answers judged correct is within
    ``[correct_fraction_min, correct_fraction_max]`` (published 0.2 and 0.8); nearly solved and
    nearly hopeless prompts carry little signal for their cost."""
    fraction = _groups(correct.float(), group_size).mean(1)
    return (fraction >= config.correct_fraction_min) & (fraction <= config.correct_fraction_max)
