"""FLOPs of dLLM forwards, so that rollout benchmarks report compute next to time.

A dLLM step is not an autoregressive step: attention is bidirectional, every
computed column attends to every canvas column (cached or fresh), and the LM head
may run on a few columns only. Counted per sequence as 2 × multiply-adds of the
matrix products (projections, attention scores and mixing, SwiGLU MLP, LM head);
norms, rotary, softmax and embeddings are lower-order and left out.
"""

from __future__ import annotations

from unmask.models.native import Dims


def forward_flops(dims: Dims, queries: int, keys: int, logits: int, outputs: int | None = None) -> int:
    """One sequence's forward: ``queries`` columns run through the blocks.

    Each attends to ``keys`` canvas columns (the whole canvas, cached or not), and
    the LM head runs on ``logits`` columns. ``outputs`` (default ``queries``) is how
    many columns the last block produces: the others only feed it keys/values.
    """
    outputs = queries if outputs is None else outputs
    width = dims.width
    head_dim = dims.head_dim or width // dims.heads
    q_width, kv_width = dims.heads * head_dim, dims.kv_heads * head_dim
    keys_values = 2 * width * 2 * kv_width
    per_output = 2 * width * 2 * q_width + 2 * 3 * width * dims.mlp + 2 * 2 * keys * q_width  # q, out; MLP; q·kᵀ, p·v
    blocks = (dims.layers - 1) * queries * (keys_values + per_output) + queries * keys_values + outputs * per_output
    return blocks + 2 * logits * width * dims.vocab

