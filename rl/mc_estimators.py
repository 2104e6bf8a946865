"""Multi-sample ELBO estimators of SPG and ESPO (objectives-2026.md, pieces 1 and 2).

Both score each answer ``m`` times under different masks. ``pool`` folds the
samples into one ``[B, L]`` ``Scores`` whose ``Σ_k weight_k · logprobs_k`` is exactly
the ``m``-sample average of the sequence ELBO, so objectives that only read the
sequence value (``sequence_elbo``) never see the samples. Masks come from the key
alone, drawn row by row in a fixed order: θ, θ_old and the reference that get the
same key (and the same micro-batch) see the same masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.rl.estimators import Estimator, Key, Scores, _answer_scores, _generator
from unmask.rollouts.trajectory import Trajectory


@dataclass
class Sample:
    """One masked forward of the batch: ``[B, L]`` scores and this sample's per-token weight."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    #: positions this sample scores
    scored: torch.Tensor
    #: weight of each scored token in the pooled estimate (already divided by the sample count)
    weight: torch.Tensor


def pool(samples: list[Sample], upper: torch.Tensor | None = None) -> Scores:
    """Per-token pooling: weight ``Σ_s w_s``, log-prob and entropy their ``w``-weighted means.

    ``weight_k · logprobs_k = Σ_s w_sk ℓ_sk``, so the sequence ELBO is unchanged
    and each sample's gradient keeps its own weight.
    """
    weights = [torch.where(s.scored, s.weight, 0.0) for s in samples]
    weight = torch.stack(weights).sum(0)
    scored = weight > 0
    safe = torch.where(scored, weight, 1.0)
    logprobs = sum(torch.where(s.scored, w * s.logprobs, 0.0) for s, w in zip(samples, weights, strict=True))
    entropy = sum(torch.where(s.scored, w * s.entropy, 0.0) for s, w in zip(samples, weights, strict=True))
    return Scores(logprobs / safe, entropy / safe, scored, weight, upper)


