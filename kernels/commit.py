"""Which masked positions a denoising step commits, decided on the device.

Both rules are a handful of batched tensor ops with no ``.item()`` / ``.tolist()``,
so a GPU sampler never waits for the host between steps (docs/sampling.md §1, §4).
"""

from __future__ import annotations

import torch


def _candidates(confidence: torch.Tensor, eligible: torch.Tensor | None) -> torch.Tensor:
    if confidence.dim() != 2:
        raise ValueError(f"confidence must be [B, L], got shape {tuple(confidence.shape)}")
    if eligible is None:
        return confidence != float("-inf")
    if eligible.shape != confidence.shape or eligible.dtype != torch.bool:
        raise ValueError(f"eligible must be a bool tensor of shape {tuple(confidence.shape)}")
    return eligible


def topk_commits(confidence: torch.Tensor, k: torch.Tensor | int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k[b]`` most confident eligible positions of each row ``b`` (``k`` int or ``[B]``).

    Ties go to the lower position (stable sort). A row never commits more than its
    eligible positions, whatever ``k`` says.
    """
    candidates = _candidates(confidence, eligible)
    batch, length = confidence.shape
    k = torch.as_tensor(k, device=confidence.device).long().expand(batch)
    scores = confidence.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(length, device=confidence.device).expand(batch, length)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return (rank < k.unsqueeze(1)) & candidates


def threshold_commits(
    confidence: torch.Tensor, threshold: float, eligible: torch.Tensor | None = None
) -> torch.Tensor:
    """Every eligible position above ``threshold``; a row with none commits its single best.

    Rows without eligible positions commit nothing (Fast-dLLM's rule, docs/sampling.md §4).
    """
    candidates = _candidates(confidence, eligible)
    above = candidates & (confidence > threshold)
    best = confidence.masked_fill(~candidates, float("-inf")).argmax(1, keepdim=True)
    fallback = torch.zeros_like(candidates).scatter_(1, best, True)
    return above | (fallback & candidates & ~above.any(1, keepdim=True))
