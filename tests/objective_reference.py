"""Losses, gradients and advantages of the eight objectives on fixed seeded inputs: the preset reference.

``python tests/objective_reference.py`` was run once at commit a27528f, before the objectives
became presets of registered parts (issue 31), and wrote ``tests/objective_reference.pt``.
``tests/test_rl_presets.py`` recomputes every case with the presets and requires bitwise
equality. The inputs are hand-set ``Scores`` (seeded random tensors), not model outputs, so the
numbers depend only on the loss arithmetic, not on a CPU's matmul kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.recipe import (
    BGPOConfig,
    DiffuGRPOConfig,
    ESPOConfig,
    IGPOConfig,
    MDPOConfig,
    SPGConfig,
    WD1Config,
)
from unmask.rl.estimators import Scores
from unmask.rl.objective import Rollout, TrainBatch, build_objective
from unmask.rollouts.trajectory import Trajectory

PATH = Path(__file__).with_suffix(".pt")
ROWS, GROUP, PROMPT, LENGTH, STEPS = 6, 3, 3, 8, 4

#: (case name, config): every objective, and the options that change its loss arithmetic
CASES: list[tuple[str, Any]] = [
    ("diffu_grpo", DiffuGRPOConfig(beta=0.04, epsilon=0.5, epsilon_high=0.7)),
    ("diffu_grpo_nokl", DiffuGRPOConfig(beta=0.0, epsilon=0.2)),
    ("igpo", IGPOConfig(beta=0.01, entropy_clip_ratio=0.5)),
    ("igpo_gspo", IGPOConfig(beta=0.01, sequence_level_ratio=True)),
    ("wd1", WD1Config(beta=0.02, psi=2.0)),
    ("wd1_nokl", WD1Config()),
    ("mdpo", MDPOConfig(beta=0.02, epsilon=0.2)),
    ("mdpo_plain", MDPOConfig(beta=0.0, confidence_weight=False, elbo_weight=False)),
    ("spg", SPGConfig(omega=0.3)),
    ("espo", ESPOConfig(beta=0.01)),
    ("bgpo", BGPOConfig(mc_samples=2)),
    ("bgpo_normalized", BGPOConfig(mc_samples=2, length_normalized=True)),
]


def trajectory() -> Trajectory:
    """Six answers of eight tokens (EOS in rows 1, 3, 4), two hint tokens in row 2, a 4-step record."""
    gen = torch.Generator().manual_seed(11)
    answer = torch.ones(ROWS, LENGTH, dtype=torch.bool)
    answer[1, 5:] = answer[3, 2:] = answer[4, 7:] = False
    hint = torch.zeros(ROWS, LENGTH, dtype=torch.bool)
    hint[2, 1:3] = True
    return Trajectory(
        tokens=torch.randint(3, 20, (ROWS, PROMPT + LENGTH), generator=gen),
        attention_mask=torch.ones(ROWS, PROMPT + LENGTH, dtype=torch.bool), prompt_length=PROMPT,
        answer_mask=answer, commit_step=torch.randint(0, STEPS, (ROWS, LENGTH), generator=gen), hint_mask=hint,
        nfe=torch.full((ROWS,), STEPS), step_masked=torch.rand(STEPS, ROWS, LENGTH, generator=gen) < 0.6,
        step_pred=torch.randint(3, 20, (STEPS, ROWS, LENGTH), generator=gen),
        step_confidence=torch.rand(STEPS, ROWS, LENGTH, generator=gen).half(),
    )


def scores(seed: int, grad: bool = False) -> Scores:
    """Seeded per-token scores; ``grad`` makes the log-probs a leaf whose gradient the reference keeps."""
    gen = torch.Generator().manual_seed(seed)
    logprobs = -3 * torch.rand(ROWS, LENGTH, generator=gen)
    mask = torch.rand(ROWS, LENGTH, generator=gen) < 0.8
    return Scores(
        logprobs.requires_grad_(grad), torch.rand(ROWS, LENGTH, generator=gen) * 2, mask,
        0.5 + torch.rand(ROWS, LENGTH, generator=gen), upper=-3 * torch.rand(ROWS, LENGTH, generator=gen),
    )


def rollout() -> Rollout:
    gen = torch.Generator().manual_seed(5)
    rewards = torch.tensor([1.0, 0.1, 0.0, 2.0, 2.0, 0.5]) + 0.01 * torch.rand(ROWS, generator=gen)
    return Rollout(trajectory(), [{"prompt": "p"}] * ROWS, rewards, rewards >= 1.0, GROUP, seed=0)


def batch(name: str) -> TrainBatch:
    """The loss's batch: advantages of mixed sign (and a zero), MDPO's trained step per row."""
    advantages = torch.tensor([1.5, -0.5, 0.0, -2.0, 0.25, 0.75])
    steps = torch.tensor([0, 1, 3, 2, 1, 0]) if name.startswith("mdpo") else None
    return TrainBatch(trajectory(), advantages, steps)


def case(name: str, config: Any, with_old: bool) -> dict[str, Any]:
    """Loss, metrics and ``∂loss/∂logprobs`` of one case (θ_old scored, or ``None`` = θ_old is θ)."""
    objective = build_objective(config, process=AbsorbingMask(0), temperature=1.0, gen_length=LENGTH)
    new = scores(1, grad=True)
    old = scores(2) if with_old else None
    ref = scores(3)
    loss, metrics = objective.loss(batch(name), new, old, ref)
    loss.backward()
    return {"loss": loss.detach(), "grad": new.logprobs.grad, "metrics": metrics}


def advantages(config: Any) -> torch.Tensor:
    """``prepare``'s advantages for the objectives whose batch needs no sampler."""
    objective = build_objective(config, process=AbsorbingMask(0), temperature=1.0, gen_length=LENGTH)
    return objective.prepare(rollout(), None).advantages


def reference() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, config in CASES:
        for with_old in (True, False):
            out[f"{name}/{'old' if with_old else 'on_policy'}"] = case(name, config, with_old)
        if config.name in ("diffu_grpo", "wd1", "spg", "espo", "bgpo"):
            out[f"{name}/advantages"] = advantages(config)
    return out


if __name__ == "__main__":
    torch.save(reference(), sys.argv[1] if len(sys.argv) > 1 else PATH)
