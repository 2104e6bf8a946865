"""RewardRunner: weighted rewards for a batch, deduplicated, cached, with deadlines.

One call grades everything a training step needs (for MDPO: the ``T x G`` intermediate
texts flattened into one batch). Built-in rewards are graded per item: identical
(reward, prompt, completion, reference) items are graded once per batch and remembered
for the run. Any other reward function is called as TRL calls it (``batch.py``): once
per batch with every keyword, in a worker under the same deadline, never cached (it may
read ``trainer_state``). What it logs with ``log_metric`` joins the batch's metrics
(the mean per name, as TRL reports it); its ``log_extra`` columns come back in
``RewardBatch.extra``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .batch import RewardState
from .functions import completion_text
from .health import RewardHealth
from .pool import LazyWorkerPool, OwnsWorkerPool, WorkerPool
from .registry import RewardSpec
from .result import RewardConfigError
from .worker import Outcome, RewardCaller, reward_handler

#: a reward value (None = not applicable) and why its grader read no answer (None = it did)
Graded = tuple[float | None, str | None]

logger = logging.getLogger("unmask.rewards")


@dataclass
class RewardBatch:
    """Weighted totals, each reward's own values (None = not applicable), batch metrics, and
    the per-completion columns reward functions passed to ``log_extra``."""

    totals: list[float]
    per_reward: dict[str, list[float | None]]
    metrics: dict[str, float]
    extra: dict[str, list[Any]] = field(default_factory=dict)


#: the runner's own counts in ``RewardBatch.metrics`` (the rest are reward values and logged metrics)
COUNTS = ("items", "graded", "in_process", "cache_hits", "dedup_hits", "timeouts", "errors", "worker_restarts", "seconds")


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


class RewardRunner(OwnsWorkerPool):
    """Grades batches with ``specs`` in ``num_workers`` processes (0 = in this process,
    errors still contained but no deadline). Use as a context manager or call ``close``."""

    def __init__(
        self,
        specs: Sequence[RewardSpec],
        num_workers: int = 2,
        deadline_s: float = 5.0,
        on_error: float = 0.0,
        cache_size: int = 200_000,
        memory_limit_mb: int | None = 2048,
        start_method: str = "forkserver",
    ) -> None:
        self.specs = list(specs)
        if not self.specs:
            raise RewardConfigError("no rewards configured: list at least one reward")
        labels = [spec.name for spec in self.specs]
        repeated = sorted({name for name in labels if labels.count(name) > 1})
        if repeated:
            raise RewardConfigError(
                f"reward(s) {repeated} listed more than once; merge their weights"
            )
        if num_workers < 0 or deadline_s <= 0:
            raise ValueError("num_workers must be >= 0 and deadline_s > 0")
        self._callers = [RewardCaller(spec) for spec in self.specs]  # bad names fail here, not in a worker
        self.num_workers = num_workers
        self.deadline_s = deadline_s
        self.on_error = on_error
        #: workers start at the first batch that needs them; ``close`` (or ``with``) stops them
        handler = functools.partial(reward_handler, self.specs)
        self.pool = LazyWorkerPool(
            functools.partial(WorkerPool, num_workers, handler, memory_limit_mb, start_method)
        )
        self._cache: OrderedDict[bytes, Graded] = OrderedDict()
        self._cache_size = cache_size
        self._logged: set[tuple[str, str]] = set()
        self.counters: Counter[str] = Counter()
        #: failure shares of the first steps; ``end_step`` turns them into one warning
        self.health = RewardHealth()
        #: what batched reward functions receive as ``trainer_state``; the trainer sets it each step
        self.state = RewardState()

    def _in_process(self, job: tuple[Any, ...]) -> Outcome | None:
        """``job``'s outcome here where that is safe (no workers, or a cheap bounded item), else None."""
        caller, fields = self._callers[job[0]], job[1:]
        if caller.batched:
            return caller.batch(*fields) if self.num_workers == 0 else None
        return caller.full(*fields) if self.num_workers == 0 else caller.local(*fields)

    def _execute(self, jobs: list[tuple[Any, ...]], stats: Counter[str]) -> list[Outcome]:
        """Outcomes of ``jobs``: in this process where cheap and bounded, the rest in the pool."""
        outcomes = [self._in_process(job) for job in jobs]
        remote = [k for k, outcome in enumerate(outcomes) if outcome is None]
        stats["in_process"] += len(jobs) - len(remote)
        if remote:
            pooled, restarts = self.pool.run([jobs[k] for k in remote], self.deadline_s)
            stats["worker_restarts"] += restarts
            for k, outcome in zip(remote, pooled, strict=True):
                outcomes[k] = outcome
        return [o for o in outcomes if o is not None]

    def _value(self, label: str, outcome: Outcome, stats: Counter[str], items: int = 1) -> Any:
        """An ``ok`` payload, or None after counting and logging (once per message) a contained failure."""
        kind, payload = outcome
        if kind == "ok":
            return payload
        if kind == "config":
            raise RewardConfigError(f"reward {label!r}: {payload}")
        stats["timeouts" if kind == "timeout" else "errors"] += 1
        message = f"timed out after {self.deadline_s:g} s" if kind == "timeout" else payload
        if (label, message) not in self._logged:
            self._logged.add((label, message))
            where = "an item" if items == 1 else f"a batch of {items} items"
            logger.warning("reward %r scored %g on %s: %s", label, self.on_error, where, message)
        return None

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Sequence[Any]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> RewardBatch:
        """Rewards for ``completions`` (str or TRL messages) with their ``prompts``, dataset
        ``columns`` (name -> one value per completion) and token ``completion_ids`` (TRL's
        keyword; None where the caller has no tokens).

        Metrics include, per built-in task reward, the share of completions in which
        its grader found no answer (``rewards/NAME/no_answer``) or could not parse the
        one it found (``rewards/NAME/unparseable``), and where the grader names why answers
        failed (code: timeout, memory, wrong answer, ...) the share of each (``rewards/NAME/failed/KIND``).
        """
        began = time.perf_counter()
        columns = dict(columns or {})
        n = len(completions)
        lengths = {"prompts": prompts, **columns, **({} if completion_ids is None else {"completion_ids": completion_ids})}
        for name, values in lengths.items():
            if len(values) != n:
                raise ValueError(f"{name!r} has {len(values)} values for {n} completions")
        rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        stats: Counter[str] = Counter(items=n * len(self.specs))
        keys: dict[int, list[bytes]] = {}
        jobs: list[tuple[Any, ...]] = []
        job_of: dict[bytes, int] = {}
        batch_job: dict[int, int] = {}
        for j, caller in enumerate(self._callers):
            if caller.batched:
                if n:
                    batch_job[j] = len(jobs)
                    jobs.append((j, list(prompts), list(completions), completion_ids, columns, self.state))
                continue
            keys[j] = []
            for i in range(n):
                item = (j, prompts[i], completions[i], rows[i])
                key = hashlib.blake2b(pickle.dumps(item, protocol=5), digest_size=16).digest()
                keys[j].append(key)
                if key in self._cache:
                    stats["cache_hits"] += 1
                elif key in job_of:
                    stats["dedup_hits"] += 1
                else:
                    job_of[key] = len(jobs)
                    jobs.append(item)
        outcomes = self._execute(jobs, stats)
        fresh: dict[bytes, Graded] = {}
        for key, k in job_of.items():
            fresh[key] = self._value(self.specs[jobs[k][0]].name, outcomes[k], stats) or (self.on_error, None)
        self._remember(fresh)
        graded = {self.specs[j].name: [fresh[k] if k in fresh else self._cache[k] for k in item_keys]
                  for j, item_keys in keys.items()}  # fmt: skip
        logged: dict[str, list[float]] = {}
        extra: dict[str, list[Any]] = {}
        for j, k in batch_job.items():
            payload = self._value(self.specs[j].name, outcomes[k], stats, items=n)
            values, metrics_logged, columns_logged = payload or ([self.on_error] * n, {}, {})
            graded[self.specs[j].name] = [(v, None) for v in values]
            for name, logged_values in metrics_logged.items():
                logged.setdefault(name, []).extend(logged_values)
            extra.update(columns_logged)
        graded = {spec.name: graded[spec.name] for spec in self.specs}  # the recipe's order
        per_reward = {name: [value for value, _ in pairs] for name, pairs in graded.items()}
        totals = (
            [
                sum(
                    spec.weight * v
                    for spec, v in zip(self.specs, values, strict=True)
                    if v is not None
                )
                for values in zip(*per_reward.values(), strict=True)
            ]
            if n
            else []
        )
        stats["graded"] = len(job_of) + n * len(batch_job)
        self.counters.update(stats)
        metrics = {key: float(stats[key]) for key in COUNTS[:-1]}
        metrics.update({f"rewards/{name}/mean": _mean(vals) for name, vals in per_reward.items()})
        metrics["rewards/total/mean"] = _mean(list(totals))
        metrics.update({name: sum(values) / len(values) for name, values in logged.items() if values})
        texts = [c if isinstance(c, str) else completion_text(c) for c in completions]
        for caller, (name, pairs) in zip(self._callers, graded.items(), strict=True):
            if caller.task is None or not n:
                continue
            reasons = [reason for _, reason in pairs]
            metrics[f"rewards/{name}/no_answer"] = sum(bool(r and r.startswith("no answer")) for r in reasons) / n
            metrics[f"rewards/{name}/unparseable"] = sum(bool(r and r.startswith("unparseable")) for r in reasons) / n
            for kind, count in Counter(r[len("failed: "):] for r in reasons if r and r.startswith("failed: ")).items():
                metrics[f"rewards/{name}/failed/{kind}"] = count / n
            self.health.record(name, reasons, texts, totals)
        metrics["seconds"] = time.perf_counter() - began
        return RewardBatch(totals, per_reward, metrics, extra)

    def end_step(self) -> str | None:
        """Close one training step for the reward-health check; logs (and returns) its
        one warning when the first steps' rewards were all 0 because answers went unread."""
        warning = self.health.end_step()
        if warning:
            logger.warning(warning)
        return warning

    def _remember(self, fresh: dict[bytes, Graded]) -> None:
        for key, value in fresh.items():
            self._cache[key] = value
        for key in list(self._cache)[: max(0, len(self._cache) - self._cache_size)]:
            del self._cache[key]
