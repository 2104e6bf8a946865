"""Which positions change at a step: top-k commit, threshold commit, RCR re-masking.

Each rule takes a confidence tensor (``-inf`` / ``+inf`` where a position is not a
candidate) and returns a boolean mask of the same shape.
"""

from __future__ import annotations

import torch


def topk_rows(scores: torch.Tensor, counts: list[int], *, largest: bool = True) -> torch.Tensor:
    """Mark the ``counts[r]`` highest (or lowest) scores of each row.

    One ``torch.topk`` per row with that row's ``k``, exactly as the reference
    sampler does, so that ties are broken identically (``topk`` with a larger ``k``
    may order ties differently).
    """
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    for row, k in enumerate(counts):
        if k > 0:
            chosen[row, scores[row].topk(k, largest=largest).indices] = True
    return chosen


def threshold_commit(confidence: torch.Tensor, candidates: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM rule: every candidate above ``threshold``, else the single best one.

    Decided on the device for all rows at once (no host synchronisation); a row
    without candidates commits nothing.
    """
    above = candidates & (confidence > threshold)
    best = torch.zeros_like(candidates)
    best.scatter_(1, confidence.masked_fill(~candidates, float("-inf")).argmax(1, keepdim=True), True)
    fallback = best & candidates & ~above.any(1, keepdim=True)
    return above | fallback
