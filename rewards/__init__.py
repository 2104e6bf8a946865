"""Graders, reward functions and the reward runner for unmask.

``grade(task, completion, **reference)`` judges one answer for evaluation, and
``Grader``/``grade_many`` judge batches with a deadline where a grader can hang;
registered TRL-signature reward functions (``available()``) and user functions by
``package.module:function`` are combined by weight with ``RewardSpec``, and
``RewardRunner`` scores batches in a deadline-guarded process pool.
"""

from .functions import completion_text
from .graders import GRADERS, grade
from .grading import Grader, grade_many
from .pool import WorkerPool
from .registry import RewardSpec, available, load_reward, register
from .result import GradeResult, RewardConfigError
from .runner import RewardBatch, RewardRunner

__all__ = [
    "GRADERS",
    "GradeResult",
    "Grader",
    "RewardBatch",
    "RewardConfigError",
    "RewardRunner",
    "RewardSpec",
    "WorkerPool",
    "available",
    "completion_text",
    "grade",
    "grade_many",
    "load_reward",
    "register",
]
