"""A process pool that can kill and replace one worker when its item passes a deadline.

``concurrent.futures.ProcessPoolExecutor`` cannot cancel a running task, and a killed
worker breaks the whole executor; Ray can cancel but costs seconds to start and a
scheduler round-trip per item. Here each worker owns a pipe, runs one item at a time,
and the parent waits on pipes and process sentinels, so a hung or crashed item costs
exactly one worker restart. Workers fork from a ``forkserver`` that has already
imported the graders, so a restart takes milliseconds, not a fresh sympy import.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from .worker import Handler, Outcome, serve

_STARTUP_S = 120.0


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


class WorkerPool:
    """``num_workers`` grading workers; ``run`` hands each job (a tuple of fields) to the
    handler ``make_handler()`` built in every worker, and returns one outcome per job, in
    order. ``make_handler`` must be picklable (a module-level function or a partial of one),
    e.g. ``functools.partial(reward_handler, specs)``."""

    def __init__(
        self,
        num_workers: int,
        make_handler: Callable[[], Handler],
        memory_limit_mb: int | None = 2048,
        start_method: str = "forkserver",
    ) -> None:
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["unmask.rewards", "unmask.rewards.warm"])
        self._make_handler = make_handler
        self._memory_limit_mb = memory_limit_mb
        self.restarts = 0
        started = [self._start() for _ in range(num_workers)]
        self._workers = [self._await_ready(w) for w in started]

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=serve, args=(child, self._make_handler, self._memory_limit_mb), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _await_ready(self, worker: _Worker) -> _Worker:
        if not worker.conn.poll(_STARTUP_S):
            self._stop(worker)
            raise RuntimeError(f"reward worker did not start within {_STARTUP_S:.0f} s")
        try:
            worker.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"reward worker exited at start-up (exit code {worker.process.exitcode}); a script "
                "that creates a RewardRunner must do so under `if __name__ == '__main__':`"
            ) from None
        return worker

    @staticmethod
    def _stop(worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()

    def _replace(self, worker: _Worker) -> _Worker:
        self._stop(worker)
        self.restarts += 1
        fresh = self._await_ready(self._start())
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def run(self, jobs: list[tuple[Any, ...]], deadline_s: float) -> list[Outcome]:
        """Outcomes per job; an item running longer than ``deadline_s`` is killed."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        idle = list(self._workers)
        busy: dict[int, tuple[_Worker, int, float]] = {}  # sentinel -> (worker, job, start)
        while queue or busy:
            while queue and idle:
                worker, job = idle.pop(), queue.popleft()
                try:
                    worker.conn.send(jobs[job])
                except OSError:  # died while idle: replace it and retry the job
                    idle.append(self._replace(worker))
                    queue.appendleft(job)
                    continue
                busy[worker.process.sentinel] = (worker, job, time.monotonic())
            first_deadline = min(start for _, _, start in busy.values()) + deadline_s
            ready = wait(
                [w.conn for w, _, _ in busy.values()] + list(busy),
                timeout=max(0.0, first_deadline - time.monotonic()),
            )
            for sentinel in list(busy):
                worker, job, start = busy[sentinel]
                if worker.conn in ready or sentinel in ready:
                    outcomes[job] = self._collect(worker)
                elif time.monotonic() - start >= deadline_s:
                    outcomes[job] = ("timeout", None)
                else:
                    continue
                del busy[sentinel]
                healthy = outcomes[job][0] != "timeout" and worker.process.is_alive()
                idle.append(worker if healthy else self._replace(worker))
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _collect(worker: _Worker) -> Outcome:
        with contextlib.suppress(EOFError, OSError):
            if worker.conn.poll():
                return worker.conn.recv()
        worker.process.join(timeout=1.0)
        return ("died", f"reward worker died (exit code {worker.process.exitcode})")

    def close(self) -> None:
        """Ask workers to exit, then kill any that do not."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=2.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []


class LazyWorkerPool:
    """A ``WorkerPool`` started at the first ``run`` and stopped by ``close`` (a later ``run``
    starts a new one): owners that may never need workers, such as a grader that only meets
    in-process tasks, pay no start-up."""

    def __init__(self, start: Callable[[], WorkerPool]) -> None:
        """``start`` builds the pool, e.g. ``functools.partial(WorkerPool, 2, handler)``."""
        self._start = start
        self._pool: WorkerPool | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def run(self, jobs: list[tuple[Any, ...]], deadline_s: float) -> tuple[list[Outcome], int]:
        """Outcomes of ``jobs`` (see ``WorkerPool.run``) and the worker restarts they caused."""
        if self._pool is None:
            self._pool = self._start()
        before = self._pool.restarts
        outcomes = self._pool.run(jobs, deadline_s)
        return outcomes, self._pool.restarts - before

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


_Owner = TypeVar("_Owner", bound="OwnsWorkerPool")


class OwnsWorkerPool:
    """``with`` and ``close`` for classes that grade through a ``LazyWorkerPool`` in ``self.pool``."""

    pool: LazyWorkerPool

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (the next call that needs them starts new ones)."""
        self.pool.close()
