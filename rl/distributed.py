"""What the trainer's processes must agree on when ``accelerate launch`` starts several.

Under DDP every process must run the same number of backward passes and take
(or skip) every optimizer step together, or the gradient all-reduce hangs. Each
helper is a no-op with one process, so a single-process run pays nothing.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object


def make_accelerator(cpu: bool, partly_used: bool = False) -> Accelerator:
    """The trainers' accelerator; ``partly_used`` (``DiffusionLM.partly_used``) makes DDP find the
    parameters a step left without gradient, where it would otherwise wait for them forever."""
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=partly_used)])


def end_processes(accelerator: Accelerator) -> None:
    """Destroy the process group after every rank has released what uses it.

    A DDP module still alive when the group is destroyed is torn down at interpreter
    exit instead, and there one rank in two aborted ("terminate called without an
    active exception", SIGABRT after a finished run) in 2-process CPU runs; released
    and collected first, no abort occurred in 10 runs (docs/scale-out.md). The caller
    drops its own references to the wrapped model and optimizer before calling.
    """
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True when ``flag`` is true on at least one process."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def max_over_processes(accelerator: Accelerator, value: int) -> int:
    """The largest ``value`` of any process (e.g. micro-batch counts, padded up to it)."""
    if accelerator.num_processes == 1:
        return value
    return int(accelerator.gather(torch.tensor([value], device=accelerator.device)).max().item())


def mean_over_processes(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes that reported it (one log line for the step)."""
    if accelerator.num_processes == 1:
        return metrics
    gathered: list[dict[str, float]] = gather_object([metrics])
    keys = dict.fromkeys(key for record in gathered for key in record)
    return {key: sum(r[key] for r in gathered if key in r) / sum(key in r for r in gathered) for key in keys}


class Preemption:
    """Remembers a SIGTERM (what schedulers send before killing a job) until the step ends."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[Preemption]:
        """Catch SIGTERM while training (main thread only; elsewhere the default stays)."""
        try:
            previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
