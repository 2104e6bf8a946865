"""TraceRL's replay for block-diffusion families: step ``k`` of every block scored in one pass.

A block model decodes block by block, each in a few steps. The likelihood of the
sampler's own choices is the product over steps of the probability of the tokens
committed at that step, given the canvas the step saw: the clean earlier blocks
and the current block's earlier commits. The two-stream input ``[x_t ; x_0]``
gives every noisy block exactly that context (clean earlier blocks, its own noisy
copy), so one forward replays the ``k``-th step of *every* block at once: a row
costs as many passes as its largest number of distinct steps in a block, not its
total step count (docs/diffusion.md).

Each block's ``k``-th step is rebuilt from ``Trajectory.canvas`` (exact under
re-masking and hints). The blocks are the rollout's own (the process's global grid
on compact positions), so the replayed contexts are the sampled ones; TraceRL's
released trainer aligns blocks to the prompt's end while its rollouts use the
global grid, which differs whenever the prompt length is not a block multiple.
"""

from __future__ import annotations

import torch
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.kernels.ops import token_logprobs
from unmask.rl.estimators import Estimator, Key, Scores
from unmask.rollouts.trajectory import Trajectory


def step_ranks(commit_step: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: rank of each token's commit step among the distinct commit steps of its block.

    0 = the block's first decoding step that committed anything. Hints (step −1)
    rank after every real step, so they never shift the others.
    """
    last = int(commit_step.max()) + 2
    value = torch.where(commit_step >= 0, commit_step, torch.full_like(commit_step, last - 1))
    order_key = blocks * (last + 1) + value
    sorted_key, order = order_key.sort(1)
    new_value = torch.ones_like(sorted_key, dtype=torch.bool)
    new_value[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    sorted_blocks = blocks.gather(1, order)
    block_start = torch.ones_like(new_value)
    block_start[:, 1:] = sorted_blocks[:, 1:] != sorted_blocks[:, :-1]
    count = new_value.long().cumsum(1)
    at_start = torch.where(block_start, count, torch.zeros_like(count)).cummax(1).values
    return torch.empty_like(commit_step).scatter_(1, order, count - at_start)


def _passes(ranks: torch.Tensor, scored: torch.Tensor) -> int:
    """Two-stream passes a replay needs: the largest step rank of a scored token, plus one."""
    return int(ranks[scored].max()) + 1 if scored.any() else 0


class BlockReplayEstimator(Estimator):
    """Exact per-step replay of a block-diffusion rollout, one two-stream pass per step rank.

    ``token_logprobs`` returns, for every token the policy committed, its log-prob
    on the canvas of its commit step (temperature ``temperature``, the noise token
    excluded as the sampler excludes it); hint positions are not scored. Needs a
    trajectory sampled with ``record=True`` and a two-stream (block-causal) process.
    """

    varies_per_iteration = False

    def __init__(self, process: DiffusionProcess, temperature: float = 1.0) -> None:
        if not process.two_stream:
            raise UserError(
                f"block replay (TraceRL) scores block-diffusion rollouts through the two-stream input; the "
                f"{process.name} process ({process.attention} attention) has none: use the 'trajectory' estimator"
            )
        super().__init__(process, temperature)

    def blocks(self, traj: Trajectory) -> torch.Tensor:
        """``[B, L]`` decoding round (block) of each answer position, as the sampler had them."""
        prompt_mask = traj.attention_mask[:, : traj.prompt_length].bool()
        return self.process.answer_blocks(prompt_mask, traj.gen_length, int(traj.settings["block_length"]))

    def passes_for(self, traj: Trajectory) -> int:
        return _passes(step_ranks(traj.commit_step, self.blocks(traj)), traj.commit_step >= 0)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        if traj.step_masked is None or traj.step_pred is None:
            raise ValueError("block replay needs trajectories sampled with record=True")
        blocks = self.blocks(traj)
        scored = traj.commit_step >= 0
        ranks = step_ranks(traj.commit_step, blocks)
        logprobs = torch.zeros(traj.answer_ids.shape, dtype=torch.float32, device=traj.tokens.device)
        entropy = torch.zeros_like(logprobs)
        for rank in range(_passes(ranks, scored)):
            targets = scored & (ranks == rank)
            rows = targets.any(1).nonzero().squeeze(1)
            noisy = self._replayed_canvas(traj, blocks, targets)[rows]
            at = torch.arange(traj.prompt_length, traj.tokens.shape[1], device=noisy.device)
            logits = self.process.scoring_logits(
                model, noisy, traj.tokens[rows], traj.attention_mask[rows], traj.prompt_length, logits_at=at
            )
            logits = self.process.forbid_noise(logits)
            lp, ent = token_logprobs(logits, traj.answer_ids[rows], self.temperature)
            chosen = targets[rows]
            logprobs[rows] = torch.where(chosen, lp, logprobs[rows])
            entropy[rows] = torch.where(chosen, ent.detach(), entropy[rows])
        return Scores(logprobs, entropy, scored, torch.ones_like(logprobs))

    def _replayed_canvas(self, traj: Trajectory, blocks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[B, P + L]``: each block as it was before the step that committed its ``targets``.

        Blocks without a target this round keep their final tokens (no query reads them).
        """
        step = torch.where(targets, traj.commit_step, torch.full_like(traj.commit_step, -1))
        block_step = torch.full((traj.batch_size, int(blocks.max()) + 1), -1, dtype=torch.long, device=step.device)
        block_step = block_step.scatter_reduce(1, blocks, step, reduce="amax").gather(1, blocks)
        canvas = traj.tokens.clone()
        plen = traj.prompt_length
        for t in block_step.unique().tolist():
            if t >= 0:
                at = block_step == t
                canvas[:, plen:] = torch.where(at, traj.canvas(t, self.process)[:, plen:], canvas[:, plen:])
        return canvas
