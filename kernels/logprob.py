"""Token log-probs and entropies from logits, with a memory-lean backward.

A policy-gradient loss needs, per position, only ``log softmax(z)[target]`` and the
entropy of ``softmax(z)`` with ``z = logits / τ``. The row operations here compute
them (and, in backward, ``∂/∂logits``) one chunk of rows at a time in float32, so
no full float32 ``[N, V]`` copy exists. :class:`TokenLogprobs` wraps them for
``[N, V]`` logits; :class:`LinearTokenLogprobs` starts from hidden states and the
LM head weight and never materialises more than one chunk of logits, recomputing
each chunk in backward. Chunk order is fixed and nothing is accumulated
atomically, so results are bitwise-stable across runs on one device.

The backend (torch twin or Triton) is a :class:`RowOps` pair of functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from unmask.kernels.sampling import row_chunks

#: float32 elements per row chunk of the torch twin (16 MiB per temporary)
CHUNK_ELEMENTS = 1 << 22

#: (logits, targets, inv_tau) -> (logprob [N], entropy [N], norm [N, 2]) float32, where
#: norm holds the row max m of the logits and log Σ exp((x − m)/τ)
Forward = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
#: (logits, targets, norm, entropy, grad_logprob, grad_entropy, inv_tau) -> grad_logits
Backward = Callable[..., torch.Tensor]


class RowOps(NamedTuple):
    forward: Forward
    backward: Backward


def check_logprob_args(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    """One clear error for each way a log-prob call can be malformed."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1] or targets.dtype != torch.long:
        raise ValueError(f"targets must be long [{logits.shape[0]}], got {targets.dtype} {tuple(targets.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")


def _forward_chunk(logits: torch.Tensor, targets: torch.Tensor, inv_tau: float):
    x = logits.float()
    row_max = x.amax(-1)
    d = (x - row_max.unsqueeze(-1)) * inv_tau  # max first: accurate under large offsets
    log_s = torch.logsumexp(d, dim=-1)
    logp = d - log_s.unsqueeze(-1)
    entropy = -(logp.exp() * logp).nan_to_num_(nan=0.0).sum(-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy, torch.stack([row_max, log_s], -1)


def forward_torch(logits: torch.Tensor, targets: torch.Tensor, inv_tau: float):
    """Torch twin of the forward row op, chunked over rows."""
    parts = [
        _forward_chunk(logits[rows], targets[rows], inv_tau)
        for rows in row_chunks(logits.shape[0], logits.shape[1], CHUNK_ELEMENTS)
    ]
    if not parts:
        empty = logits.new_empty(0, dtype=torch.float32)
        return empty, empty, empty.view(0, 2)
    lp, ent, norm = (torch.cat(field) for field in zip(*parts, strict=True))
    return lp, ent, norm


def backward_torch(
    logits: torch.Tensor,
    targets: torch.Tensor,
    norm: torch.Tensor,
    entropy: torch.Tensor,
    grad_logprob: torch.Tensor,
    grad_entropy: torch.Tensor,
    inv_tau: float,
) -> torch.Tensor:
    """``∂L/∂logits`` from ``∂L/∂logprob`` and ``∂L/∂entropy``, chunk by chunk, in the logits dtype.

    With ``p = softmax(z)``: ``∂logp_t/∂z = onehot_t − p`` and
    ``∂H/∂z = −p (log p + H)``; ``∂z/∂logits = 1/τ``.
    """
    grad = torch.empty_like(logits)
    for rows in row_chunks(logits.shape[0], logits.shape[1], CHUNK_ELEMENTS):
        row_max, log_s = norm[rows].unsqueeze(-1).unbind(-2)
        logp = (logits[rows].float() - row_max) * inv_tau - log_s
        p = logp.exp()
        ent_term = (p * (logp + entropy[rows].unsqueeze(-1))).nan_to_num_(nan=0.0)
        dz = -grad_logprob[rows].unsqueeze(-1) * p - grad_entropy[rows].unsqueeze(-1) * ent_term
        dz.scatter_add_(-1, targets[rows].unsqueeze(-1), grad_logprob[rows].unsqueeze(-1))
        grad[rows] = dz * inv_tau
    return grad


TORCH_OPS = RowOps(forward_torch, backward_torch)


def _grads(grad_logprob: torch.Tensor | None, grad_entropy: torch.Tensor | None, like: torch.Tensor):
    zero = torch.zeros_like(like)
    return (
        zero if grad_logprob is None else grad_logprob.float().contiguous(),
        zero if grad_entropy is None else grad_entropy.float().contiguous(),
    )


class TokenLogprobs(torch.autograd.Function):
    """``(logprob[target], entropy)`` of ``softmax(logits/τ)`` per row, differentiable in ``logits``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, temperature: float, ops: RowOps):
        inv_tau = 1.0 / temperature
        logprob, entropy, norm = ops.forward(logits, targets, inv_tau)
        ctx.save_for_backward(logits, targets, norm, entropy)
        ctx.inv_tau, ctx.ops = inv_tau, ops
        return logprob, entropy

    @staticmethod
    def backward(ctx, grad_logprob: torch.Tensor | None, grad_entropy: torch.Tensor | None):
        logits, targets, norm, entropy = ctx.saved_tensors
        g_lp, g_ent = _grads(grad_logprob, grad_entropy, entropy)
        grad = ctx.ops.backward(logits, targets, norm, entropy, g_lp, g_ent, ctx.inv_tau)
        return grad, None, None, None


class LinearTokenLogprobs(torch.autograd.Function):
    """Like :class:`TokenLogprobs` from ``hidden [N, d]`` and LM head ``weight [V, d]``.

    Logits are formed ``chunk_rows`` rows at a time in the input dtype (as the LM
    head would) and dropped after the reduction; backward recomputes them. The
    weight gradient is accumulated in float32 across chunks, then cast.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_rows: int, ops: RowOps):
        inv_tau = 1.0 / temperature
        parts = [
            ops.forward(hidden[rows] @ weight.T, targets[rows], inv_tau)
            for rows in row_chunks(hidden.shape[0], 1, chunk_rows)
        ]
        logprob, entropy, norm = (torch.cat(field) for field in zip(*parts, strict=True))
        ctx.save_for_backward(hidden, weight, targets, norm, entropy)
        ctx.inv_tau, ctx.ops, ctx.chunk_rows = inv_tau, ops, chunk_rows
        return logprob, entropy

    @staticmethod
    def backward(ctx, grad_logprob, grad_entropy):
        hidden, weight, targets, norm, entropy = ctx.saved_tensors
        g_lp, g_ent = _grads(grad_logprob, grad_entropy, entropy)
        want_h, want_w = ctx.needs_input_grad[:2]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        for rows in row_chunks(hidden.shape[0], 1, ctx.chunk_rows):
            h = hidden[rows]
            grad_logits = ctx.ops.backward(
                h @ weight.T, targets[rows], norm[rows], entropy[rows], g_lp[rows], g_ent[rows], ctx.inv_tau
            )
            if want_h:
                grad_h[rows] = grad_logits @ weight
            if want_w:
                grad_w.addmm_(grad_logits.T.float(), h.float())
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None, None
