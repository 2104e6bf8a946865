"""The update engine both front ends call: micro-batching, estimator keys, θ_old and reference
scores, the micro-batch loss (with an optional critic), the overlap behaviour policy and the
all-or-nothing rollback.

``unmask.rl.trainer.Trainer`` and ``unmask.integrations.trl.DiffusionGRPOTrainer`` differ
only in who runs the loop (unmask's own, or transformers' with TRL's buffering); every
decision that makes ratios, masks and gradients agree is taken here once:

- one cut of a rollout batch: items shuffled by the step's seed, then micro-batches of a
  size (unmask's trainer) or a count (TRL's fixed steps per generation; the same cut when
  the batch fills them), grouped into optimizer steps, each micro-batch's loss scaled by
  its share of its step's items, so a step's gradient is the mean over its items;
- one key per (inner iteration, micro-batch), shared by the θ, θ_old and reference
  passes, so the three see the same masks; micro-batches are numbered across
  processes, so each rank draws its own masks instead of repeating rank 0's;
- θ_old is scored before the first optimizer step whenever one batch feeds more than
  one step (or was sampled by an older policy), except where θ itself is θ_old;
- the reference is the adapter-disabled policy (LoRA) or a frozen copy.

A learned critic (TraceRL's value model) plugs into the micro-batch loss (``rl/critic.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from unmask.rl.critic import Critic
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


#: the purpose number in the seed of the micro-batch shuffle
_SHUFFLE = 2 << 20


def optimizer_windows(count: int, accumulate: int = 1, steps_per_pass: int | None = None) -> list[list[int]]:
    """Micro-batch indices of each optimizer step of one pass over ``count`` micro-batches.

    ``steps_per_pass`` splits the pass into that many steps (never more than micro-batches;
    1: the published MDPO trainer's one step per rollout batch); otherwise every
    ``accumulate`` micro-batches make one step.
    """
    if steps_per_pass is not None:
        return [w.tolist() for w in torch.arange(count).tensor_split(min(steps_per_pass, count))]
    return [list(range(i, min(i + accumulate, count))) for i in range(0, count, accumulate)]


@dataclass(frozen=True)
class MicroBatches:
    """One process's cut of a rollout batch: the items of each micro-batch and the optimizer steps over them."""

    #: item indices into the batch, per micro-batch
    indices: list[torch.Tensor]
    #: micro-batches past this one are zero-weight copies (``padded``)
    real: int
    accumulate: int = 1
    steps_per_pass: int | None = None

    @property
    def windows(self) -> list[list[int]]:
        return optimizer_windows(len(self.indices), self.accumulate, self.steps_per_pass)

    def padded(self, count: int) -> MicroBatches:
        """Copies of the last micro-batch up to ``count``, weighted 0: under DDP every process must run as
        many backward passes as the busiest one, or the gradient all-reduce hangs."""
        return replace(self, indices=self.indices + [self.indices[-1]] * (count - len(self.indices)))

    def select(self, batch: TrainBatch, device: torch.device | str) -> list[TrainBatch]:
        return [batch.select(rows).to(device) for rows in self.indices]

    def scaled(self, j: int, loss: torch.Tensor) -> torch.Tensor:
        """Micro-batch ``j``'s loss as it enters backward: times its share of its optimizer step's items.

        A step's gradient is then the item-weighted mean of its micro-batch losses. For
        aggregations that are item means (``sequence_mean``, ``constant``) that is the loss of
        the step's items as one batch, so the cut changes nothing but float round-off; a
        ``token_mean`` normalises within each micro-batch, as TRL and d1 do.
        """
        window = next(w for w in self.windows if j in w)
        items = max(1, sum(len(self.indices[k]) for k in window if k < self.real))
        return loss * (len(self.indices[j]) if j < self.real else 0) / items


def cut_batch(
    items: int, *, seed: int, step: int, size: int | None = None, count: int | None = None,
    accumulate: int = 1, steps_per_pass: int | None = None,
) -> MicroBatches:
    """Shuffle ``items`` with the step's seed and cut them into micro-batches of ``size`` items, or
    into ``count`` near-equal ones (TRL: one per step of a generation batch; equal to the cut by size
    when ``items = size·count``). The shuffle comes first because objectives lay items out prompt by
    prompt (MDPO: answer by answer, step by step): cut in order, each optimizer step would hold the
    answers of a single prompt."""
    if (size is None) == (count is None):
        raise ValueError("cut_batch: give the micro-batch size or the micro-batch count, not both")
    order = torch.randperm(items, generator=torch.Generator().manual_seed(derive_seed(seed, step, _SHUFFLE)))
    parts = list(order.tensor_split(count)) if count is not None else [order[i : i + size] for i in range(0, items, size)]
    return MicroBatches(parts, len(parts), accumulate, steps_per_pass)


def micro_batch_loss(
    objective: Objective, model: nn.Module, batch: TrainBatch, key: Key, old: Scores | None, ref: Scores | None,
    critic: Critic | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch: estimator scores under ``key``, then the objective's loss.

    With a ``critic``, its token advantages replace the batch's per-item ones and its value
    loss is added (``value_loss`` in the metrics), so one backward trains both.
    """
    scores = objective.estimator.token_logprobs(model, batch.traj, key)
    if critic is None:
        loss, metrics = objective.loss(batch, scores, old, ref)
        return loss, {**scores.metrics, **metrics}
    if objective.level != "token":
        raise ValueError(f"a critic's token advantages need a token-level policy loss; {objective.config.policy_loss} "
                         "gives one term per item")
    advantages = critic.advantages(batch, key).detach()
    loss, metrics = objective.loss(replace(batch, advantages=advantages), scores, old, ref)
    value_loss = critic.loss(batch, key)
    return loss + value_loss, {**scores.metrics, **metrics, "value_loss": float(value_loss.detach())}


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
