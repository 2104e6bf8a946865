"""Fused reductions over the vocabulary, as Triton kernels with torch twins.

With a 126k–152k vocabulary a denoising step and a policy-gradient loss spend most
of their memory on ``[N, V]`` tensors reduced to a few numbers per row. These
entry points do the reductions without materialising full float32 copies:
Triton on CUDA when available, the chunked torch twin otherwise
(:mod:`unmask.kernels.dispatch` says how to force either).
"""

from __future__ import annotations

import torch

from unmask.kernels.commit import threshold_commits, topk_commits
from unmask.kernels.dispatch import backend_for
from unmask.kernels.logprob import (
    TORCH_OPS,
    LinearTokenLogprobs,
    RowOps,
    TokenLogprobs,
    check_logprob_args,
)
from unmask.kernels.rng import row_uniforms
from unmask.kernels.sampling import StepSample, sample_step_torch


def sample_step(
    logits: torch.Tensor,
    temperature: float = 0.0,
    *,
    uniforms: torch.Tensor | None = None,
    seed: int | None = None,
    offset: int = 0,
) -> StepSample:
    """Sample one token per row of ``logits [N, V]`` and report its statistics.

    ``temperature = 0`` is argmax (first index on ties). Otherwise the draw uses
    ``uniforms`` (``[N]`` float64 on ``[0, 1)``) or, if absent, the counter-based
    :func:`row_uniforms` of ``(seed, offset)``: the same inputs give the same
    tokens on either backend, however rows are chunked.
    """
    if temperature > 0 and uniforms is None:
        if seed is None:
            raise ValueError("sample_step with temperature > 0 needs uniforms= or seed=")
        uniforms = row_uniforms(logits.shape[0], seed, offset, device=logits.device)
    if backend_for(logits) == "triton":
        from unmask.kernels.sampling_triton import sample_step_triton

        return sample_step_triton(logits, temperature, uniforms)
    return sample_step_torch(logits, temperature, uniforms)


def _row_ops(tensor: torch.Tensor) -> RowOps:
    if backend_for(tensor) == "triton":
        from unmask.kernels.logprob_triton import TRITON_OPS

        return TRITON_OPS
    return TORCH_OPS


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log softmax(logits/τ)[target], entropy)`` per row of ``logits [N, V]``, float32 ``[N]``.

    Differentiable in ``logits`` (through both outputs); leading dimensions other
    than ``[N, V]`` are flattened and restored, so ``[B, L, V]`` works too.
    """
    lead = logits.shape[:-1]
    flat, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    check_logprob_args(flat, flat_targets, temperature)
    logprob, entropy = TokenLogprobs.apply(flat, flat_targets, float(temperature), _row_ops(flat))
    return logprob.view(lead), entropy.view(lead)


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` of ``hidden @ weight.T`` without ever holding all the logits.

    ``hidden [..., d]``, LM head ``weight [V, d]``; at most ``chunk_rows × V``
    logits exist at a time, in forward and in backward (which recomputes them).
    Gradients flow to ``hidden`` and ``weight``.
    """
    lead = hidden.shape[:-1]
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if weight.dim() != 2 or weight.shape[1] != flat.shape[1]:
        raise ValueError(f"weight must be [V, {flat.shape[1]}], got shape {tuple(weight.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    check_logprob_args(flat.new_empty(flat.shape[0], 0), flat_targets, temperature)
    ops = _row_ops(flat)
    logprob, entropy = LinearTokenLogprobs.apply(flat, weight, flat_targets, float(temperature), chunk_rows, ops)
    return logprob.view(lead), entropy.view(lead)


def select_commits(
    confidence: torch.Tensor,
    *,
    k: torch.Tensor | int | None = None,
    threshold: float | None = None,
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool ``[B, L]`` of positions to commit: top-``k`` per row, or the threshold rule.

    Exactly one of ``k`` (int or ``[B]`` tensor) and ``threshold`` is given.
    ``eligible`` defaults to ``confidence != -inf``. Runs on the tensors' device
    without host synchronisation (torch ops on every backend: a kernel would save
    nothing measurable on ``[B, L]`` inputs).
    """
    if (k is None) == (threshold is None):
        raise ValueError("select_commits needs exactly one of k= or threshold=")
    if k is not None:
        return topk_commits(confidence, k, eligible)
    return threshold_commits(confidence, threshold, eligible)
