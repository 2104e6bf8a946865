"""The GPU recipes (recipes/llada, recipes/dream) validate and carry the papers' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.recipe import load_recipe
from unmask.rl.objective import build_objective
from unmask.sft.config import is_sft_recipe

ROOT = Path(__file__).resolve().parents[1] / "recipes"
GPU_RECIPES = sorted(p for p in [*ROOT.glob("llada/*.yaml"), *ROOT.glob("dream/*.yaml")] if not is_sft_recipe(p))


def test_every_family_and_algorithm_has_a_recipe():
    names = {(p.parent.name, p.stem) for p in GPU_RECIPES}
    assert {("llada", f"{task}_diffu_grpo") for task in ("gsm8k", "math", "countdown")} <= names
    assert {("llada", "math_mdpo"), ("llada", "math_igpo"), ("dream", "math_mdpo"), ("dream", "math_igpo")} <= names
    assert {("llada", f"{task}_{algo}") for task in TASKS for algo in ("spg", "espo", "bgpo")} <= names
    assert {("llada", "gsm8k_justgrpo"), ("llada", "math_justgrpo"), ("llada", "countdown_cj_grpo"),
            ("llada", "gsm8k_gdsd"), ("llada", "math_gdsd"), ("llada", "mbpp_coupled_grpo")} <= names


TASKS = ("gsm8k", "math", "countdown", "sudoku")


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gpu_recipe_is_valid_and_buildable(path):
    recipe = load_recipe(path)
    assert recipe.model.family == path.parent.name and recipe.model.device == "cuda"
    objective = build_objective(
        recipe.algorithm, process=AbsorbingMask(0), temperature=recipe.rollout.temperature,
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
    elif algo.name in ("spg", "espo", "bgpo"):
        assert_2026_settings(recipe, path.stem.split("_")[0])
    elif algo.name in ("justgrpo", "cj_grpo", "gdsd"):
        assert_2026b_settings(recipe, path.stem.split("_")[0])


def assert_2026b_settings(recipe, task: str) -> None:
    """The official settings of objectives-2026b.md (e) for JustGRPO and GDSD, and DARE's for CJ-GRPO."""
    algo, o, r = recipe.algorithm, recipe.optim, recipe.rollout
    assert recipe.data.task == task
    if algo.name == "justgrpo":
        assert not recipe.lora.enabled and recipe.seed == 1234
        assert (o.learning_rate, o.adam_beta2, o.weight_decay, o.max_grad_norm, o.max_steps) == (5e-6, 0.999, 0.0, 1.0, 125)
        assert (r.num_generations, r.prompts_per_step, r.max_completion_length, r.steps, r.block_length) == (16, 64, 256, 256, 1)
        assert (r.temperature, algo.num_iterations, algo.epsilon, algo.beta, algo.scale_rewards) == (1.0, 1, 0.2, 0.0, "group")
        assert (recipe.eval.block_length, recipe.eval.steps_per_token) == (32, [1])  # parallel evaluation
    elif algo.name == "cj_grpo":
        assert not recipe.lora.enabled and (o.learning_rate, o.weight_decay) == (5e-7, 0.01)
        assert (r.num_generations, r.prompts_per_step, r.max_completion_length, r.steps, r.temperature) == (8, 16, 256, 128, 0.6)
        assert (algo.epsilon, algo.dual_clip, algo.beta, algo.num_iterations) == (0.2, 3.0, 0.0, 1)
    else:
        assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (128, 64, 0.05)
        assert (o.learning_rate, o.adam_beta2, o.weight_decay, o.max_grad_norm) == (
            {"gsm8k": 3e-6, "math": 1e-5}[task], 0.99, 0.01, 0.2)
        assert (algo.epsilon, algo.psi, algo.mc_samples, algo.num_iterations) == (4e-4, 10.0, 2, 8)
        assert algo.beta == {"gsm8k": 1e-3, "math": 1e-4}[task]
        assert (r.num_generations, r.prompts_per_step) == (16, {"gsm8k": 20, "math": 16}[task])
        assert (r.max_completion_length, r.steps, r.block_length, r.temperature) == (256, 256, 32, 1.0)


def assert_2026_settings(recipe, task: str) -> None:
    """The official settings of objectives-2026.md (d) for SPG (mixture), ESPO and BGPO."""
    algo, o, r = recipe.algorithm, recipe.optim, recipe.rollout
    assert recipe.data.task == task and r.block_length == 32
    if algo.name == "spg":
        assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (128, 64, 0.05)
        assert (o.learning_rate, o.weight_decay, o.adam_beta2, o.max_grad_norm) == (3e-6, 0.1, 0.99, 0.2)
        assert (r.num_generations, r.prompts_per_step, r.max_completion_length, r.steps) == (6, 16, 256, 128)
        assert r.temperature == (0.3 if task == "sudoku" else 0.9)
        assert (algo.num_iterations, algo.mc_samples, algo.p_mask, algo.omega, algo.mask_block_length) == (4, 2, 0.15, 0.5, 32)
        assert algo.eubo_beta == {"gsm8k": 1.5, "math": 1.5, "countdown": 1.5, "sudoku": 1.0}[task]
        assert algo.scale_rewards == "none" and o.optimizer_steps_per_rollout == 1
        assert o.max_steps == {"gsm8k": 6000, "math": 4000, "countdown": 6000, "sudoku": 2500}[task]
    elif algo.name == "espo":
        assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (128, 64, 0.05)
        assert (o.learning_rate, o.weight_decay, o.adam_beta2, o.max_grad_norm) == (3e-6, 0.01, 0.99, 0.2)
        assert (algo.num_iterations, algo.mc_samples, algo.scale_rewards) == (8, 2, "none")
        assert algo.epsilon == (0.0 if task == "countdown" else 0.2)
        assert algo.beta == {"gsm8k": 1e-3, "math": 1e-3, "countdown": 3e-3, "sudoku": 1e-2}[task]
        assert r.num_generations == (16 if task == "math" else 6) and r.prompts_per_step == 16
        assert (r.max_completion_length, r.temperature) == (256, 1.0)
        assert r.steps == (256 if task in ("gsm8k", "math") else 128)
    else:
        assert not recipe.lora.enabled and recipe.ray.address is None  # full fine-tune, rolled out in-process
        assert (o.learning_rate, r.num_generations, r.prompts_per_step, o.optimizer_steps_per_rollout) == (5e-7, 8, 16, 1)
        assert (algo.num_iterations, algo.scale_rewards) == (1, "group")  # on-policy, std-scaled advantages
        assert algo.mc_samples == (32 if task == "sudoku" else 16)
        long = task in ("gsm8k", "math")
        assert (r.max_completion_length, r.steps) == ((512, 256) if long else (256, 128))
        assert o.max_steps == (400 if task == "sudoku" else 700)
