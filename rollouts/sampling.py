"""The per-position sampling math, in float64 (sampling.md §1, precision note).

Pure tensor code: no model, no RNG state. Randomness comes in as one uniform per
row so that a kernel can replace this function without touching generator
handling, and so that a row's draw does not depend on which other rows share the
batch. Sampling is by inverse CDF on float64 probabilities: exact in distribution
down to probabilities of ~1e-16, unlike Gumbel-max with float32 noise whose
largest reachable perturbation (~16.6) silently lowers the temperature.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SampleStats(NamedTuple):
    """What the sampler and the confidence functions need about each prediction."""

    #: ``[N]`` long: the predicted token
    token: torch.Tensor
    #: ``[N]`` float64: probability of ``token`` under ``softmax(logits)`` (temperature 1)
    prob: torch.Tensor
    #: ``[N]`` float64: log-probability of ``token`` under the sampling distribution
    #: ``softmax(logits / τ)`` (temperature 1 when ``τ = 0``, where sampling is argmax)
    logprob: torch.Tensor
    #: ``[N]`` float64: top-1 minus top-2 probability at temperature 1
    margin: torch.Tensor
    #: ``[N]`` float64: entropy of ``softmax(logits)`` in nats
    entropy: torch.Tensor


def sample_tokens(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None) -> SampleStats:
    """Sample one token per row of ``logits`` ``[N, V]`` from ``softmax(logits / temperature)``.

    ``temperature = 0`` is argmax (first index on ties, like ``torch.argmax``) and
    ignores ``uniforms``; otherwise ``uniforms`` is ``[N]`` float64 in ``[0, 1)``.
    """
    logits = logits.double()
    logp1 = torch.log_softmax(logits, dim=-1)
    p1 = torch.softmax(logits, dim=-1)  # not logp1.exp(): bitwise the reference's confidences
    if temperature == 0:
        token = logits.argmax(dim=-1)
        logp_t = logp1
    else:
        if uniforms is None:
            raise ValueError("sample_tokens needs uniforms when temperature > 0")
        logp_t = torch.log_softmax(logits / temperature, dim=-1)
        cdf = torch.softmax(logits / temperature, dim=-1).cumsum(dim=-1)
        draw = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
        token = torch.searchsorted(cdf, draw, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    pick = token.unsqueeze(-1)
    top2 = p1.topk(min(2, p1.shape[-1]), dim=-1).values
    margin = top2[:, 0] - (top2[:, 1] if top2.shape[-1] > 1 else 0.0)
    entropy = -(p1 * logp1).nan_to_num().sum(dim=-1)
    return SampleStats(
        token=token,
        prob=p1.gather(-1, pick).squeeze(-1),
        logprob=logp_t.gather(-1, pick).squeeze(-1),
        margin=margin,
        entropy=entropy,
    )
