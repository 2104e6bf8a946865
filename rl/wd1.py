"""wd1's policy loss: the weighted likelihood ``Σ_i (w⁻_i − w⁺_i) log π̂(o_i)``; no ratio, no clip.

Its advantage part (``wd1``: ``w⁺ − w⁻``, ``w^± = softmax_g(±ψA)``) is in ``advantages``.
"""

from __future__ import annotations

from unmask.rl.losses import masked_mean
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs, PolicyTerms


@POLICY_LOSSES.register("likelihood", level="sequence", ratio=False)
def likelihood(x: LossInputs) -> PolicyTerms:
    """``−A · log π̂(o)`` per answer, ``log π̂`` the mean estimator-weighted token log-prob."""
    sequence = masked_mean(x.scores.logprobs * x.scores.weight, x.mask, dim=1)
    return PolicyTerms(-(x.advantages * sequence))
