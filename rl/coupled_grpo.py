"""coupled-GRPO's estimator (DiffuCoder): a fully masked pass plus a coupled pair, ``v = ½ℓ^F + w^c ℓ``.

Pass F masks the whole answer (d1's one-step estimator without prompt masking); the
pair masks ``{u < t}`` and its complement with ``t ~ U[0.2, 0.8]`` (the coupled
``ElboEstimator`` with weights ``½/t``, ``½/(1−t)``). ``v`` is used as a log-prob *inside*
the ratio, which is what makes this a different method from ``diffu_grpo`` with the ``elbo``
estimator. Deviations from the published code (docs/objectives.md): ``t`` is drawn per
row from the iteration's key, not once per micro-batch from a global seed, so masks do not
depend on micro-batch layout and no fixed seed repeats the same masks every step.
"""

from __future__ import annotations

import torch
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.rl.estimators import ElboEstimator, Estimator, Key, OneStepEstimator, Scores
from unmask.rl.likelihoods import ESTIMATORS
from unmask.rollouts.trajectory import Trajectory


def coupled_score(full: torch.Tensor, pair: torch.Tensor, pair_weight: torch.Tensor) -> torch.Tensor:
    """``v_k = ½ ℓ^F_k + w^c_k ℓ_k``: the published ``½(ℓ^F + ℓ^P/t)`` or ``½(ℓ^F + ℓ^Q/(1−t))``."""
    return 0.5 * full + pair_weight * pair


class CoupledScoreEstimator(Estimator):
    """Three passes per answer; ``Scores.logprobs`` is ``v`` (weight 1), every answer position scored."""

    passes = 3

    def __init__(self, process: DiffusionProcess, temperature: float = 1.0) -> None:
        super().__init__(process, temperature)
        self.full = OneStepEstimator(process, p_mask=0.0, temperature=temperature)
        # t ~ U[0.2, 0.8], DiffuCoder's range: ElboEstimator draws t in [min_ratio, 1 − min_ratio]
        self.pair = ElboEstimator(process, coupled=True, temperature=temperature, min_ratio=0.2)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        full = self.full.token_logprobs(model, traj, key)
        pair = self.pair.token_logprobs(model, traj, key)
        value = coupled_score(full.logprobs, pair.logprobs, pair.weight)
        return Scores(value, pair.entropy, pair.mask, torch.ones_like(value))


@ESTIMATORS.register("coupled")
def _coupled(config: object, process: DiffusionProcess, temperature: float) -> Estimator:
    return CoupledScoreEstimator(process)
