"""Attention masks of block-diffusion families: block-causal, and the two-stream training mask.

A block-diffusion LM (SDAR, TraDo; docs/models.md) splits the sequence into blocks
of ``block_size`` tokens: attention is bidirectional inside a block and causal
across blocks. Block ids are counted on compact positions (the rotary positions,
0 = a row's first real token), so left padding does not move the grid and the
prompt's tail shares a block with the first answer tokens, as SDAR was trained
("global" origin). Masks are bool ``[B, 1, Lq, Lk]``, True = attend, the form
``layers.attention`` and torch SDPA take.

Every column may attend to itself: a padding query would otherwise see no key,
and SDPA turns an empty row into NaN, which then leaks through the values of
that column into every query that (with weight zero) reads it. A real token
always sees itself anyway, so this changes no real logit.
"""

from __future__ import annotations

import torch

from unmask.models.base import positions_from_mask


def compact_positions(input_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``[B, L]`` rotary positions: ``0..L-1``, or counted from each row's first real token."""
    if valid is not None:
        return positions_from_mask(valid)
    b, length = input_ids.shape
    return torch.arange(length, device=input_ids.device).expand(b, length)


def block_ids(positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Block of each token: ``⌊position / block_size⌋`` (global origin on compact positions)."""
    return torch.div(positions, block_size, rounding_mode="floor")


def block_causal_mask(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    block_size: int,
) -> torch.Tensor:
    """``[B, 1, n, T + n]``: query ``i`` sees key ``j`` iff ``g(j) ≤ g(i)`` and key ``j`` is a real token.

    The last ``n`` keys are the queries' own columns (a full forward has ``T = 0``;
    a cached forward puts the ``T`` cached columns first). ``key_valid`` ``[B, T + n]``
    is False at padding (``None``: no padding).
    """
    n, total = query_positions.shape[1], key_positions.shape[1]
    g_query = block_ids(query_positions, block_size)
    g_key = block_ids(key_positions, block_size)
    allowed = g_key[:, None, :] <= g_query[:, :, None]
    if key_valid is not None:
        allowed = allowed & key_valid.bool()[:, None, :]
    own = torch.zeros(n, total, dtype=torch.bool, device=allowed.device)
    own[:, total - n :] = torch.eye(n, dtype=torch.bool, device=allowed.device)
    return (allowed | own)[:, None]


def two_stream_mask(positions: torch.Tensor, valid: torch.Tensor | None, block_size: int) -> torch.Tensor:
    """``[B, 1, 2n, 2n]`` mask of the training input ``[x_t ; x_0]`` (both streams at the same positions).

    With ``N`` the noisy first half and ``C`` the clean second half, query ``i`` sees
    key ``j`` iff ``N→N`` and same block (bidirectional inside the noisy block),
    ``N→C`` and an earlier block (clean context only, never its own clean copy),
    or ``C→C`` and ``g(j) ≤ g(i)`` (the clean stream is plain block-causal); never
    ``C→N``. So one forward scores every noisy block against clean earlier blocks.
    """
    g = block_ids(positions, block_size)
    same = g[:, None, :] == g[:, :, None]
    earlier = g[:, None, :] < g[:, :, None]
    noisy_rows = torch.cat([same, earlier], dim=-1)
    clean_rows = torch.cat([torch.zeros_like(same), same | earlier], dim=-1)
    allowed = torch.cat([noisy_rows, clean_rows], dim=1)
    if valid is not None:
        allowed = allowed & valid.bool().repeat(1, 2)[:, None, :]
    own = torch.eye(allowed.shape[-1], dtype=torch.bool, device=allowed.device)
    return (allowed | own)[:, None]
