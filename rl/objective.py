"""The ``Objective``: a composition of registered parts, named by a recipe's algorithm section.

An objective turns a scored rollout into a ``TrainBatch`` (``prepare``: advantages,
which steps to train, extra samples) and a ``TrainBatch`` plus estimator scores into
a scalar loss (``loss``). It never sees how rollouts were produced or how the
trainer batches, accumulates and steps. Every algorithm is a preset: its recipe
section's defaults name its parts (batch builder, advantage, likelihood estimator,
policy loss, KL form and its target, loss mask, token weight, aggregation, group filter),
and a recipe may swap any of them; ``check_parts`` refuses the pairs that cannot work (docs/objectives.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.rl.advantages import truncated
from unmask.rl.estimators import Estimator, Key, Scores
from unmask.rl.losses import KL_FORMS, masked_mean
from unmask.rl.policy_losses import LossInputs
from unmask.rollouts.trajectory import Trajectory


@dataclass
class Rollout:
    """A sampled, rewarded batch: ``N = prompts × G`` rows, the G answers of a prompt adjacent."""

    traj: Trajectory
    #: the dataset row of each answer (repeated G times)
    rows: list[dict[str, Any]]
    #: total (weighted) reward per answer ``[N]``
    rewards: torch.Tensor
    #: answer judged correct ``[N]`` (reward ≥ ``correct_threshold``)
    correct: torch.Tensor
    group_size: int
    #: seeds the objective's own randomness (IGPO hints), so resumed runs replay it
    seed: int = 0


@dataclass
class TrainBatch:
    """What the update consumes; ``N`` items (an item is a row, or a (row, step) for MDPO)."""

    traj: Trajectory
    #: scalar advantage (or wd1 coefficient) per item ``[N]``
    advantages: torch.Tensor
    #: trained step per item (per-step estimator), else None
    steps: torch.Tensor | None = None
    #: prepare-time statistics logged with the step
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.advantages.shape[0])

    def to(self, device: torch.device | str) -> TrainBatch:
        steps = None if self.steps is None else self.steps.to(device)
        return replace(self, traj=self.traj.to(device), advantages=self.advantages.to(device), steps=steps)

    def select(self, rows: torch.Tensor | list[int]) -> TrainBatch:
        rows = torch.as_tensor(rows, dtype=torch.long)
        steps = None if self.steps is None else self.steps[rows]
        return replace(self, traj=self.traj.select(rows), advantages=self.advantages[rows], steps=steps)


@dataclass
class RewardResult:
    rewards: torch.Tensor
    correct: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


#: prompt rows → left-padded ``[B, P]`` prompt ids and attention mask, as the trainer feeds the sampler
Encoder = Callable[[list[dict[str, Any]]], tuple[torch.Tensor, torch.Tensor]]


class RolloutContext(Protocol):
    """What ``prepare`` may ask of the trainer: more samples and more rewards."""

    def generate(
        self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, hints: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> Trajectory: ...

    def score(self, traj: Trajectory, rows: list[dict[str, Any]]) -> RewardResult: ...

    def score_steps(self, traj: Trajectory, rows: list[dict[str, Any]]) -> torch.Tensor: ...

    @property
    def tokenizer(self) -> Any: ...


#: the modules whose decorators register the parts (imported before any part is looked up)
PART_MODULES = (
    "advantages", "losses", "likelihoods", "policy_losses", "aggregation", "batches",
    "mdpo", "igpo", "wd1", "spg", "espo", "bgpo", "coupled_grpo", "cj_grpo", "gdsd", "justgrpo",
)


def registries() -> dict[str, Any]:
    """Every part registry by the algorithm field that names its part."""
    modules = {name: importlib.import_module(f"unmask.rl.{name}") for name in PART_MODULES}
    return {
        "batch": modules["batches"].BATCHES, "advantage": modules["advantages"].ADVANTAGES,
        "estimator": modules["likelihoods"].ESTIMATORS, "policy_loss": modules["policy_losses"].POLICY_LOSSES,
        "kl": KL_FORMS, "loss_mask": modules["aggregation"].LOSS_MASKS,
        "token_weight": modules["aggregation"].TOKEN_WEIGHTS, "aggregation": modules["aggregation"].AGGREGATIONS,
        "group_filter": modules["advantages"].GROUP_FILTERS,
    }


def check_parts(config: Any) -> None:
    """Refuse unknown parts and incompatible pairs with one line naming the field to change (docs/objectives.md)."""
    parts = registries()
    chosen = {kind: getattr(config, kind) for kind in parts}
    for kind, name in chosen.items():
        try:
            needs = parts[kind].trait(name, "needs", ())
        except ValueError as unknown:
            raise ValueError(f"algorithm.{kind}: {unknown}") from None
        missing = [need for need in needs if not hasattr(config, need)]
        if missing:
            raise ValueError(
                f"algorithm.{kind}: {name} reads {', '.join(missing)}, which {config.name} has no field for; "
                f"start from an algorithm that has it"
            )

    def trait(kind: str, name: str, default: Any = None) -> Any:
        return parts[kind].trait(chosen[kind], name, default)

    level = trait("policy_loss", "level")
    rules = [
        (level not in trait("aggregation", "levels"), "aggregation",
         f"{chosen['aggregation']} reduces {'/'.join(trait('aggregation', 'levels'))} terms and "
         f"{chosen['policy_loss']} gives {level} terms"),
        (trait("kl", "level") == "sequence" and trait("policy_loss", "sequence") is None, "kl",
         f"{chosen['kl']} penalises a sequence value and {chosen['policy_loss']} has none; use k2 or k3"),
        (trait("policy_loss", "estimator") is not None
         and not trait("estimator", trait("policy_loss", "estimator")), "estimator",
         f"{chosen['policy_loss']} needs an estimator with the {trait('policy_loss', 'estimator')} trait"),
        (bool(trait("advantage", "per_step")) != parts["batch"][chosen["batch"]].per_step, "advantage",
         f"{chosen['advantage']} and the {chosen['batch']} batch builder disagree on per-step items"),
        (trait("estimator", "keyed_by") != parts["batch"][chosen["batch"]].item_key, "estimator",
         f"{chosen['estimator']} is keyed by {trait('estimator', 'keyed_by') or 'a seed'} and the "
         f"{chosen['batch']} batch builder's items carry {parts['batch'][chosen['batch']].item_key or 'no steps'}"),
        (trait("token_weight", "per_step") and not parts["batch"][chosen["batch"]].per_step, "token_weight",
         f"{chosen['token_weight']} weighs a trained step; it needs the steps batch builder"),
        (trait("estimator", "uniform") and chosen["loss_mask"] != "scored", "loss_mask",
         f"{chosen['estimator']} scores sampler decisions, not answer tokens; use scored"),
        (trait("estimator", "uniform") and trait("token_weight", "answer_tokens"), "token_weight",
         f"{chosen['token_weight']} weighs answer tokens and {chosen['estimator']} scores sampler decisions; "
         "use estimator"),
    ]
    for broken, kind, why in rules:
        if broken:
            raise ValueError(f"algorithm.{kind}: {why} (docs/objectives.md)")


class Objective:
    """The parts a recipe's algorithm section names, put together."""

    def __init__(self, config: Any, *, process: DiffusionProcess, temperature: float, gen_length: int) -> None:
        check_parts(config)
        parts = registries()
        self.config = config
        self.name = config.name
        self.gen_length = gen_length
        self.batches = parts["batch"][config.batch]
        self.advantage = parts["advantage"][config.advantage]
        self.policy = parts["policy_loss"][config.policy_loss]
        self.level = parts["policy_loss"].trait(config.policy_loss, "level")
        #: whether the loss reads θ_old (a θ/θ_old ratio, or a KL against θ_old); the trainer
        #: scores θ_old whenever one rollout batch feeds more than one optimizer step (θ_old = θ on the first)
        self.needs_old = bool(parts["policy_loss"].trait(config.policy_loss, "ratio")) or self._kl_against("old")
        self.sequence_value = parts["policy_loss"].trait(config.policy_loss, "sequence")
        self.kl, self.kl_level = KL_FORMS[config.kl], KL_FORMS.trait(config.kl, "level")
        self.mask = parts["loss_mask"][config.loss_mask]
        self.token_weight = parts["token_weight"][config.token_weight]
        self.aggregate = parts["aggregation"][config.aggregation]
        self.group_filter = parts["group_filter"][config.group_filter]
        if not process.mask_token and not parts["estimator"].trait(config.estimator, "uniform"):
            raise UserError(
                f"algorithm.estimator: {config.estimator} scores a canvas corrupted with a mask token, which the "
                f"{process.name} process (DiffusionGemma) has none of; set algorithm.estimator: renoise_replay "
                "(renoise_step with the steps batch builder) and algorithm.loss_mask: scored"
            )
        self.estimator: Estimator = parts["estimator"][config.estimator](config, process, temperature)
        #: rollouts must keep the per-step record (docs/sampling.md §7)
        self.record_steps = bool(parts["estimator"].trait(config.estimator, "record"))
        self._keyed_by_steps = parts["estimator"].trait(config.estimator, "keyed_by") is not None

    def _kl_against(self, target: str) -> bool:
        return self.config.beta > 0 and self.config.kl_target == target

    @property
    def needs_reference(self) -> bool:
        return self._kl_against("reference")

    def key(self, batch: TrainBatch, seed: int) -> Key:
        """The estimator key of one inner iteration for ``batch`` (a per-step estimator's: its steps)."""
        return batch.steps if self._keyed_by_steps else self.estimator.key_for(batch.traj, seed)

    def advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        return self.advantage(rewards, group_size, self.config)

    def training_rows(self, rows: list[dict[str, Any]], ctx: RolloutContext, encode: Encoder) -> list[dict[str, Any]]:
        """The prompts to train on, chosen once before training."""
        return self.batches.training_rows(self, rows, ctx, encode)

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        """The group filter first (its dropped groups never reach the advantages), then the batch builder."""
        if self.config.group_filter == "none" and self.config.truncated_wrong_margin is None:
            return self.batches.prepare(self, rollout, ctx)
        rollout, metrics = self.filter_groups(rollout)
        if not rollout.rows:
            return TrainBatch(rollout.traj, rollout.rewards.float(), metrics=metrics)
        batch = self.batches.prepare(self, rollout, ctx)
        batch.metrics.update(metrics)
        return batch

    def filter_groups(self, rollout: Rollout) -> tuple[Rollout, dict[str, float]]:
        """The rollout without the groups the filter drops; answers cut off within
        ``truncated_wrong_margin`` tokens of the end count as wrong first (correct False,
        reward at most 0), so for the filter and the advantages alike."""
        cut = truncated(rollout.traj.answer_mask.sum(1), rollout.traj.gen_length, self.config.truncated_wrong_margin)
        correct = rollout.correct.bool() & ~cut
        rewards = torch.where(cut, rollout.rewards.clamp(max=0.0), rollout.rewards)
        keep = self.group_filter(correct, rollout.group_size, self.config)
        rows = keep.repeat_interleave(rollout.group_size).nonzero().flatten().cpu()
        kept = replace(
            rollout, traj=rollout.traj.select(rows), rows=[rollout.rows[i] for i in rows.tolist()],
            rewards=rewards[rows], correct=correct[rows],
        )
        return kept, {"groups_dropped": float((~keep).sum()), "truncated_wrong": float(cut.sum())}

    def loss_mask(self, batch: TrainBatch, scores: Scores) -> torch.Tensor:
        return self.mask(batch, scores, self.config)

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy terms, then the KL: inside token-level terms, else as its own mean after aggregation."""
        mask = self.loss_mask(batch, scores)
        x = LossInputs(batch.traj, batch.advantages, scores, old, mask, self.config)
        terms = self.policy(x)
        beta, anchor = self.config.beta, self.kl_anchor(scores, old, ref)
        with_kl = anchor is not None
        if self.level == "token":
            kl = self.kl(scores.logprobs, anchor.logprobs) if with_kl else torch.zeros_like(terms.values)
            outer, inner = self.token_weight(batch, scores, mask, self.config)
            per_token = inner * terms.values + beta * kl
            loss = self.aggregate(per_token if outer is None else outer * per_token, x)
            return loss, {
                "kl": float(masked_mean(kl.detach(), mask)),
                "clip_fraction": float(masked_mean(terms.clipped.float(), mask)),
                "entropy": float(masked_mean(scores.entropy, mask)),
            }
        loss = self.aggregate(terms.values, x)
        metrics = {"entropy": float(masked_mean(scores.entropy, mask)), **terms.metrics}
        if terms.clipped is not None:
            metrics["clip_fraction"] = float(terms.clipped.float().mean())
        if with_kl:
            if self.kl_level == "sequence":
                kl = self.kl(terms.sequence, self.sequence_value(anchor)) / batch.traj.gen_length
                penalty = kl.mean()
            else:
                kl = self.kl(scores.logprobs, anchor.logprobs)
                penalty = masked_mean(kl, mask)
            loss = loss + beta * penalty
            metrics["kl"] = float(penalty.detach())
        return loss, metrics

    def kl_anchor(self, scores: Scores, old: Scores | None, ref: Scores | None) -> Scores | None:
        """What the KL penalises θ against: the reference, or θ_old (TraceRL) with ``kl_target: old``,
        where a missing θ_old is θ itself, detached (the first optimizer step: the KL and its gradient are 0)."""
        if self._kl_against("old"):
            return old if old is not None else replace(scores, logprobs=scores.logprobs.detach())
        return ref if self._kl_against("reference") else None


def build_objective(config: Any, **kwargs: Any) -> Objective:
    """The objective a recipe's algorithm section describes."""
    return Objective(config, **kwargs)
