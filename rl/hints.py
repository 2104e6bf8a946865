"""IGPO's inpainting hints: chunks of a reference reasoning trace revealed in the answer window.

Hints come from the reasoning part of the trace only: everything from the first
final-answer marker on is cut, so the sampler is never handed the answer.
"""

from __future__ import annotations

import re

import torch

#: where a reference solution starts stating its final answer
ANSWER_MARKERS = re.compile(r"####|<answer>|\\boxed|\\fbox|final answer|the answer is", re.IGNORECASE)


def reasoning_only(trace: str) -> str:
    """The trace up to (not including) its first final-answer marker."""
    match = ANSWER_MARKERS.search(trace)
    return (trace[: match.start()] if match else trace).rstrip()


def chunk_bounds(length: int, chunk_min: int, chunk_max: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """Split ``range(length)`` into contiguous chunks of ``chunk_min..chunk_max`` tokens."""
    bounds, start = [], 0
    while start < length:
        size = int(torch.randint(chunk_min, chunk_max + 1, (1,), generator=gen))
        bounds.append((start, min(start + size, length)))
        start += size
    return bounds


def hint_row(
    trace_ids: list[int],
    gen_length: int,
    *,
    ratio_range: tuple[float, float],
    chunk_range: tuple[int, int],
    free_tail: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """``[gen_length]`` long: trace tokens at their own offsets for a random ``η`` of the chunks, −1 elsewhere.

    The trace is cut to ``gen_length − free_tail`` tokens so the last positions stay
    free for the model's own conclusion and answer.
    """
    row = torch.full((gen_length,), -1, dtype=torch.long)
    window = max(gen_length - free_tail, 0)
    ids = torch.tensor(trace_ids[:window], dtype=torch.long)
    if ids.numel() == 0:
        return row
    low, high = ratio_range
    eta = low + (high - low) * float(torch.rand((), generator=gen))
    chunks = chunk_bounds(ids.numel(), *chunk_range, gen)
    count = max(1, round(eta * len(chunks)))
    for index in torch.randperm(len(chunks), generator=gen)[:count].tolist():
        start, end = chunks[index]
        row[start:end] = ids[start:end]
    return row


def entropy_filter(entropy: torch.Tensor, hint_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """``[B, L]`` bool: per row, the ``ceil(ratio · #hints)`` hint positions of highest entropy."""
    counts = torch.ceil(hint_mask.sum(1).float() * ratio).long()  # [B]
    ranked = entropy.masked_fill(~hint_mask, float("-inf")).argsort(dim=1, descending=True)
    rank = torch.empty_like(ranked).scatter_(1, ranked, torch.arange(entropy.shape[1], device=entropy.device).expand_as(ranked))
    return hint_mask & (rank < counts[:, None])
