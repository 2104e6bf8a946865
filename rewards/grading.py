"""Evaluation verdicts for a batch, with a per-item deadline wherever a grader can hang.

``grade()`` hands MATH answers to sympy, and a hostile one (``\\boxed{9^{9^{9^{9}}}}``)
keeps it busy for good. ``Grader`` decides what it can without sympy in this process
(``quick_grade_math``) and sends the rest to a ``WorkerPool`` (started on
first need, reused across batches) that kills a worker at the deadline: the item is
then wrong, with ``timed_out`` set. Graders whose work per item is bounded run in
this process and save the pool's start-up.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from .graders import GRADERS, grade
from .mathgrade import quick_grade_math
from .pool import LazyWorkerPool, OwnsWorkerPool, WorkerPool
from .result import GradeResult
from .sandbox import STARTUP_S
from .worker import Handler, Outcome, error_outcome

#: graders that never reach sympy (bounded work per item): no deadline needed
IN_PROCESS_TASKS = frozenset({"gsm8k", "countdown", "sudoku"})


def grade_outcome(task: str, completion: str, reference: Mapping[str, Any]) -> Outcome:
    """``grade`` with a failure on this one item turned into an error outcome."""
    try:
        return ("ok", grade(task, completion, **reference))
    except Exception as exc:  # a grader bug on one answer must not stop an evaluation
        return error_outcome(exc)


def quick_outcome(task: str, completion: str, reference: Mapping[str, Any]) -> Outcome | None:
    """The MATH verdict where ``quick_grade_math`` reaches it without sympy, else None."""
    try:
        result = quick_grade_math(completion, **reference) if task == "math" else None
    except Exception as exc:  # as grade_outcome: one bad item must not stop an evaluation
        return error_outcome(exc)
    return None if result is None else ("ok", result)


def grade_handler() -> Handler:
    """Worker handler of jobs ``(task, completion, reference)`` (see ``WorkerPool``)."""
    return grade_outcome


def check_references(task: str, references: Sequence[Mapping[str, Any]]) -> None:
    """One clear error for an unknown task or reference columns its grader does not take."""
    grader = GRADERS.get(task)
    if grader is None:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(GRADERS)}")
    signature = inspect.signature(grader)
    for columns in {tuple(sorted(ref)) for ref in references}:
        try:
            signature.bind("", **dict.fromkeys(columns))
        except TypeError as exc:
            raise ValueError(f"{task} references with columns {list(columns)} do not fit its grader: {exc}") from None


class Grader(OwnsWorkerPool):
    """Grades evaluation batches; tasks outside ``IN_PROCESS_TASKS`` run under ``deadline_s``.

    Use as a context manager (or call ``close``) to stop the workers.
    """

    def __init__(
        self,
        deadline_s: float = 10.0,
        num_workers: int = 2,
        memory_limit_mb: int | None = 2048,
        start_method: str = "forkserver",
    ) -> None:
        if deadline_s <= 0 or num_workers < 1:
            raise ValueError(f"grading needs deadline_s > 0 and num_workers >= 1 (got {deadline_s}, {num_workers})")
        self.deadline_s = deadline_s
        #: workers start at the first task that needs them; ``close`` (or ``with``) stops them
        self.pool = LazyWorkerPool(
            functools.partial(WorkerPool, num_workers, grade_handler, memory_limit_mb, start_method)
        )

    def grade_many(
        self, task: str, completions: Sequence[str], references: Sequence[Mapping[str, Any]]
    ) -> list[GradeResult]:
        """One verdict per completion against the reference columns at the same index."""
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        check_references(task, references)
        jobs = [(task, c, dict(r)) for c, r in zip(completions, references, strict=True)]
        if task in IN_PROCESS_TASKS:
            return [self._result(grade_outcome(*job)) for job in jobs]
        outcomes = [quick_outcome(*job) for job in jobs]
        remote = [k for k, outcome in enumerate(outcomes) if outcome is None]
        if remote:
            pooled, _ = self.pool.run([jobs[k] for k in remote], self._deadline(task, references))
            for k, outcome in zip(remote, pooled, strict=True):
                outcomes[k] = outcome
        return [self._result(outcome) for outcome in outcomes if outcome is not None]

    def _deadline(self, task: str, references: Sequence[Mapping[str, Any]]) -> float:
        """``deadline_s``, raised for code to cover the sandbox's own limit and start-up."""
        if task != "code":
            return self.deadline_s
        return max(self.deadline_s, *(float(r["timeout_s"]) + STARTUP_S + 1.0 for r in references))

    def _result(self, outcome: Outcome) -> GradeResult:
        kind, payload = outcome
        if kind == "ok":
            return payload
        if kind == "timeout":
            return GradeResult(False, 0.0, None, f"grading timed out after {self.deadline_s:g} s", timed_out=True)
        return GradeResult(False, 0.0, None, payload)


def grade_many(
    task: str,
    completions: Sequence[str],
    references: Sequence[Mapping[str, Any]],
    *,
    deadline_s: float = 10.0,
    num_workers: int = 2,
) -> list[GradeResult]:
    """``Grader.grade_many`` with a pool for this call only (one-off batches)."""
    with Grader(deadline_s, num_workers) as grader:
        return grader.grade_many(task, completions, references)
