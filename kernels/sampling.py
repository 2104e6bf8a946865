"""One denoising step's sampling math for logits rows ``[N, V]`` — the torch twin.

Per row: the token (argmax at τ = 0, else an exact draw from ``softmax(logits/τ)``),
its probability at temperature 1 (the confidence), its log-probability under the
sampling distribution, the top-1 − top-2 probability margin and the entropy of
``softmax(logits)``. Sampling is by inverse CDF on float64 probabilities with one
53-bit uniform per row: exact in distribution down to float64 rounding (~1e-16),
whereas Gumbel-max with float32 noise caps the perturbation at ≈16.6 and lowers
the effective temperature (docs/sampling.md §1). The Triton kernel uses the same
uniforms and the same rule, so both backends draw the same tokens.

The twin works on chunks of rows so that at most one chunk is ever held in float64
(``chunk_elements`` bounds its size), never a full-precision ``[N, V]`` copy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: float64 elements per chunk of the torch twins (16 MiB per temporary)
CHUNK_ELEMENTS = 1 << 21


class StepSample(NamedTuple):
    """Per-row results of a sampling step, all ``[N]``."""

    #: long: the chosen token
    token: torch.Tensor
    #: float64: probability of ``token`` under ``softmax(logits)`` (temperature 1)
    confidence: torch.Tensor
    #: float64: log-prob of ``token`` under ``softmax(logits/τ)`` (τ = 1 when τ = 0)
    logprob: torch.Tensor
    #: float64: top-1 minus top-2 probability at temperature 1 (top-1 alone if V = 1)
    margin: torch.Tensor
    #: float64: entropy of ``softmax(logits)`` in nats
    entropy: torch.Tensor


def row_chunks(n: int, width: int, chunk_elements: int = CHUNK_ELEMENTS) -> list[slice]:
    """Row slices holding at most ``chunk_elements`` elements each (one row at least)."""
    rows = max(1, chunk_elements // max(width, 1))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def check_sample_args(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None) -> None:
    """One clear error for each way a sampling call can be malformed."""
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be [N, V] with V >= 1, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor, got {logits.dtype}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
    if temperature > 0 and (uniforms is None or uniforms.shape != (logits.shape[0],)):
        got = None if uniforms is None else tuple(uniforms.shape)
        raise ValueError(f"temperature > 0 needs uniforms of shape [{logits.shape[0]}], got {got}")


def _inverse_cdf(shifted: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """First index whose cumulative weight exceeds ``u · total`` (never a zero-weight one).

    ``shifted`` is ``(x − max x) / τ``, the same weights the Triton kernel scans.
    """
    cdf = shifted.exp().cumsum_(-1)
    total = cdf[:, -1:]
    target = torch.minimum(uniforms.unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


def _sample_chunk(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None) -> StepSample:
    x = logits.double()
    logp1 = torch.log_softmax(x, dim=-1)
    p1 = torch.softmax(x, dim=-1)
    if temperature == 0:
        token = x.argmax(dim=-1)
        logprob = logp1.gather(-1, token.unsqueeze(-1)).squeeze(-1)
    else:
        shifted = (x - x.amax(-1, keepdim=True)) / temperature
        token = _inverse_cdf(shifted, uniforms.double())
        logprob = shifted.gather(-1, token.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(shifted, dim=-1)
    top = p1.topk(min(2, p1.shape[-1]), dim=-1).values
    margin = top[:, 0] - top[:, 1] if top.shape[-1] > 1 else top[:, 0]
    entropy = -(p1 * logp1).nan_to_num_(nan=0.0).sum(-1)
    confidence = p1.gather(-1, token.unsqueeze(-1)).squeeze(-1)
    return StepSample(token, confidence, logprob, margin, entropy)


def sample_step_torch(
    logits: torch.Tensor,
    temperature: float,
    uniforms: torch.Tensor | None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> StepSample:
    """The reference sampling step, chunked over rows (see the module docstring)."""
    check_sample_args(logits, temperature, uniforms)
    parts = [
        _sample_chunk(logits[rows], temperature, None if uniforms is None else uniforms[rows])
        for rows in row_chunks(logits.shape[0], logits.shape[1], chunk_elements)
    ]
    if not parts:
        empty = logits.new_empty(0, dtype=torch.float64)
        return StepSample(logits.new_empty(0, dtype=torch.long), empty, empty, empty, empty)
    return StepSample(*(torch.cat(field) for field in zip(*parts, strict=True)))


def greedy_probability(logits: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token, confidence)`` of :func:`sample_step_torch` at τ = 0, bit for bit, at a fraction of its cost.

    The greedy low-confidence sampler reads nothing else, so the log-softmax, the
    top-2 margin and the entropy are skipped. The argmax runs in the logits' own
    dtype: widening float32 (or bf16/fp16) to float64 is exact and order-preserving,
    so every comparison, hence the first maximal index, is the same as on the
    float64 copy. The confidence is the same float64 softmax, gathered at the token,
    so the commit ranking sees identical numbers (``test_greedy_probability_is_bitwise``).
    """
    check_sample_args(logits, 0.0, None)
    token = logits.argmax(dim=-1)
    parts = [
        torch.softmax(logits[rows].double(), dim=-1).gather(-1, token[rows, None]).squeeze(-1)
        for rows in row_chunks(logits.shape[0], logits.shape[1], chunk_elements)
    ]
    return token, torch.cat(parts) if parts else logits.new_empty(0, dtype=torch.float64)
