"""Per-step recording of a rollout (docs/sampling.md §7), kept compact and moved to the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StepRecorder:
    """Collects ``x_t``'s mask, predictions, confidences and log-probs of every step.

    Disabled recorders accept and drop everything, so the sampling loop has one path.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._steps: dict[str, list[torch.Tensor]] = {
            "step_masked": [], "step_pred": [], "step_confidence": [], "step_logprob": [], "step_cached": []
        }

    def add(
        self, masked: torch.Tensor, pred: torch.Tensor, confidence: torch.Tensor, logprob: torch.Tensor, cached: torch.Tensor
    ) -> None:
        """One step: ``masked`` is the answer mask of ``x_t`` (before the step), all ``[B, L]``.

        ``cached`` ``[B]``: the row's forward attended to cached keys/values.
        """
        if not self.enabled:
            return
        self._steps["step_masked"].append(masked.clone())
        self._steps["step_pred"].append(pred.clone())
        self._steps["step_confidence"].append(confidence.half())
        self._steps["step_logprob"].append(logprob.float())
        self._steps["step_cached"].append(cached.clone())

    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The stacked ``[T, B, L]`` tensors on the CPU (``None`` each when disabled)."""
        return {
            name: torch.stack(values).cpu() if self.enabled and values else None
            for name, values in self._steps.items()
        }


def answer_mask(answer: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """``[B, L]`` bool: positions up to and including the first EOS (all if none)."""
    is_eos = torch.isin(answer, torch.tensor(list(eos_token_ids), device=answer.device))
    return (is_eos.long().cumsum(1) - is_eos.long()) == 0
