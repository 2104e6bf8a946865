"""The SDAR / TraDo TraceRL recipes: TraceRL's published settings, the real block size and prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_files import SDAR as SDAR_4B

from unmask.data.prompts import render_prompt
from unmask.models.loading import load_tokenizer
from unmask.models.sdar import SDAR
from unmask.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "sdar").glob("*_tracerl_*.yaml"))


def test_sdar_4b_8b_and_trado_on_math_and_gsm8k():
    names = {p.stem for p in RECIPES}
    assert {"math_tracerl_4b", "gsm8k_tracerl_4b", "math_tracerl_8b", "math_tracerl_trado4b"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_carries_tracerls_published_settings(path):
    recipe = load_recipe(path)
    r, a, o = recipe.rollout, recipe.algorithm, recipe.optim
    assert (recipe.model.family, recipe.model.device, recipe.lora.enabled) == ("sdar", "cuda", False)
    assert (a.name, a.epsilon, a.beta, a.num_iterations) == ("tracerl", 0.2, 0.01, 1)
    assert (r.num_generations, r.prompts_per_step, r.max_completion_length) == (16, 64, 2000)
    assert (r.block_length, r.steps // (r.max_completion_length // r.block_length)) == (4, 4)  # 4 steps a block
    assert (r.temperature, r.dynamic_threshold, r.cache) == (1.0, 0.9, "block")
    assert (o.learning_rate, o.max_steps, o.gradient_accumulation_steps, o.max_grad_norm) == (1e-6, 80, 32, 1.0)
    assert recipe.eval.block_length == r.block_length


def test_block_length_is_the_real_models_block_size(shared_models: Path):
    config = json.loads((shared_models / SDAR_4B / "config.json").read_text())
    assert {load_recipe(p).rollout.block_length for p in RECIPES} == {config["block_size"]}


def test_prompt_is_tracerls_rollout_prompt_in_the_real_template(shared_models: Path):
    """TraDo's rollouts feed ``<|im_start|>user\\n{q}\\nPlease reason ...<|im_end|>\\n<|im_start|>assistant\\n``."""
    tokenizer = load_tokenizer(shared_models / SDAR_4B, SDAR)
    model = SDAR.__new__(SDAR)
    model.tokenizer = tokenizer
    question = "What is 7 * 6?"
    text = SDAR.format_prompt(model, render_prompt("math", {"problem": question}, load_recipe(RECIPES[0]).data.prompt_template))
    expected = ("<|im_start|>user\n" + question + "\nPlease reason step by step, and put your final answer within "
                "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert text == expected


def test_an_unknown_family_is_one_line_naming_the_known_ones():
    from unmask.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown model family 'sdr'; use one of .*sdar"):
        load_recipe(RECIPES[0], ["model.family=sdr"])
