"""JustGRPO's parts: an answer's left-to-right replay cut into chunk items.

Scoring a block-1 rollout replays one canvas per position, ``L`` forwards per answer; as
one item that is an ``L``-canvas batch with its graph (far too much memory at ``L = 256``
on an 8B model). The ``chunks`` builder makes each run of ``replay_chunk`` commit steps of
an answer its own item, and the ``trajectory_chunk`` estimator replays only that run, so
micro-batching and accumulation bound the memory and the chunks' sum is the answer's
exact log-likelihood. Its other parts are generic (``valid_answers``, ``clip``, ``group``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.rl.batches import BATCHES, Batches
from unmask.rl.estimators import Key, Scores, TrajectoryEstimator
from unmask.rl.likelihoods import ESTIMATORS
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch
from unmask.rollouts.trajectory import Trajectory


class ChunkReplayEstimator(TrajectoryEstimator):
    """Exact replay of the tokens committed in chunk ``key[i]`` (steps ``[c·k, (c+1)·k)``) of row ``i``."""

    varies_per_iteration = False

    def __init__(self, process: DiffusionProcess, temperature: float = 1.0, chunk: int = 32) -> None:
        super().__init__(process, temperature)
        self.chunk = chunk

    def key_for(self, traj: Trajectory, seed: int) -> Key:
        raise TypeError("chunk replay keys are the items' chunks; the objective provides them")

    def passes_for(self, traj: Trajectory) -> int:
        return min(self.chunk, self.steps(traj))

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        chunk = torch.as_tensor(key, dtype=torch.long, device=traj.commit_step.device)
        outside = traj.commit_step // self.chunk != chunk[:, None]
        # tokens of other chunks look like hints to the replay: not scored, their steps not replayed
        return super().token_logprobs(model, replace(traj, commit_step=traj.commit_step.masked_fill(outside, -1)), key)


@ESTIMATORS.register("trajectory_chunk", record=True, keyed_by="chunk", needs=("replay_chunk",))
def _trajectory_chunk(config: Any, process: DiffusionProcess, temperature: float) -> ChunkReplayEstimator:
    return ChunkReplayEstimator(process, temperature=temperature or 1.0, chunk=config.replay_chunk)


class Chunks(Batches):
    """One item per (answer, chunk of ``replay_chunk`` commit steps); ``TrainBatch.steps`` holds the chunk."""

    item_key = "chunk"

    def prepare(self, objective: Objective, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        batch = super().prepare(objective, rollout, ctx)
        chunks = -(-TrajectoryEstimator.steps(rollout.traj) // objective.config.replay_chunk)
        rows = torch.arange(len(rollout.rows)).repeat_interleave(chunks)
        chunk = torch.arange(chunks).repeat(len(rollout.rows))
        return TrainBatch(rollout.traj.select(rows), batch.advantages[rows], chunk, batch.metrics)


BATCHES.register("chunks", needs=("replay_chunk",))(Chunks())
