"""The learning-rate schedules a recipe can name, warmup_stable_decay with its own arguments."""

from __future__ import annotations

import pytest
import torch

from unmask.errors import RecipeError, UserError
from unmask.recipe import OptimConfig
from unmask.rl.policy import build_optimizer


def _rates(optim: OptimConfig, total: int, warmup: int) -> list[float]:
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), optim, total, warmup)
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_stable_decay_holds_the_peak_then_decays_linearly_to_zero() -> None:
    optim = OptimConfig(learning_rate=1.0, lr_scheduler_type="warmup_stable_decay",
                        lr_scheduler_kwargs={"num_decay_steps": 4, "decay_type": "linear"})
    rates = _rates(optim, total=10, warmup=2)
    assert rates == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_warmup_stable_decay_without_its_decay_length_is_refused() -> None:
    with pytest.raises((RecipeError, ValueError), match="num_decay_steps"):
        OptimConfig(lr_scheduler_type="warmup_stable_decay")


def test_an_argument_the_schedule_does_not_take_names_the_recipe_key() -> None:
    optim = OptimConfig(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_decay_steps": 3})
    with pytest.raises(UserError, match="optim.lr_scheduler_kwargs"):
        build_optimizer(torch.nn.Linear(2, 2), optim, 10, 0)
