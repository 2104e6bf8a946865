"""Loss pieces shared by the objectives: masked means, KL forms (registered), the clipped surrogate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from unmask.rl.registry import Registry

#: ``(logprobs, ref_logprobs) -> penalty`` elementwise; ``level`` says what it is applied to:
#: per-token log-probs (added to token-level policy terms) or a sequence value (divided by L)
KL_FORMS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("KL form")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (not NaN) where nothing is selected."""
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


@KL_FORMS.register("k2", level="token")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``½(ℓ_ref − ℓ)²`` (MDPO)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


@KL_FORMS.register("k3", level="token")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``exp(ℓ_ref − ℓ) − (ℓ_ref − ℓ) − 1``: unbiased, non-negative (d1, IGPO)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


@KL_FORMS.register("k2_sequence", level="sequence")
def kl_k2_sequence(value: torch.Tensor, ref_value: torch.Tensor) -> torch.Tensor:
    """``½(E − E_ref)²`` of a sequence value (ESPO's ELBO, GDSD's D); the objective divides it by ``L``."""
    return 0.5 * (value - ref_value) ** 2


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised sequence log-ratio, broadcast back to ``[B, L]``.

    The value is the row mean of ``ℓ − ℓ_old``; each token keeps its own gradient
    path so the sequence ratio is differentiable through every token.
    """
    per_row = masked_mean(logprobs - old_logprobs.detach(), mask, dim=1)
    return per_row[:, None].expand_as(logprobs)


def clipped_surrogate(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic term ``min(ρA, clip(ρ, 1−ε, 1+ε_high)A)`` and where clipping bound.

    ``advantages`` broadcasts against ``log_ratio`` (``[B, 1]`` or ``[B, L]``).
    Returns the objective to *maximise* per token and a bool mask of tokens whose
    clipped term was the smaller one (no gradient flows through them).
    """
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + high) * advantages
    was_clipped = (clipped < unclipped).detach()
    return torch.minimum(unclipped, clipped), was_clipped
