"""Recipes: every shipped one validates; bad ones fail with one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.cli import main, recipes_dir
from unmask.errors import RecipeError
from unmask.recipe import Recipe, load_recipe, save_recipe
from unmask.sft.config import SFTRecipe, is_sft_recipe, load_sft_recipe

SHIPPED = sorted(p for p in recipes_dir().rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_shipped_recipe_validates(path: Path) -> None:
    sft = is_sft_recipe(path)
    recipe = load_sft_recipe(path) if sft else load_recipe(path)
    assert isinstance(recipe, SFTRecipe if sft else Recipe)
    assert recipe.description, "every shipped recipe says what it is for"


def test_there_are_shipped_recipes() -> None:
    assert any(p.parent.name == "tiny" for p in SHIPPED)


BAD_RECIPES = {
    "unknown_key": ("rollout:\n  stepz: 4\n", "unknown key 'rollout.stepz'; did you mean 'steps'?"),
    "unknown_section": ("modle:\n  dtype: float32\n", "did you mean 'model'?"),
    "wrong_type": ("rollout:\n  steps: many\n", "rollout.steps"),
    "negative_length": ("rollout:\n  max_completion_length: -8\n", "rollout.max_completion_length"),
    "not_divisible": (
        "rollout:\n  max_completion_length: 30\n  block_length: 8\n",
        "rollout.max_completion_length (30) must be a positive multiple of rollout.block_length (8)",
    ),
    "yaml_syntax": ("rollout: [steps: 4\n", "YAML syntax error"),
    "empty_file": ("", "the recipe is empty"),
    "bad_choice": ("rollout:\n  remasking: sideways\n", "rollout.remasking"),
    "unknown_algorithm": ("algorithm:\n  name: ppo\n", "unknown algorithm 'ppo'"),
    "algorithm_key": ("algorithm:\n  name: mdpo\n  sample_train_step: 4\n", "did you mean 'sample_train_steps'?"),
    "probability_range": ("lora:\n  dropout: 1.5\n", "lora.dropout"),
    "not_a_mapping": ("- a\n- b\n", "must be a mapping"),
}


@pytest.mark.parametrize("name", sorted(BAD_RECIPES))
def test_bad_recipe_one_line_error(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BAD_RECIPES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message

    code = main(["train", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_missing_file_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  steps: -1\n")
    with pytest.raises(RecipeError):
        main(["--debug", "train", str(path)])


def test_overrides_apply_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("rollout:\n  steps: 8\n")
    recipe = load_recipe(path, ["rollout.steps=4", "optim.learning_rate=3e-6", "algorithm.name=wd1"])
    assert recipe.rollout.steps == 4
    assert recipe.optim.learning_rate == pytest.approx(3e-6)
    assert recipe.algorithm.name == "wd1"
    with pytest.raises(RecipeError, match=r"rollout\.steps"):
        load_recipe(path, ["rollout.steps=-2"])
    with pytest.raises(RecipeError, match="did you mean 'temperature'"):
        load_recipe(path, ["rollout.temprature=0.5"])
    with pytest.raises(RecipeError, match="expected key.path=value"):
        load_recipe(path, ["rollout.steps"])


def test_scale_rewards_accepts_trl_bool() -> None:
    recipe = Recipe.model_validate({"algorithm": {"name": "diffu_grpo", "scale_rewards": True}})
    assert recipe.algorithm.scale_rewards == "group"


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(SHIPPED[0], ["seed=7"])
    saved = save_recipe(recipe, tmp_path / "run")
    assert load_recipe(saved) == recipe


def test_recipes_command_lists_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "tiny/countdown_mdpo" in out and "MDPO" in out
