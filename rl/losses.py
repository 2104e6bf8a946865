"""Loss pieces shared by the objectives: masked means, KL estimators, the clipped surrogate."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (not NaN) where nothing is selected."""
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``½(ℓ_ref − ℓ)²`` (MDPO)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``exp(ℓ_ref − ℓ) − (ℓ_ref − ℓ) − 1``: unbiased, non-negative (d1, IGPO)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


KL_ESTIMATORS = {"k2": kl_k2, "k3": kl_k3}


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
