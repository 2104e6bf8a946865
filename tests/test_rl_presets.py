"""The eight objectives as presets of registered parts: bitwise the losses, gradients and advantages
the hand-written classes gave (``tests/objective_reference.py`` says how the reference was made)."""

from __future__ import annotations

import pytest
import torch
from objective_reference import CASES, PATH, advantages, case

REFERENCE = torch.load(PATH)


@pytest.mark.parametrize("name, config", CASES, ids=[name for name, _ in CASES])
@pytest.mark.parametrize("with_old", [True, False], ids=["old", "on_policy"])
def test_preset_loss_and_gradient_are_bitwise_the_old_objective(name, config, with_old):
    expected = REFERENCE[f"{name}/{'old' if with_old else 'on_policy'}"]
    got = case(name, config, with_old)
    assert torch.equal(got["loss"], expected["loss"]), (float(got["loss"]), float(expected["loss"]))
    assert torch.equal(got["grad"], expected["grad"])
    assert got["metrics"] == expected["metrics"]


@pytest.mark.parametrize("name, config", [(n, c) for n, c in CASES if f"{n}/advantages" in REFERENCE])
def test_preset_advantages_are_bitwise_the_old_objective(name, config):
    assert torch.equal(advantages(config), REFERENCE[f"{name}/advantages"])
