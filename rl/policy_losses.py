"""Policy losses: what a micro-batch's scores and advantages become before aggregation.

A policy loss returns the terms to *minimise*: per token ``[B, L]`` (``level="token"``,
then weighted, joined by a token KL and aggregated) or per item ``[B]``
(``level="sequence"``; ``sequence`` is then the function that gives the sequence
value, so a sequence KL can score the reference alike). ``ratio=True`` losses compare θ with θ_old, so the trainer
scores θ_old; ``estimator`` names the estimator trait the loss reads (an ELBO, the
EUBO term, a two-pass pair). The generic PPO family is here; the losses of single
papers are registered in their own files (wd1, SPG, ESPO, BGPO, GDSD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from unmask.rl.estimators import Scores
from unmask.rl.losses import clipped_surrogate, sequence_log_ratio
from unmask.rl.registry import Registry
from unmask.rollouts.trajectory import Trajectory


@dataclass
class LossInputs:
    """One micro-batch as the parts see it."""

    traj: Trajectory
    #: one per item ``[B]``, or per token ``[B, L]`` (a critic's, rl/critic.py)
    advantages: torch.Tensor
    scores: Scores
    #: θ_old's scores, or None when θ_old is θ (the first optimizer step)
    old: Scores | None
    #: the tokens the loss reads ``[B, L]``
    mask: torch.Tensor
    config: Any

    @property
    def old_logprobs(self) -> torch.Tensor:
        return self.scores.logprobs.detach() if self.old is None else self.old.logprobs

    @property
    def length(self) -> int:
        return self.traj.gen_length

    @property
    def token_advantages(self) -> torch.Tensor:
        """The advantages broadcast against tokens: ``[B, 1]`` per item, or a critic's ``[B, L]``."""
        return self.advantages if self.advantages.dim() == 2 else self.advantages[:, None]


@dataclass
class PolicyTerms:
    values: torch.Tensor
    #: where a clip bound (no gradient there), for the clip fraction
    clipped: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: sequence-level losses: θ's per-item sequence value the loss read (a sequence KL penalises it)
    sequence: torch.Tensor | None = None


PolicyLoss = Callable[[LossInputs], PolicyTerms]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")


def token_log_ratio(x: LossInputs) -> torch.Tensor:
    """``ℓ − ℓ_old`` per token, or GSPO's masked row mean of it when ``sequence_level_ratio``; clamped to
    ``±log_ratio_clamp`` when set (TraceRL's ±10: no overflow of ``ρ``, no gradient from a runaway token)."""
    if x.config.sequence_level_ratio:
        log_ratio = sequence_log_ratio(x.scores.logprobs, x.old_logprobs, x.mask)
    else:
        log_ratio = x.scores.logprobs - x.old_logprobs
    bound = x.config.log_ratio_clamp
    return log_ratio if bound is None else log_ratio.clamp(-bound, bound)


@POLICY_LOSSES.register("clip", level="token", ratio=True)
def clip(x: LossInputs) -> PolicyTerms:
    """PPO's pessimistic ``−min(ρA, clip(ρ, 1−ε, 1+ε_high)A)`` per token (d1, MDPO, IGPO)."""
    gain, clipped = clipped_surrogate(token_log_ratio(x), x.token_advantages, x.config.epsilon, x.config.epsilon_high)
    return PolicyTerms(-gain, clipped)


@POLICY_LOSSES.register("dual_clip", level="token", ratio=True, needs=("dual_clip",))
def dual_clip(x: LossInputs) -> PolicyTerms:
    """PPO's clip, and for ``A < 0`` the term never below ``c·A`` (dual clip, ``c = dual_clip``)."""
    advantages = x.token_advantages
    gain, clipped = clipped_surrogate(token_log_ratio(x), advantages, x.config.epsilon, x.config.epsilon_high)
    floor = x.config.dual_clip * advantages
    lifted = (advantages < 0) & (floor > gain)
    return PolicyTerms(-torch.where(lifted, floor, gain), clipped | lifted)


@POLICY_LOSSES.register("surrogate", level="token", ratio=True)
def surrogate(x: LossInputs) -> PolicyTerms:
    """The unclipped importance-weighted ``−ρA``."""
    gain = torch.exp(token_log_ratio(x)) * x.token_advantages
    return PolicyTerms(-gain, torch.zeros_like(gain, dtype=torch.bool))