def eubo_tokens(logprobs: torch.Tensor, scored: torch.Tensor, ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """SPG's per-token upper-bound term ``(1/β) ln a_k``, ``a_k = (1/m) Σ_j 1[k ∈ S_j] p_jk^β / t̂_j``.

    ``logprobs``/``scored`` are ``[m, B, L]``, ``ratio`` (``t̂``) ``[m, B]``. Computed
    in log space (a ``p^β`` in float underflows and silently drops the token);
    0 where no sample scored the token.
    """
    terms = beta * logprobs - ratio.log()[..., None]
    terms = torch.where(scored, terms, float("-inf"))
    anywhere = scored.any(0)
    terms = torch.where(anywhere, terms, 0.0)  # keeps logsumexp finite where nothing was scored
    value = (torch.logsumexp(terms, 0) - math.log(logprobs.shape[0])) / beta
    return torch.where(anywhere, value, 0.0)


class BlockEstimator(Estimator):
    """SPG's block-wise masking: ``m`` samples per row, each cut at a random block of the answer.

    Sample ``j`` picks a completion block ``b_j``: later blocks are fully masked,
    ``k ~ U{1..n}`` of the block's ``n`` completion tokens are masked, the prompt and
    earlier blocks are noised at ``p_mask``, and everything after the first EOS is
    masked and never scored. Each scored token weighs ``1/(m t̂_j)``, ``t̂_j`` the
    fraction of the completion the sample scores. ``Scores.upper`` carries the EUBO term.
    """

    def __init__(
        self, process: DiffusionProcess, samples: int = 2, block_length: int = 32, p_mask: float = 0.15,
        beta: float = 1.5, temperature: float = 1.0,
    ) -> None:
        super().__init__(process, temperature)
        self.samples, self.block_length, self.p_mask, self.beta = samples, block_length, p_mask, beta
        self.passes = samples

    def draw(self, traj: Trajectory, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt drops ``[m, B, P]`` and masked answer positions ``[m, B, L]`` (on the CPU)."""
        gen = _generator(int(key))
        m, size = self.samples, self.block_length
        batch, length = traj.answer_ids.shape
        blocks = -(-length // size)
        completion = traj.answer_mask.sum(1).clamp(min=1).tolist()
        prompt_real = traj.attention_mask[:, : traj.prompt_length].bool().cpu()
        drop = torch.zeros(m, batch, traj.prompt_length, dtype=torch.bool)
        masked = torch.zeros(m, batch, length, dtype=torch.bool)
        for row, c in enumerate(completion):
            order = torch.cat([torch.randperm(blocks, generator=gen) for _ in range(-(-m // blocks))])
            for j, block in enumerate((order[:m] % -(-c // size)).tolist()):
                start = block * size
                n = min(size, c - start)
                chosen = torch.randperm(n, generator=gen)[: int(torch.randint(1, n + 1, (1,), generator=gen))]
                masked[j, row, start + chosen] = True
                masked[j, row, start + n :] = True  # later blocks and everything after the first EOS
                masked[j, row, :start] = torch.rand(start, generator=gen) < self.p_mask
                drop[j, row] = (torch.rand(traj.prompt_length, generator=gen) < self.p_mask) & prompt_real[row]
        return drop, masked

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        drop, masked = (x.to(traj.tokens.device) for x in self.draw(traj, key))
        scored = masked & traj.answer_mask
        completion = traj.answer_mask.sum(1).clamp(min=1)
        ratio = (scored.sum(2) / completion).clamp(min=1 / completion)  # t̂ ≥ 1/|C|, [m, B]
        lp, ent = zip(*(
            _answer_scores(
                model,
                torch.cat([self.process.corrupt(traj.prompt_ids, drop[j]),
                           self.process.corrupt(traj.answer_ids, masked[j])], 1),
                traj.attention_mask, traj.answer_ids, traj.prompt_length, self.temperature, self.process,
                clean=traj.tokens,
            )
            for j in range(self.samples)
        ), strict=True)  # fmt: skip
        weight = 1.0 / (self.samples * ratio)
        samples = [Sample(lp[j], ent[j], scored[j], weight[j][:, None]) for j in range(self.samples)]
        return pool(samples, eubo_tokens(torch.stack(lp), scored, ratio, self.beta))


class ExactCountEstimator(Estimator):
    """ESPO's coupled ELBO: exactly ``x`` of the ``L`` answer positions masked, then their complement.

    Per MC sample ``x_i`` is stratified over the rows of the micro-batch (so micro-batches
    must stay fixed across θ, θ_old and reference passes, as the trainer keeps them);
    pass 1 weighs ``(L+1)/x``, pass 2 ``(L+1)/(L−x)``, each halved and divided by ``m``.
    Every answer position counts, the EOS fill included; the prompt stays clean.
    """

    def __init__(self, process: DiffusionProcess, samples: int = 2, temperature: float = 1.0) -> None:
        super().__init__(process, temperature)
        self.samples = samples
        self.passes = 2 * samples

    def draw(self, traj: Trajectory, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked counts ``x`` ``[m, B]`` and pass-1 masks ``[m, B, L]`` (on the CPU)."""
        gen = _generator(int(key))
        batch, length = traj.answer_ids.shape
        counts, masks = [], []
        for _ in range(self.samples):
            start = torch.randint(0, length + 1, (1,), generator=gen).float()
            x = torch.round(start + torch.arange(batch) * (length + 1) / batch).long() % (length + 1)
            rank = torch.rand(batch, length, generator=gen).argsort(1).argsort(1)
            counts.append(x)
            masks.append(rank < x[:, None])
        return torch.stack(counts), torch.stack(masks)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        counts, masks = (x.to(traj.tokens.device) for x in self.draw(traj, key))
        length = traj.gen_length
        samples = []
        for x, mask in zip(counts, masks, strict=True):
            for chosen, size in ((mask, x), (~mask, length - x)):
                ids = torch.cat([traj.prompt_ids, self.process.corrupt(traj.answer_ids, chosen)], 1)
                lp, ent = _answer_scores(
                    model, ids, traj.attention_mask, traj.answer_ids, traj.prompt_length, self.temperature,
                    self.process, clean=traj.tokens,
                )
                weight = (length + 1) / (2 * self.samples * size.clamp(min=1).float())
                samples.append(Sample(lp, ent, chosen, weight[:, None]))
        return pool(samples)
