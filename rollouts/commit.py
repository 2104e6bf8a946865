"""Top-k selection per row with the reference sampler's tie-breaking (commits, RCR re-masking).

Scores are ``-inf`` / ``+inf`` where a position is not a candidate; the result is a
boolean mask of the same shape. The threshold rule is :func:`unmask.kernels.select_commits`.
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

