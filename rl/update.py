"""The update engine both front ends call: estimator keys, θ_old and reference scores, the
micro-batch loss, the overlap behaviour policy and the all-or-nothing rollback.

``unmask.rl.trainer.Trainer`` and ``unmask.integrations.trl.DiffusionGRPOTrainer`` order
and cut their batches differently (their own shuffles and accumulation), but every
decision that makes ratios and masks meaningful is taken here once:

- one key per (inner iteration, micro-batch), shared by the θ, θ_old and reference
  passes, so the three see the same masks; micro-batches are numbered across
  processes, so each rank draws its own masks instead of repeating rank 0's;
- θ_old is scored before the first optimizer step whenever one batch feeds more than
  one step (or was sampled by an older policy), except where θ itself is θ_old;
- the reference is the adapter-disabled policy (LoRA) or a frozen copy.

A learned critic (TraceRL's value model) would be a third frozen role beside ``old``
and ``ref``, scored here on the same keys, with its own loss part (docs/objectives.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from unmask.rl.estimators import Key, Scores
from unmask.rl.objective import Objective, TrainBatch

#: the frozen passes of one update, ``[iteration][micro-batch]``; None where θ_old is θ
Frozen = list[list[Scores | None]]


def derive_seed(*parts: int) -> int:
    """A deterministic 62-bit seed from integers (run seed, step, purpose, …)."""
    value = 0x9E3779B9
    for part in parts:
        value = (value * 1_000_003 + int(part) + 1) % (1 << 62)
    return value


def estimator_keys(
    objective: Objective, micro: list[TrainBatch], *, seed: int, step: int, iterations: int, process_index: int
) -> list[list[Key]]:
    """Estimator keys per inner iteration and micro-batch (shared by θ, θ_old and the reference).

    Rank ``r``'s ``j``-th micro-batch is number ``r·len(micro) + j`` of the step, so
    the ranks draw independent masks.
    """
    first = process_index * len(micro)
    return [
        [objective.key(mb, derive_seed(seed, step, i, first + j)) for j, mb in enumerate(micro)]
        for i in range(iterations)
    ]


def micro_batch_loss(
    objective: Objective, model: nn.Module, batch: TrainBatch, key: Key, old: Scores | None, ref: Scores | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy's loss on one micro-batch: estimator scores under ``key``, then the objective's loss."""
    scores = objective.estimator.token_logprobs(model, batch.traj, key)
    return objective.loss(batch, scores, old, ref)


class FrozenScorer:
    """No-grad scores of θ as it is now (``"old"``) or of the reference (``"ref"``)."""

    def __init__(self, objective: Objective, policy: nn.Module, reference: nn.Module | None,
                 unwrap: Callable[[nn.Module], nn.Module]) -> None:
        self.objective, self.policy, self.reference, self.unwrap = objective, policy, reference, unwrap
        #: model forward passes spent, for the trainer's accounting
        self.passes = 0

    @torch.no_grad()
    def __call__(self, batch: TrainBatch, key: Key, which: str) -> Scores:
        estimator = self.objective.estimator
        self.passes += estimator.passes_for(batch.traj)
        if which == "old":
            return estimator.token_logprobs(self.policy, batch.traj, key)
        if self.reference is not None:
            return estimator.token_logprobs(self.reference, batch.traj, key)
        with self.unwrap(self.policy).disable_adapter():  # LoRA: the reference is the adapter-off base
            return estimator.token_logprobs(self.policy, batch.traj, key)


def frozen_scores(
    objective: Objective, micro: list[TrainBatch], keys: list[list[Key]], scorer: FrozenScorer, which: str,
    exact: frozenset[int] = frozenset(),
) -> Frozen:
    """θ_old or reference scores for every (iteration, micro-batch), computed before any update.

    ``exact``: micro-batches whose scores only the first optimizer step reads, where θ
    itself is θ_old; they get ``None`` instead of a pass. Empty micro-batches get ``None``.
    An estimator whose key does not change across iterations is scored once.
    """
    def score(j: int, key: Key) -> Scores | None:
        return None if j in exact or len(micro[j]) == 0 else scorer(micro[j], key, which)

    first = [score(j, key) for j, key in enumerate(keys[0])]
    if not objective.estimator.varies_per_iteration:
        return [first] * len(keys)
    return [first, *[[score(j, key) for j, key in enumerate(ks)] for ks in keys[1:]]]


def frozen_passes(
    objective: Objective, micro: list[TrainBatch], keys: list[list[Key]], scorer: FrozenScorer, *,
    optimizer_steps: int, first_step: list[int], stale: bool = False,
    behaviour: contextlib.AbstractContextManager[Any] | None = None,
) -> tuple[Frozen | None, Frozen | None]:
    """``(θ_old, reference)`` scores of one update, or None where the objective needs none.

    From the second optimizer step on a batch is off-policy, so its ratios need θ_old
    scored now, whatever inner iterations and accumulation produced the steps; a batch
    sampled by an older policy (``stale``, overlap) is off-policy from the first, and
    ``behaviour`` swaps that policy in around every θ_old pass at once.
    """
    old = None
    if objective.needs_old and (optimizer_steps > 1 or stale):
        exact = frozenset(first_step) if len(keys) == 1 and not stale else frozenset()
        with behaviour or contextlib.nullcontext():
            old = frozen_scores(objective, micro, keys, scorer, "old", exact)
    ref = frozen_scores(objective, micro, keys, scorer, "ref") if objective.needs_reference else None
    return old, ref


@contextlib.contextmanager
def behaviour_policy(model: nn.Module, adapter: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Score with the adapter the batch was sampled with (overlap: one update behind), then restore θ."""
    if adapter is None:
        yield
        return
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    current = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(adapter[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(current[name])


class UpdateRollback:
    """Trainable parameters and optimizer state before an update, to undo it if it diverges.

    Kept on the CPU (the accelerator's memory is the scarce one); with LoRA this
    is a few MB. Only taken when an update spans several optimizer steps, since
    a single step is simply not taken when its loss is non-finite.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params = [(p, p.detach().to("cpu", copy=True)) for p in model.parameters() if p.requires_grad]
        self.optimizer_state = _cpu_copy(optimizer.state_dict())

    def restore(self) -> None:
        with torch.no_grad():
            for param, saved in self.params:
                param.copy_(saved)
        self.optimizer.load_state_dict(self.optimizer_state)  # moves the state back to the params' device


def _cpu_copy(value: Any) -> Any:
    """A copy of a nested optimizer state dict whose tensors live on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu_copy(v) for v in value]
    return value
