"""RL post-training for masked dLLMs: likelihood estimators, objectives, and the trainer.

Estimators (``estimators``, multi-sample ``mc_estimators``) score answer tokens; objectives
(``diffu_grpo``, ``mdpo``, ``igpo``, ``wd1``, ``spg``, ``espo``, ``bgpo``; one file each,
registered by name) turn scores into a loss; the
trainer (``unmask.rl.trainer.train``) drives rollouts, rewards and updates from a recipe.
"""

from unmask.rl.estimators import ElboEstimator, Estimator, OneStepEstimator, Scores, StepEstimator
from unmask.rl.objective import (
    OBJECTIVES,
    Objective,
    Rollout,
    TrainBatch,
    build_objective,
    register,
)

__all__ = [
    "OBJECTIVES",
    "ElboEstimator",
    "Estimator",
    "Objective",
    "OneStepEstimator",
    "Rollout",
    "Scores",
    "StepEstimator",
    "TrainBatch",
    "build_objective",
    "register",
]
