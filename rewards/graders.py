"""``grade(task, completion, **reference)``: the one evaluation entry point per task."""

from __future__ import annotations

from collections.abc import Callable

from .code import grade_code
from .countdown import grade_countdown
from .gsm8k import grade_gsm8k
from .mathgrade import grade_math
from .result import GradeResult
from .sudoku import grade_sudoku

GRADERS: dict[str, Callable[..., GradeResult]] = {
    "math": grade_math,
    "gsm8k": grade_gsm8k,
    "countdown": grade_countdown,
    "sudoku": grade_sudoku,
    "code": grade_code,
}


def grade(task: str, completion: str, **reference) -> GradeResult:
    """Grade one completion for ``task`` against its reference fields.

    References: math ``answer``; gsm8k ``answer``; countdown ``nums``, ``target`` (plus
    optional shaping scores); sudoku ``puzzle``, ``solution``; code ``prefix``, ``tests``,
    ``entry_point``, ``setup``, ``timeout_s`` (run in the sandbox). No deadline here: grade
    batches with ``grading.Grader`` (or rewards with ``RewardRunner``) when inputs may
    be hostile.
    """
    grader = GRADERS.get(task)
    if grader is None:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(GRADERS)}")
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    return grader(completion, **reference)
