"""GDSD's policy loss: regress the clamped sequence log-ratio onto ``ψA``.

``D`` is the unweighted denoiser log-likelihood of one exact-count draw and its
complement, ``½(Σ_M ℓ + Σ_{M^c} ℓ')`` (no ``1/t``); ``Δ = clamp(D_θ − D_old, ln(1−ε),
ln(1+ε))`` and each answer's ``m`` draws add ``(Δ/L − ψA)²``. Each draw is its own item
(the ``samples`` batch builder), so the aggregation's mean over items is scaled by ``m`` to
keep the published sum over draws and mean over answers. Outside the band the gradient is 0
on both sides, unlike PPO's one-sided clip; ``gdsd/in_band`` logs the fraction inside.
"""

from __future__ import annotations

import math

import torch

from unmask.rl.estimators import Scores
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs, PolicyTerms


def denoiser_loglik(scores: Scores) -> torch.Tensor:
    """``[B]`` ``D = ½ Σ_k ℓ_k``: each answer token is scored once over a draw's two passes."""
    return 0.5 * scores.logprobs.masked_fill(~scores.mask, 0.0).sum(1)


@POLICY_LOSSES.register(
    "regression", level="sequence", ratio=True, estimator="pair", sequence=denoiser_loglik, needs=("psi", "mc_samples")
)
def regression(x: LossInputs) -> PolicyTerms:
    c = x.config
    value = denoiser_loglik(x.scores)
    raw = value - (value.detach() if x.old is None else denoiser_loglik(x.old))
    low, high = math.log(1 - c.epsilon), math.log(1 + c.epsilon)
    delta = raw.clamp(low, high)
    terms = c.mc_samples * (delta / x.length - c.psi * x.advantages) ** 2
    in_band = ((raw >= low) & (raw <= high)).float().mean()
    return PolicyTerms(terms, metrics={"gdsd/in_band": float(in_band)}, sequence=value)
