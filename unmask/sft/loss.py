"""Masked-diffusion SFT losses: t sampling, corruption, weighting, normalisation (docs/sft.md).

A row is a left-padded prompt followed by an answer window of ``L`` positions (the
answer, its end-of-turn token, then EOS fill). One ratio ``t = ε + (1 − ε)·U`` is
drawn per row, answer positions are corrupted with probability ``t`` and the loss
scores the corrupted positions only; the prompt is never corrupted nor scored.

Weighting: ``elbo`` (1/t, which makes the loss an upper bound of the answer's
negative log-likelihood), ``cart`` (a masked position weighted by its clean
neighbours, geometric in the distance; no 1/t) or ``none``.

Normalisation, always over the whole optimizer step (all micro-batches and
processes), so the accumulation layout cannot change the gradient:
``token`` divides the weighted sum by the supervised positions of the step,
``sequence`` divides each row by its own supervised length and averages the rows,
``batch`` divides the per-row sums by the number of rows.

The random draws come from a ``RowRandom``: one generator per row, seeded from the
row's position in the data stream (so left padding, micro-batching, the process
count and resume leave them unchanged). What a corrupted row looks like and
how the model reads it is a ``Corruption``: by default the family's own diffusion
process (``ProcessCorruption``), so a block-diffusion family trains on its
two-stream input without a change here. A process whose published loss is not a
masked CE brings its whole objective instead (an ``OwnLoss``): uniform noise
(DiffusionGemma) trains with ``unmask.sft.uniform_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.diffusion.uniform import UniformNoise
from unmask.models.base import DiffusionLM

Weighting = Literal["elbo", "cart", "none"]
Normalization = Literal["token", "sequence", "batch"]


@dataclass
class SFTBatch:
    """Rows of prompt + answer window as tensors (the prompt left-padded, as the sampler sees it)."""

    prompt_ids: torch.Tensor  # [B, P] long
    prompt_mask: torch.Tensor  # [B, P] bool, False on left padding
    answer_ids: torch.Tensor  # [B, L] long: answer, end-of-turn, EOS fill
    supervised: torch.Tensor  # [B, L] bool: corruptible and scored
    #: [B, L] bool, False past a row's own window (``eos_fill: max_length``); None = every column
    answer_attention: torch.Tensor | None = None
    #: one noise seed per row (its data-stream position); None for batch-level randomness
    seeds: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.answer_ids.shape[0]

    def to(self, device: torch.device | str) -> SFTBatch:
        att = None if self.answer_attention is None else self.answer_attention.to(device)
        return SFTBatch(self.prompt_ids.to(device), self.prompt_mask.to(device), self.answer_ids.to(device),
                        self.supervised.to(device), att, self.seeds)

    @property
    def window_attention(self) -> torch.Tensor:
        return torch.ones_like(self.supervised) if self.answer_attention is None else self.answer_attention


class RowRandom:
    """Uniform draws ``[B, *shape]``, each row's from its own generator."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def keyed(cls, seeds: Sequence[int]) -> RowRandom:
        """A generator per row: a row's draws depend on its seed only, never on its batch."""
        return cls([torch.Generator().manual_seed(int(s)) for s in seeds])

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(*shape, generator=g) for g in self.generators])


def sample_t(rand: RowRandom, epsilon: float) -> torch.Tensor:
    """``[B, 1]`` ratios ``ε + (1 − ε)·U``: never 0, so the 1/t weight stays finite."""
    return epsilon + (1 - epsilon) * rand.uniform(1)


class Corruption(Protocol):
    """A family's forward process for training: which positions are noised, and the model's view of them."""

    def corrupt(self, batch: SFTBatch, t: torch.Tensor, rand: RowRandom) -> torch.Tensor:
        """``[B, L]`` bool: the answer positions noised at ratios ``t`` ``[B, 1]`` (a subset of ``supervised``)."""
        ...

    def answer_logits(self, model: nn.Module, batch: SFTBatch, noised: torch.Tensor) -> torch.Tensor:
        """``[B, L, V]`` position-aligned logits of the answer window given the noised row."""
        ...


@dataclass(frozen=True)
class ProcessCorruption:
    """A family's diffusion process (``DiffusionLM.process``) as the training corruption.

    Each supervised answer position is noised independently with probability ``t``;
    the process writes the noise and runs the training forward: the noisy canvas
    alone (LLaDA, Dream, tiny), or ``[x_t ; x_0]`` under the two-stream block mask
    (SDAR), where each noisy block is scored against clean earlier blocks. The LM
    head runs only at the answer columns (a long prompt's vocabulary-sized logits are
    never built).
    """

    process: DiffusionProcess

    def corrupt(self, batch: SFTBatch, t: torch.Tensor, rand: RowRandom) -> torch.Tensor:
        draws = rand.uniform(batch.answer_ids.shape[1]).to(t.device)
        return (draws < t) & batch.supervised

    def answer_logits(self, model: nn.Module, batch: SFTBatch, noised: torch.Tensor) -> torch.Tensor:
        plen, length = batch.prompt_ids.shape[1], batch.answer_ids.shape[1]
        noisy = torch.cat([batch.prompt_ids, self.process.corrupt(batch.answer_ids, noised)], dim=1)
        clean = torch.cat([batch.prompt_ids, batch.answer_ids], dim=1)
        attention = torch.cat([batch.prompt_mask, batch.window_attention], dim=1)
        columns = torch.arange(plen, plen + length, device=noisy.device)
        return self.process.scoring_logits(model, noisy, clean, attention, plen, logits_at=columns)


