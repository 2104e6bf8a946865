"""Temperature sampling is exact in distribution; low-precision Gumbel noise is not."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.kernels.ops import sample_step

DRAWS = 200_000


def chi_square_p(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of ``tokens`` against ``probs``."""
    observed = torch.bincount(tokens, minlength=probs.numel()).double()
    expected = probs.double() * tokens.numel()
    stat = ((observed - expected) ** 2 / expected).sum()
    dof = probs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def exact_draws(logits: torch.Tensor, temperature: float, seed: int = 0) -> torch.Tensor:
    uniforms = torch.rand(DRAWS, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return sample_step(logits.expand(DRAWS, -1), temperature, uniforms=uniforms).token


def gumbel_max_draws(logits: torch.Tensor, temperature: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """The reference's Gumbel-max with its noise drawn in ``dtype`` (the precision bug)."""
    u = torch.rand(DRAWS, logits.numel(), dtype=dtype, generator=torch.Generator().manual_seed(seed))
    gumbel = -torch.log(-torch.log(u))
    return ((logits / temperature).to(dtype) + gumbel).argmax(-1)


LOGITS = torch.tensor([2.0, 1.5, 0.3, 0.0, -1.0, -2.5])


@pytest.mark.parametrize("temperature", [0.25, 0.7, 1.0, 2.0])
def test_samples_follow_softmax_at_temperature(temperature):
    tokens = exact_draws(LOGITS, temperature)
    assert chi_square_p(tokens, torch.softmax(LOGITS.double() / temperature, -1)) > 1e-3
    # the test has power: the same draws reject the temperature-1 distribution
    if temperature != 1.0:
        assert chi_square_p(tokens, torch.softmax(LOGITS.double(), -1)) < 1e-6


def test_half_precision_gumbel_noise_fails_where_float64_passes():
    """Peaked logits at low temperature: bfloat16 noise never reaches the tail."""
    logits, temperature = torch.tensor([0.0, -1.0, -2.0]), 0.25  # scaled gaps 4 and 8
    probs = torch.softmax(logits.double() / temperature, -1)
    assert chi_square_p(exact_draws(logits, temperature), probs) > 1e-3
    low = gumbel_max_draws(logits, temperature, torch.bfloat16)
    assert chi_square_p(low, probs) < 1e-12
    assert (low == 2).sum() < probs[2] * DRAWS / 4  # the tail is largely lost: τ silently lower


def test_float32_gumbel_noise_cannot_reach_tokens_float64_samples():
    """A token 20 nats below the top (p ≈ 2e-9) has zero probability under float32 noise.

    The Gumbel noise from float32 uniforms lies in [g(2^-24), g(1 - 2^-24)] ≈ [-2.8, 16.6]:
    even the tail token's best noise against the top token's worst loses, so the
    effective temperature drops. Inverse-CDF on float64 keeps such tokens in reach.
    """
    logits = torch.tensor([0.0, -20.0])
    u_low, u_high = torch.tensor([2.0**-24, 1 - 2.0**-24], dtype=torch.float32)
    gumbel = lambda u: -torch.log(-torch.log(u))  # noqa: E731
    assert float(logits[1] + gumbel(u_high)) < float(logits[0] + gumbel(u_low))
    tail = float(torch.softmax(logits.double(), -1)[1])
    picks = sample_step(logits.expand(2, -1), 1.0, uniforms=torch.tensor([1 - tail / 2, 1 - 2 * tail], dtype=torch.float64))
    assert picks.token.tolist() == [1, 0]
    assert math.isclose(float(picks.confidence[0]), tail, rel_tol=1e-12)


def test_statistics_of_a_prediction():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    stats = sample_step(logits, 0.0)
    probs = torch.softmax(logits.double(), -1)[0]
    assert stats.token.tolist() == [0]
    assert math.isclose(float(stats.confidence), float(probs[0]), rel_tol=1e-12)
    assert math.isclose(float(stats.margin), float(probs[0] - probs[1]), rel_tol=1e-12)
    assert math.isclose(float(stats.entropy), float(-(probs * probs.log()).sum()), rel_tol=1e-12)
    hot = sample_step(logits, 0.5, uniforms=torch.tensor([0.0], dtype=torch.float64))
    assert math.isclose(float(hot.logprob), float(torch.log_softmax(logits.double() / 0.5, -1)[0, 0]), rel_tol=1e-12)
