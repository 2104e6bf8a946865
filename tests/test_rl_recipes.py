"""The GPU recipes (recipes/llada, recipes/dream) validate and carry the papers' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.recipe import load_recipe
from unmask.rl.objective import build_objective

ROOT = Path(__file__).resolve().parents[1] / "recipes"
GPU_RECIPES = sorted([*ROOT.glob("llada/*.yaml"), *ROOT.glob("dream/*.yaml")])


def test_every_family_and_algorithm_has_a_recipe():
    names = {(p.parent.name, p.stem) for p in GPU_RECIPES}
    assert {("llada", f"{task}_diffu_grpo") for task in ("gsm8k", "math", "countdown")} <= names
    assert {("llada", "math_mdpo"), ("llada", "math_igpo"), ("dream", "math_mdpo"), ("dream", "math_igpo")} <= names


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gpu_recipe_is_valid_and_buildable(path):
    recipe = load_recipe(path)
    assert recipe.model.family == path.parent.name and recipe.model.device == "cuda"
    objective = build_objective(
        recipe.algorithm, mask_token_id=0, temperature=recipe.rollout.temperature,
        gen_length=recipe.rollout.max_completion_length,
    )
    assert objective.name == recipe.algorithm.name
    if recipe.ray.address is not None:  # the pool syncs LoRA tensors only
        assert recipe.lora.enabled
    algo = recipe.algorithm
    if algo.name == "diffu_grpo":  # d1
        assert (algo.epsilon, algo.beta, algo.num_iterations, algo.p_mask) == (0.5, 0.04, 12, 0.15)
        assert (recipe.lora.r, recipe.lora.alpha, recipe.optim.learning_rate) == (128, 64, 3e-6)
        assert (recipe.rollout.num_generations, recipe.rollout.max_completion_length) == (6, 256)
    elif algo.name == "mdpo":
        assert (algo.beta, recipe.optim.learning_rate, recipe.rollout.temperature) == (0.02, 7e-7, 0.4)
        assert recipe.rollout.remasking == "low_confidence" and not recipe.lora.enabled
        assert recipe.optim.optimizer_steps_per_rollout == 1  # the published trainer
        assert recipe.rollout.block_length == recipe.rollout.max_completion_length == 512
    elif algo.name == "igpo":
        assert (algo.beta, algo.replace_fraction, algo.entropy_clip_ratio) == (0.01, 0.5, 0.2)
        assert (algo.hint_ratio_min, algo.hint_ratio_max, algo.chunk_min, algo.chunk_max) == (0.2, 0.6, 5, 10)
        assert algo.reasoning_column != "answer"