def family_corruption(model: DiffusionLM) -> Corruption | OwnLoss:
    """The SFT loss of ``model``'s own diffusion process: the masked CE of its corruption, or the
    process's own objective (uniform noise: flat CE plus the encoder's next-token CE)."""
    if isinstance(model.process, UniformNoise):
        from unmask.sft.uniform_loss import UniformCanvasLoss

        return UniformCanvasLoss()
    return ProcessCorruption(model.process)


@dataclass(frozen=True)
class LossSettings:
    """The ``sft:`` loss fields (docs/sft.md lists them and their per-family defaults)."""

    weighting: Weighting = "elbo"
    normalization: Normalization = "sequence"
    epsilon: float = 1e-3
    #: CART's geometric parameter p
    geo_p: float = 0.3


def cart_weights(batch: SFTBatch, noised: torch.Tensor, p: float) -> torch.Tensor:
    """``[B, L]`` CART weights: ``½ Σ_{j clean, j≠i} p(1−p)^{max(|i−j|−1, 0)}`` at noised ``i``, else 0.

    Clean positions are the real prompt tokens and the un-noised window columns;
    left padding is not a position, so distances (and the weights) ignore it.
    """
    clean = torch.cat([batch.prompt_mask, batch.window_attention & ~noised], dim=1).to(torch.float64)
    real = torch.cat([batch.prompt_mask, batch.window_attention], dim=1).long()
    position = real.cumsum(1)  # real-token index (left pads share index 0 and are never clean)
    plen = batch.prompt_ids.shape[1]
    distance = (position[:, plen:, None] - position[:, None, :]).abs()
    kernel = p * (1 - p) ** (distance - 1).clamp(min=0).to(torch.float64)
    weights = 0.5 * (kernel * clean[:, None, :]).sum(-1)
    return (weights * noised).to(torch.float32)


def denominator(batch: SFTBatch, normalization: Normalization) -> float:
    """This batch's share of the step denominator (a function of the data only, known before any forward)."""
    if normalization == "token":
        return float(batch.supervised.sum())
    return float(len(batch))


@dataclass
class LossTerms:
    """The step loss is ``numerator / Σ denominator``; the sums are for metrics (the 1/t value is
    comparable across weightings and families)."""

    numerator: torch.Tensor
    #: Σ CE/t over the noised positions
    elbo_sum: float
    #: Σ CE over the noised positions, unweighted
    ce_sum: float
    noised: int


@runtime_checkable
class OwnLoss(Protocol):
    """A process's whole SFT objective, when it is not the masked CE of a ``Corruption``."""

    def terms(
        self, model: nn.Module, batch: SFTBatch, rand: RowRandom, settings: LossSettings, t: torch.Tensor | None
    ) -> LossTerms:
        """Draw ``t`` (unless given, ``[B, 1]``) and the noise, run the model, return the step's terms."""
        ...


def row_sums(per_position: torch.Tensor, batch: SFTBatch, normalization: Normalization) -> torch.Tensor:
    """Sum ``[B, L]`` per-position losses over the batch; ``sequence`` first divides each row by its supervised length."""
    rows = per_position.sum(1)
    if normalization == "sequence":
        rows = rows / batch.supervised.sum(1).clamp(min=1)
    return rows.sum()


def loss_terms(
    model: nn.Module,
    batch: SFTBatch,
    rand: RowRandom,
    settings: LossSettings,
    corruption: Corruption | OwnLoss,
    t: torch.Tensor | None = None,
) -> LossTerms:
    """Draw ``t`` (unless given, ``[B, 1]``) and the noise, run the model, weight and sum the masked CE
    (or the ``OwnLoss``'s objective)."""
    if isinstance(corruption, OwnLoss):
        return corruption.terms(model, batch, rand, settings, t)
    if t is None:
        t = sample_t(rand, settings.epsilon)
    t = t.to(batch.answer_ids.device)
    noised = corruption.corrupt(batch, t, rand)
    logits = corruption.answer_logits(model, batch, noised)
    n, length = batch.answer_ids.shape
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.answer_ids.reshape(-1), reduction="none")
    scored = ce.view(n, length) * noised
    elbo = scored / t
    if settings.weighting == "elbo":
        weighted = elbo
    elif settings.weighting == "cart":
        weighted = scored * cart_weights(batch, noised, settings.geo_p)
    else:
        weighted = scored
    total = row_sums(weighted, batch, settings.normalization)
    return LossTerms(total, float(elbo.detach().sum()), float(scored.detach().sum()), int(noised.sum()))


def sft_loss(
    model: nn.Module, batch: SFTBatch, rand: RowRandom, settings: LossSettings, corruption: Corruption | OwnLoss
) -> torch.Tensor:
    """The loss of one batch standing alone (numerator over its own denominator)."""
    terms = loss_terms(model, batch, rand, settings, corruption)
    return terms.numerator / denominator(batch, settings.normalization)
