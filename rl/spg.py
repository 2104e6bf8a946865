"""SPG's policy loss (Sandwiched Policy Gradient): a lower bound for good answers, an upper bound for bad ones.

``log π(o)`` is intractable for a dLLM. SPG maximises the ELBO of answers with
``A > 0`` and minimises an upper bound (the Rényi EUBO, or its mix with the ELBO,
``ω``) of answers with ``A ≤ 0``, so the surrogate stays below ``Σ_i A_i log π(o_i)``.
No ratio, no clipping, no old policy, no KL; fresh block-wise masks every inner
iteration (the ``block`` estimator; objectives-2026.md, SPG).
"""

from __future__ import annotations

import torch

from unmask.rl.estimators import sequence_elbo
from unmask.rl.losses import masked_mean
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs, PolicyTerms


@POLICY_LOSSES.register("sandwich", level="sequence", ratio=False, estimator="upper", needs=("omega",))
def sandwich(x: LossInputs) -> PolicyTerms:
    """``−A·(ELBO if A > 0 else ω·EUBO + (1−ω)·ELBO)`` per answer, in nats (``|C|`` times the token means)."""
    scores = x.scores
    if scores.upper is None:
        raise ValueError("SPG needs an estimator that returns the upper-bound term (BlockEstimator)")
    completion = x.traj.answer_mask.sum(1).float()
    lower = sequence_elbo(scores)  # |C|·ē
    upper = completion * masked_mean(scores.upper, scores.mask, dim=1)  # |C|·ū
    omega = x.config.omega
    negative = omega * upper + (1 - omega) * lower
    value = torch.where(x.advantages > 0, lower, negative)
    return PolicyTerms(-(x.advantages * value), metrics={"spg/bound_gap": float((upper - lower).detach().mean())})
