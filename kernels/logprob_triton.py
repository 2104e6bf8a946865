"""Triton row operations for :mod:`unmask.kernels.logprob` (forward and backward).

Forward streams each row once with the online softmax of
:func:`~unmask.kernels.sampling_triton.softmax_step` on ``z = x/τ`` and reads the
target logit directly; it keeps the row max and ``log Σ e^{(x-max)/τ}`` for backward. Backward streams the
row again and writes ``∂L/∂logits`` tile by tile in the logits dtype. Each output
element is written by exactly one program, so results are deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from unmask.kernels.logprob import RowOps
from unmask.kernels.sampling_triton import softmax_finish, softmax_step, tile_shape


@triton.jit
def _logprob_fwd(
    X, stride, N, V, T, inv_tau, LOGP, ENT, NORM,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < N
    row_ptr = X + rows.to(tl.int64) * stride
    cols0 = tl.arange(0, BLOCK)[None, :]
    m = tl.full([ROWS], float("-inf"), tl.float32)
    s = tl.zeros([ROWS], tl.float32)
    a = tl.zeros([ROWS], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + cols0
        x = tl.load(row_ptr[:, None] + cols, mask=row_ok[:, None] & (cols < V), other=float("-inf"))
        m, s, a, _, _ = softmax_step(x.to(tl.float32), m, s, a, inv_tau)
    safe, log_s, entropy = softmax_finish(m, s, a)
    target = tl.load(T + rows, mask=row_ok, other=0)
    x_t = tl.load(row_ptr + target, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(LOGP + rows, (x_t - safe) * inv_tau - log_s, mask=row_ok)
    tl.store(ENT + rows, entropy, mask=row_ok)
    tl.store(NORM + 2 * rows, safe, mask=row_ok)
    tl.store(NORM + 2 * rows + 1, log_s, mask=row_ok)


@triton.jit
def _logprob_bwd(
    X, stride, G, g_stride, N, V, T, NORM, ENT, G_LOGP, G_ENT, inv_tau,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < N
    row_ptr = X + rows.to(tl.int64) * stride
    grad_ptr = G + rows.to(tl.int64) * g_stride
    cols0 = tl.arange(0, BLOCK)[None, :]
    row_max = tl.load(NORM + 2 * rows, mask=row_ok, other=0.0)[:, None]
    log_s = tl.load(NORM + 2 * rows + 1, mask=row_ok, other=0.0)[:, None]
    entropy = tl.load(ENT + rows, mask=row_ok, other=0.0)[:, None]
    g_lp = tl.load(G_LOGP + rows, mask=row_ok, other=0.0)[:, None]
    g_ent = tl.load(G_ENT + rows, mask=row_ok, other=0.0)[:, None]
    target = tl.load(T + rows, mask=row_ok, other=0)[:, None]
    for start in range(0, V, BLOCK):
        cols = start + cols0
        ok = row_ok[:, None] & (cols < V)
        x = tl.load(row_ptr[:, None] + cols, mask=ok, other=float("-inf")).to(tl.float32)
        logp = (x - row_max) * inv_tau - log_s
        p = tl.exp(logp)
        ent_term = tl.where(p > 0, p * (logp + entropy), 0.0)
        dz = tl.where(cols == target, g_lp, 0.0) - g_lp * p - g_ent * ent_term
        tl.store(grad_ptr[:, None] + cols, (dz * inv_tau).to(G.dtype.element_ty), mask=ok)


def _grid(n: int, v: int) -> tuple[tuple[int], int, int]:
    rows, block = tile_shape(v)
    return (triton.cdiv(n, rows),), rows, block


def forward_triton(logits: torch.Tensor, targets: torch.Tensor, inv_tau: float):
    """Triton twin of :func:`unmask.kernels.logprob.forward_torch`."""
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    n, v = logits.shape
    logprob, entropy = (torch.empty(n, dtype=torch.float32, device=logits.device) for _ in range(2))
    norm = torch.empty(n, 2, dtype=torch.float32, device=logits.device)
    if n:
        grid, rows, block = _grid(n, v)
        _logprob_fwd[grid](
            logits, logits.stride(0), n, v, targets.contiguous(), inv_tau, logprob, entropy, norm,
            ROWS=rows, BLOCK=block,
        )
    return logprob, entropy, norm


def backward_triton(logits, targets, norm, entropy, grad_logprob, grad_entropy, inv_tau) -> torch.Tensor:
    """Triton twin of :func:`unmask.kernels.logprob.backward_torch`."""
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    n, v = logits.shape
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    if n:
        grid, rows, block = _grid(n, v)
        _logprob_bwd[grid](
            logits, logits.stride(0), grad, grad.stride(0), n, v, targets.contiguous(),
            norm, entropy, grad_logprob, grad_entropy, inv_tau, ROWS=rows, BLOCK=block,
        )
    return grad


TRITON_OPS = RowOps(forward_triton, backward_triton)
