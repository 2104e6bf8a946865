"""FLOPs of dLLM forwards, so that rollout benchmarks report compute next to time.

A dLLM step is not an autoregressive step: attention is bidirectional, every
computed column attends to every canvas column (cached or fresh), and the LM head
may run on a few columns only. Counted per sequence as 2 × multiply-adds of the
matrix products (projections, attention scores and mixing, SwiGLU MLP, LM head);
norms, rotary, softmax and embeddings are lower-order and left out.
"""

from __future__ import annotations

from unmask.models.native import Dims


def forward_flops(dims: Dims, queries: int, keys: int, logits: int) -> int:
    """One sequence's forward: ``queries`` columns run through the blocks.

    Each attends to ``keys`` canvas columns (the whole canvas, cached or not), and
    the LM head runs on ``logits`` columns.
    """
    width = dims.width
    kv_width = width // dims.heads * dims.kv_heads
    projections = 2 * width * (2 * width + 2 * kv_width)  # q, out; k, v
    mlp = 2 * 3 * width * dims.mlp  # gate, up, down
    attention = 2 * 2 * keys * width  # q·kᵀ and p·v over all heads
    return dims.layers * queries * (projections + mlp + attention) + 2 * logits * width * dims.vocab

