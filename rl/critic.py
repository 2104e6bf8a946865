"""Where a learned critic plugs in: the ``Critic`` protocol the update engine calls. None ships yet.

TraceRL trains a value model beside the policy (an SDAR backbone with a zero-initialised
``Linear(hidden, 1)``, scored on the same replayed inputs) and trains the policy on
token-level advantages ``A_j = R − V_j`` (γ = λ = 1) instead of one advantage per answer.
The update engine (``rl/update.py``, ``micro_batch_loss``) asks a critic, on each
micro-batch pass and with the policy's own estimator key (so a replaying critic sees the
canvases the policy is scored on), for

- ``advantages``: ``[B, L]`` token advantages, which replace the batch's per-answer ones in
  the policy loss (token-level policy losses only: they broadcast advantages per token);
- ``loss``: its value loss, added to the policy loss, so the one backward pass of the
  micro-batch reaches the critic's parameters too.

A value model is a module of its own, with its own learning rate (TraceRL: 5e-6), so
stepping its parameters is the job of whoever builds it (a parameter group of the policy's
optimizer, or its own optimizer); docs/objectives.md says what is and is not wired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from unmask.rl.estimators import Key

if TYPE_CHECKING:
    from unmask.rl.objective import TrainBatch


class Critic(Protocol):
    """A value model the update engine calls per micro-batch pass (``rl/update.py``)."""

    def advantages(self, batch: TrainBatch, key: Key) -> torch.Tensor:
        """``[B, L]`` token advantages for the policy loss, without a graph (they are targets)."""
        ...

    def loss(self, batch: TrainBatch, key: Key) -> torch.Tensor:
        """The scalar value loss of the micro-batch, with a graph to the critic's parameters."""
        ...
