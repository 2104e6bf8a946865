"""The sampler a family's diffusion process names: ``sample(model, prompt_ids, **generate_kwargs)``.

Absorbing-mask processes (one canvas or block-causal) decode through ``generate``; the
uniform-noise process (DiffusionGemma) through its renoise sampler. Both entries assemble
their process's parts and run them through the one driver loop (``rollouts.driver``); a new
process adds its entry here under its ``DiffusionProcess.sampler`` name. The trainer's rollouts,
the rollout pool and ``unmask eval`` call ``sample``, so none of them asks which family it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unmask.models.base import DiffusionLM
from unmask.rollouts.trajectory import Trajectory


def _masked() -> Callable[..., Trajectory]:
    from unmask.rollouts.generate import generate

    return generate


def _uniform() -> Callable[..., Trajectory]:
    from unmask.rollouts.uniform_rollout import generate_renoise

    return generate_renoise


#: ``DiffusionProcess.sampler`` → the sampler (imported on first use)
SAMPLERS: dict[str, Callable[[], Callable[..., Trajectory]]] = {"masked": _masked, "uniform": _uniform}


def sampler_for(model: DiffusionLM) -> Callable[..., Trajectory]:
    """``generate``'s signature, for the family of ``model`` (peft wrappers pass the attribute through)."""
    return SAMPLERS[model.process.sampler]()


def sample(model: DiffusionLM, prompt_ids: torch.Tensor, **kwargs: Any) -> Trajectory:
    """Sample ``prompt_ids`` with the sampler ``model``'s process names."""
    return sampler_for(model)(model, prompt_ids, **kwargs)
