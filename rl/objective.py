"""The ``Objective`` contract and its registry: a new algorithm is one file in ``rl/``.

An objective turns a scored rollout into a ``TrainBatch`` (``prepare``: advantages,
which steps to train, extra samples) and a ``TrainBatch`` plus estimator scores into
a scalar loss (``loss``). It never sees how rollouts were produced or how the
trainer batches, accumulates and steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import torch

from unmask.rl.estimators import Estimator, Key, Scores
from unmask.rl.losses import KL_ESTIMATORS, clipped_surrogate, masked_mean
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


class Objective:
    """Base class; subclasses set ``name`` and implement ``build_estimator``/``prepare``/``loss``."""

    name: ClassVar[str] = ""
    #: KL estimator used when ``beta > 0``
    kl: ClassVar[str] = "k3"

    def __init__(self, config: Any, *, mask_token_id: int, temperature: float, gen_length: int) -> None:
        self.config = config
        self.gen_length = gen_length
        self.estimator = self.build_estimator(mask_token_id, temperature)

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0

    #: whether the loss has a θ/θ_old ratio; the trainer scores θ_old whenever one
    #: rollout batch feeds more than one optimizer step (θ_old = θ on the first)
    needs_old: ClassVar[bool] = True

    @property
    def record_steps(self) -> bool:
        """Whether rollouts must keep the per-step record (docs/sampling.md §7)."""
        return False

    def build_estimator(self, mask_token_id: int, temperature: float) -> Estimator:
        raise NotImplementedError

    def key(self, batch: TrainBatch, seed: int) -> Key:
        """The estimator key of one inner iteration for ``batch``."""
        return self.estimator.key_for(batch.traj, seed)

    def training_rows(self, rows: list[dict[str, Any]], ctx: RolloutContext, encode: Encoder) -> list[dict[str, Any]]:
        """The prompts to train on, chosen once before training (all of them unless an objective filters)."""
        return rows

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        raise NotImplementedError

    def loss(
        self, batch: TrainBatch, scores: Scores, old: Scores | None, ref: Scores | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # -- shared pieces -------------------------------------------------------
    def surrogate_terms(
        self, scores: Scores, old: Scores | None, ref: Scores | None, advantages: torch.Tensor,
        log_ratio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token ``(−clipped surrogate, KL, clipped mask)``; ``old=None`` means θ_old = θ."""
        old_lp = scores.logprobs.detach() if old is None else old.logprobs
        if log_ratio is None:
            log_ratio = scores.logprobs - old_lp
        gain, clipped = clipped_surrogate(
            log_ratio, advantages, self.config.epsilon, self.config.epsilon_high
        )
        kl = (
            KL_ESTIMATORS[self.kl](scores.logprobs, ref.logprobs)
            if ref is not None and self.config.beta > 0
            else torch.zeros_like(gain)
        )
        return -gain, kl, clipped

    @staticmethod
    def token_metrics(
        scores: Scores, kl: torch.Tensor, clipped: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, float]:
        return {
            "kl": float(masked_mean(kl.detach(), mask)),
            "clip_fraction": float(masked_mean(clipped.float(), mask)),
            "entropy": float(masked_mean(scores.entropy, mask)),
        }


OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an objective available under ``cls.name`` in recipes."""
    OBJECTIVES[cls.name] = cls
    return cls


def build_objective(config: Any, **kwargs: Any) -> Objective:
    """The objective named by ``config.name`` (an algorithm section of a recipe)."""
    from unmask.rl import bgpo, diffu_grpo, espo, igpo, mdpo, spg, wd1  # noqa: F401  (registration)

    if config.name not in OBJECTIVES:
        raise ValueError(f"unknown algorithm {config.name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[config.name](config, **kwargs)
