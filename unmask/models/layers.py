"""Transformer building blocks shared by every family (tiny, LLaDA, Dream, SDAR).

The math lives here once; family modules only hold the weights under their
official names and call these functions, so a fix to attention or rotary applies
to all families at the same time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unmask.models.kv_cache import KVHook


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (``weight``).

    Normalises in float32 and casts back before scaling, the order LLaDA's and
    Qwen2's reference code use, so bf16 outputs match the official models.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[B, 1, L, head_dim]`` for the half-split rotary layout.

    Computed from explicit positions (not a cached table) so that left padding and
    caches that evaluate a slice of the sequence get the right angles.
    """
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.float()[..., None] * inv_freq  # [B, L, hd/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, hd]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, L, hd]``: pairs are (i, i + hd/2), angles in float32."""
    h = x.float()
    first, second = h.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


def attention(
    x: torch.Tensor,
    q_proj: nn.Module,
    k_proj: nn.Module,
    v_proj: nn.Module,
    out_proj: nn.Module,
    n_heads: int,
    n_kv_heads: int,
    rope: tuple[torch.Tensor, torch.Tensor],
    key_mask: torch.Tensor | None,
    kv: KVHook | None = None,
    queries: torch.Tensor | None = None,
    q_norm: nn.Module | None = None,
    k_norm: nn.Module | None = None,
) -> torch.Tensor:
    """Bidirectional multi-head (or grouped-query) self-attention through SDPA.

    ``key_mask`` ``[B, 1, 1, L]`` (True = attend) hides padding from every query;
    ``[B, 1, n, L]`` masks per query (a prompt blind to the answer, a block-causal mask).
    ``q_norm`` / ``k_norm`` normalise each head of q / k before rotary (Qwen3, SDAR).
    ``kv`` exchanges the keys/values of ``x``'s columns for those of the whole
    canvas (a ``KVCache`` hook), so ``x`` may hold only the recomputed columns.
    ``queries`` (``[n]`` columns of ``x``) returns the output of those columns only,
    which still attend to every key: the last block needs no more to give logits.
    """
    b, length, _ = x.shape
    k = k_proj(x).view(b, length, n_kv_heads, -1)
    v = v_proj(x).view(b, length, n_kv_heads, -1).transpose(1, 2)
    k = apply_rotary((k if k_norm is None else k_norm(k)).transpose(1, 2), *rope)
    if queries is not None:
        x, rope = x[:, queries], (rope[0][:, :, queries], rope[1][:, :, queries])
        key_mask = key_mask if key_mask is None or key_mask.shape[2] == 1 else key_mask[:, :, queries]
        length = len(queries)
    q = q_proj(x).view(b, length, n_heads, -1)
    q = apply_rotary((q if q_norm is None else q_norm(q)).transpose(1, 2), *rope)
    if kv is not None:
        k, v = kv(k, v)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=n_kv_heads != n_heads
    )
    return out_proj(out.transpose(1, 2).reshape(b, length, -1))


def swiglu(x: torch.Tensor, gate: nn.Module, up: nn.Module, down: nn.Module) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))``."""
    return down(F.silu(gate(x)) * up(x))


def run_blocks(
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    key_mask: torch.Tensor | None,
    use_checkpointing: bool,
    kv_hooks: Sequence[KVHook] | None = None,
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the residual blocks, optionally recomputing activations in backward.

    ``kv_hooks`` holds one ``KVCache`` hook per block (cached decoding, no grad).
    ``queries`` (``[n]`` columns) makes the last block compute only those columns'
    outputs (``[B, n, d]``): every column's keys/values are still needed there, its
    attention outputs and MLP only where logits are read.
    """
    for index, block in enumerate(blocks):
        call: Callable[..., torch.Tensor] = block
        kv = None if kv_hooks is None else kv_hooks[index]
        last = None if index < len(blocks) - 1 else queries
        if use_checkpointing and torch.is_grad_enabled():
            x = checkpoint(call, x, rope, key_mask, kv, last, use_reentrant=False)
        else:
            x = call(x, rope, key_mask, kv, last)
    return x
