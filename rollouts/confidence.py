"""Confidence measures that decide which predictions to commit (docs/sampling.md §2–§3).

A confidence function maps the statistics of ``N`` predictions (and ``N`` fresh
uniforms, for the random rule) to ``N`` scores; higher means commit sooner. Users
can pass their own callable with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from unmask.errors import UserError
from unmask.kernels.sampling import StepSample
from unmask.rollouts.options import DEFAULT_CONFIDENCE

ConfidenceFn = Callable[[StepSample, torch.Tensor], torch.Tensor]

CONFIDENCES: dict[str, ConfidenceFn] = {
    # LLaDA's low_confidence: probability of the prediction under softmax(logits)
    "probability": lambda stats, rand: stats.confidence,
    # RCR's default: probability under the sampling distribution softmax(logits / τ)
    "sampling_probability": lambda stats, rand: stats.logprob.exp(),
    "margin": lambda stats, rand: stats.margin,
    "entropy": lambda stats, rand: -stats.entropy,
    "random": lambda stats, rand: rand,
}


def resolve_confidence(remasking: str, confidence: str | ConfidenceFn | None) -> ConfidenceFn:
    """The confidence function for a strategy, by name, callable, or the strategy's default."""
    if remasking not in DEFAULT_CONFIDENCE:
        raise UserError(f"unknown remasking {remasking!r}: use one of {', '.join(DEFAULT_CONFIDENCE)}")
    if callable(confidence):
        return confidence
    name = DEFAULT_CONFIDENCE[remasking] if confidence is None else confidence
    if name not in CONFIDENCES:
        raise UserError(f"unknown confidence {name!r}: use one of {', '.join(CONFIDENCES)} or a callable")
    return CONFIDENCES[name]
