"""The prediction part of a denoising step: run the forward on the rows with work, sample, score.

The rows to run and the number of positions to predict are given as host integers
(the driver knows them from the round's plan or reads them once per step), so
selecting them is ``nonzero_static`` and scattering the results back is
``index_copy_``: neither waits for the device. The step forward gets the count too.
"""

from __future__ import annotations

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.kernels.ops import sample_step
from unmask.kernels.sampling import StepSample, greedy_probability
from unmask.rollouts.block_forward import BlockStepForward
from unmask.rollouts.cache import StepForward
from unmask.rollouts.confidence import ConfidenceFn
from unmask.rollouts.rules.base import Step


class Predictor:
    """Predictions, confidences and log-probs at a step's ``predict`` positions."""

    def __init__(self, forward: StepForward | BlockStepForward, process: DiffusionProcess, confidence: ConfidenceFn,
                 temperature: float, *, lean: bool) -> None:
        self.forward, self.process, self.confidence, self.temperature = forward, process, confidence, temperature
        #: greedy low-confidence without a record reads only the token and its probability
        self.lean = lean

    def __call__(self, index: int, answer: torch.Tensor, masked: torch.Tensor, scope: torch.Tensor,
                 predict: torch.Tensor, work: tuple[int, int], uniforms: torch.Tensor | None,
                 span: tuple[int, int]) -> tuple[Step, torch.Tensor]:
        """The step and ``[B]`` bool: the row's forward attended to cached keys/values.

        ``work`` is (rows with anything to predict, positions to predict, then the
        forward's ``read_ahead`` counts where the caller read them); ``uniforms``
        ``[2, B, L]`` (sampling, confidence) or ``None`` when the step reads no draws.
        """
        pred = answer.clone()
        conf = torch.full(answer.shape, float("-inf"), dtype=torch.float64, device=answer.device)
        logprob = torch.zeros_like(conf)
        active = predict.any(1)
        n_rows, n_pred, *ahead = work
        if n_pred:  # rows with nothing to predict leave the forward
            rows = torch.nonzero_static(active, size=n_rows).squeeze(1)
            at = torch.nonzero_static(predict.reshape(-1), size=n_pred).squeeze(1)  # row-major, as the forward returns them
            logits = self.process.forbid_noise_(self.forward(answer, rows, predict[rows], span, n_pred, *([ahead] if ahead else [])))  # committed noise would break the schedule
            draws = None if uniforms is None else uniforms.reshape(2, -1)[:, at]
            stats = self._lean(logits) if self.lean else sample_step(logits, self.temperature, uniforms=None if draws is None else draws[0])
            scores = self.confidence(stats, torch.ones_like(stats.confidence) if draws is None else draws[1])
            pred.view(-1).index_copy_(0, at, stats.token)
            conf.view(-1).index_copy_(0, at, scores.double())
            logprob.view(-1).index_copy_(0, at, stats.logprob.double())
        step = Step(index, answer, masked, scope, predict, pred, conf, logprob)
        return step, active & self.forward.cached

    def read_ahead(self, answer: torch.Tensor, predict: torch.Tensor, span: tuple[int, int]) -> torch.Tensor | None:
        """What the forward would read at this step (``StepForward.read_ahead``), for a caller reading anyway."""
        return self.forward.read_ahead(answer, predict, span)

    @staticmethod
    def _lean(logits: torch.Tensor) -> StepSample:
        """The greedy token and its probability only (the exact fast path; no log-prob, margin, entropy)."""
        token, confidence = greedy_probability(logits)
        unread = torch.zeros_like(confidence)
        return StepSample(token, confidence, unread, unread, unread)
