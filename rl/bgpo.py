"""BGPO's policy loss: a lower bound of the ELBO ratio that is a sum of per-sample terms, one backward each.

``R̂ = exp(Ê_θ − Ê_old)·A`` with ``Ê`` an ``n_t``-sample ELBO is non-linear in the
samples, so all ``n_t`` graphs would stay alive. BGPO maximises instead
``Σ_j g_j``: ``(1 + d_j)·A/n_t`` for ``A ≥ 0`` (tangent) and ``e^{d_j}·A/n_t`` for
``A < 0`` (Jensen), ``d_j`` the sample's ELBO difference to θ_old. Each (answer,
sample) is its own item of the batch (the ``samples`` batch builder), so
micro-batching and gradient accumulation do the sum and peak memory does not grow
with ``n_t``. On-policy (``d ≡ 0``) this is REINFORCE on the MC ELBO; the bound acts
once θ has moved off θ_old (objectives-2026.md, BGPO).
"""

from __future__ import annotations

import torch

from unmask.rl.estimators import sequence_elbo
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs, PolicyTerms


@POLICY_LOSSES.register(
    "bound", level="sequence", ratio=True, estimator="elbo", sequence=sequence_elbo, needs=("length_normalized",)
)
def bound(x: LossInputs) -> PolicyTerms:
    elbo = sequence_elbo(x.scores)
    d = elbo - (elbo.detach() if x.old is None else sequence_elbo(x.old))
    if x.config.length_normalized:
        d = d / x.length
    negative = x.advantages < 0
    # 1 + d, never exp(log(1 + d)) (NaN for d ≤ −1); exp only where it is used, so it cannot overflow elsewhere
    value = torch.where(negative, torch.exp(torch.where(negative, d, 0.0)), 1.0 + d)
    return PolicyTerms(-(value * x.advantages), metrics={"bgpo/abs_d": float(d.detach().abs().mean())}, sequence=elbo)
