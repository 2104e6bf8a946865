"""Calling one reward function on one item, with its failures turned into outcomes.

Used both in-process and inside pool workers so the two paths contain errors alike.
An outcome is ``(kind, payload)``: ``("ok", value)`` (for rewards ``("ok", (value,
reason))``, see ``RewardCaller``), ``("error", message)`` or
``("config", message)``; the pool adds ``("timeout", None)`` and ``("died", message)``.
Built-in rewards are called per item (deduplicated and cached by the runner); any
other function is called once per batch, as TRL calls it (``batch.call_batch``), and
its ``ok`` payload is ``(values, logged metrics, extra columns)``.
A worker runs one *handler* (a job's fields in, an outcome out), built in the worker
by a picklable factory: ``reward_handler`` for rewards, ``grading.grade_handler`` for
evaluation verdicts.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from .batch import RewardState, call_batch, checked_values
from .functions import BOUNDED_REWARDS, TASK_REWARDS, grade_one, quick_one
from .registry import RewardSpec
from .result import GradeResult, RewardConfigError

Outcome = tuple[str, Any]
#: what a worker applies to each job's fields
Handler = Callable[..., Outcome]
_MAX_MESSAGE = 300


def call_one(fn: Any, prompt: Any, completion: Any, columns: Mapping[str, Any]) -> float | None:
    """``fn`` on a batch of one; a wrong-length or non-numeric return is a config error."""
    (value,) = checked_values(fn([prompt], [completion], **{k: [v] for k, v in columns.items()}), 1)
    return value


def run_item(fn: Any, prompt: Any, completion: Any, columns: Mapping[str, Any]) -> Outcome:
    """``call_one`` with every failure turned into an outcome instead of an exception."""
    try:
        return ("ok", call_one(fn, prompt, completion, columns))
    except RewardConfigError as exc:
        return ("config", str(exc))
    except Exception as exc:  # a plug-in or a grader failed on this item: contain it
        return error_outcome(exc)


def error_outcome(exc: Exception) -> Outcome:
    """The ``("error", message)`` outcome of an exception raised on one item."""
    return ("error", f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE])


def _limit_memory(extra_mb: int | None) -> None:
    """Cap the address space a little above what the worker already maps, so a runaway
    sympy computation raises MemoryError here instead of invoking the OOM killer."""
    if not extra_mb:
        return
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def failure_reason(result: GradeResult) -> str | None:
    """Why a grader reached no verdict on the answer's content (``no answer: …``,
    ``unparseable: …``), else ``failed: KIND`` where the grader names why the answer failed,
    else None."""
    if result.error is None:
        return f"failed: {result.kind}" if result.kind else None
    return f"{'no answer' if result.extracted is None else 'unparseable'}: {result.error}"


class RewardCaller:
    """One spec's reward on one item, as an outcome whose ``ok`` payload is
    ``(value, failure reason or None)``.

    Built-in task rewards are graded through their grader, so the reason is known;
    ``local`` answers in this process where that is cheap and bounded (format rewards,
    every task but MATH, MATH where ``mathfast`` decides) and returns None where the
    item needs a worker (sympy). Every other function is ``batched``: ``batch`` calls
    it on a whole batch with TRL's keywords.
    """

    def __init__(self, spec: RewardSpec) -> None:
        self.fn = spec.load()
        self.task = spec.name if spec.name in TASK_REWARDS else None
        self.bounded = spec.name in BOUNDED_REWARDS
        self.batched = self.task is None and not self.bounded
        self.options = dict(spec.kwargs)

    def _graded(self, grader: Callable[..., GradeResult | None], completion: Any, columns: Mapping[str, Any]) -> Outcome | None:
        try:
            result = grader(self.task, completion, columns, **self.options)
        except RewardConfigError as exc:
            return ("config", str(exc))
        except Exception as exc:  # a grader failed on this item: contain it
            return error_outcome(exc)
        return None if result is None else ("ok", (result.score, failure_reason(result)))

    def full(self, prompt: Any, completion: Any, columns: Mapping[str, Any]) -> Outcome:
        if self.task is not None:
            return self._graded(grade_one, completion, columns) or ("error", "grader returned no verdict")
        kind, payload = run_item(self.fn, prompt, completion, columns)
        return (kind, (payload, None)) if kind == "ok" else (kind, payload)

    def local(self, prompt: Any, completion: Any, columns: Mapping[str, Any]) -> Outcome | None:
        if self.task is not None:
            return self._graded(quick_one, completion, columns)
        return self.full(prompt, completion, columns) if self.bounded else None

    def batch(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None,
        columns: Mapping[str, Sequence[Any]], state: RewardState,
    ) -> Outcome:
        try:
            return ("ok", call_batch(self.fn, prompts, completions, completion_ids, columns, state))
        except RewardConfigError as exc:
            return ("config", str(exc))
        except Exception as exc:  # a plug-in failed on this batch: contain it
            return error_outcome(exc)


def reward_handler(specs: list[RewardSpec]) -> Handler:
    """Jobs ``(spec_index, *fields)`` → reward outcomes (rewards loaded once): an item's
    ``(prompt, completion, columns)``, or a batched function's ``RewardCaller.batch`` fields."""
    callers = [RewardCaller(spec) for spec in specs]

    def handle(index: int, *fields: Any) -> Outcome:
        caller = callers[index]
        return caller.batch(*fields) if caller.batched else caller.full(*fields)

    return handle


def serve(conn: Connection, make_handler: Callable[[], Handler], memory_limit_mb: int | None) -> None:
    """Worker loop: build the handler, say ready, then answer jobs until told to stop."""
    handle = make_handler()
    _limit_memory(memory_limit_mb)
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(handle(*job))
