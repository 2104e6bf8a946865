"""Result and error types shared by every grader and by the reward runner."""

from __future__ import annotations

from dataclasses import dataclass

from unmask.errors import UserError


@dataclass(frozen=True)
class GradeResult:
    """What a grader concluded about one completion.

    ``score`` is the reward value (it may include shaping, e.g. Countdown's 0.1 for a
    well-formed wrong answer), ``correct`` is the strict verdict used for accuracy.
    ``error`` says why the answer could not be judged (nothing extracted, unparseable,
    disallowed syntax, grading past its deadline); it is None when a verdict was reached.
    ``timed_out`` marks the deadline case, which evaluation counts on its own.
    ``kind`` names why an answer failed where a grader tells failures apart (code:
    timeout, memory, wrong answer, ...); the reward runner counts each kind per step.
    """

    correct: bool
    score: float
    extracted: str | None
    error: str | None = None
    timed_out: bool = False
    kind: str | None = None


class RewardConfigError(UserError, ValueError):
    """A reward set-up mistake the user must fix (unknown name, bad plug-in, bad column).

    The trainer turns it into a one-line stop; it is never swallowed like a per-item error.
    """
