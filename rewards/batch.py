"""A user reward function called as TRL's ``GRPOTrainer`` calls it: once per batch, every keyword.

TRL (``_calculate_rewards``) passes ``prompts``, ``completions``, ``completion_ids``
(token id lists), every dataset column, ``trainer_state``, ``log_extra`` and
``log_metric``, and awaits async functions on an event loop. The call runs where the
function runs (a pool worker, or this process with ``num_workers=0``), so what
crosses the process boundary is plain data: the state is a small picklable
snapshot, and the two logging callbacks are built on the worker's side, their
records returned with the values.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import numbers
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .result import RewardConfigError


@dataclass(frozen=True)
class RewardState:
    """``trainer_state`` for reward functions: the fields of transformers' ``TrainerState``
    that unmask's trainer has. ``global_step`` is the number of RL steps finished before
    this batch and ``max_steps`` the recipe's ``optim.max_steps``; TRL counts optimizer
    steps instead, so the two agree where an RL step is one optimizer step, and their
    ratio (training progress, what reward schedules read) agrees always."""

    global_step: int = 0
    max_steps: int = 0


@dataclass
class RewardLog:
    """What one call passed to ``log_metric`` (scalars by name) and ``log_extra`` (columns)."""

    metrics: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name].append(float(value))

    def log_extra(self, column: str, values: list[Any]) -> None:
        self.extra[column] = list(values)

    def records(self) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
        """Plain dicts, picklable back to the runner."""
        return dict(self.metrics), dict(self.extra)


def checked_values(values: Any, n: int) -> list[float | None]:
    """``values`` as floats or None (TRL's "no reward for this item"; NaN reads as None).

    A wrong type or length is a config error: the function is wrong on every item.
    """
    if not isinstance(values, list | tuple):
        raise RewardConfigError(f"returned {type(values).__name__}; it must return a list of floats")
    if len(values) != n:
        raise RewardConfigError(f"returned {len(values)} values for {n} completion{'s' * (n != 1)}")
    out: list[float | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardConfigError(f"returned a {type(value).__name__}; values must be floats or None")
        out.append(None if math.isnan(value) else float(value))
    return out


def _finish(result: Any) -> Any:
    """Await a coroutine's result on a fresh event loop (a helper thread's if this one runs a loop)."""
    if not inspect.isawaitable(result):
        return result

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # e.g. called from a notebook's loop
        return thread.submit(asyncio.run, wait()).result()


def call_batch(
    fn: Any,
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Sequence[int]] | None,
    columns: Mapping[str, Sequence[Any]],
    state: RewardState,
) -> tuple[list[float | None], dict[str, list[float]], dict[str, list[Any]]]:
    """``fn`` on the whole batch with TRL's keywords: its checked values and its log records."""
    log = RewardLog()
    values = _finish(fn(
        prompts=list(prompts), completions=list(completions),
        completion_ids=None if completion_ids is None else [list(ids) for ids in completion_ids],
        **{k: list(v) for k, v in columns.items()},
        trainer_state=state, log_extra=log.log_extra, log_metric=log.log_metric,
    ))  # fmt: skip
    return (checked_values(values, len(completions)), *log.records())
