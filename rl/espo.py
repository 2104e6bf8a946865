"""ESPO's policy loss: the whole answer is one action, with one clipped ratio from ELBO differences.

The ELBO bounds only the sequence log-likelihood, so ESPO uses it only there:
``log ρ = (E_θ − E_old)/L`` (a per-token-scale ratio, since ELBO differences are
tens of nats), PPO's pessimistic clip on ``ρA``, and the ``k2_sequence`` penalty
``½(E_θ − E_ref)²/L``. One term per sequence, no token mean (objectives-2026.md, ESPO).
Its estimator is ``exact_count`` and its advantage ``leave_one_out``.
"""

from __future__ import annotations

from unmask.rl.estimators import sequence_elbo
from unmask.rl.losses import clipped_surrogate
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs, PolicyTerms


@POLICY_LOSSES.register("elbo_clip", level="sequence", ratio=True, estimator="elbo", sequence=sequence_elbo)
def elbo_clip(x: LossInputs) -> PolicyTerms:
    elbo = sequence_elbo(x.scores)
    old_elbo = elbo.detach() if x.old is None else sequence_elbo(x.old)
    gain, clipped = clipped_surrogate((elbo - old_elbo) / x.length, x.advantages, x.config.epsilon, x.config.epsilon_high)
    return PolicyTerms(-gain, clipped, sequence=elbo)
