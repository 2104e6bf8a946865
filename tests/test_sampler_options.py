"""Speed-ups and SDAR's rule reachable from recipes and the command line, not only from Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_rl_mdpo import rollouts
from test_trainer import make_model

from unmask.errors import UserError
from unmask.evaluation.settings import EvalSettings, settings_grid
from unmask.recipe import RolloutConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("options", [{"early_exit": True}, {"dynamic_threshold": 0.5}, {"partial_head": False}])
def test_recipe_sampler_options_reach_the_sampler(options):
    settings = RolloutConfig(max_completion_length=8, steps=8, block_length=8, temperature=0.7, **options)
    traj = rollouts(settings, make_model()).generate(torch.randint(5, 40, (2, 4)), torch.ones(2, 4, dtype=torch.bool))
    for key, value in options.items():
        assert traj.settings[key] == value


def test_eval_early_exit_is_a_setting_of_its_own():
    (plain,), (early,) = settings_grid([8]), settings_grid([8], early_exit=True)
    assert early.early_exit and early.label == plain.label + "-early_exit"
    with pytest.raises(UserError, match="--early-exit"):
        EvalSettings(8, 8, 8, remasking="rcr", early_exit=True)


def test_sample_cli_takes_the_cache_and_refuses_block_for_a_full_attention_model():
    done = subprocess.run([sys.executable, "-m", "unmask.cli", "sample", "--cache", "block"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "block-diffusion family" in done.stderr
