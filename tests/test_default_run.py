"""The default run's pieces: decoding grid, held-out hygiene, paired report, curve."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.assets import available
from unmask.data.countdown import TINY_TEMPLATE, problem_key
from unmask.errors import UserError
from unmask.models.fresh import BUILDABLE
from unmask.recipe import load_recipe
from unmask.report import compare, markdown_table, plot_curves
from unmask.run import SAMPLED, eval_rows, eval_settings, training_rows
from unmask.sft.config import is_sft_recipe, load_sft_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_tiny_recipes_validate_and_prompt_like_pretraining(path: Path) -> None:
    recipe = load_sft_recipe(path) if is_sft_recipe(path) else load_recipe(path)
    assert recipe.description
    if recipe.data.task != "countdown":
        pytest.skip(f"a {recipe.data.task} recipe: pretraining's prompt is Countdown's (tinycode: tests/test_code_tasks.py)")
    assert recipe.data.prompt_template == TINY_TEMPLATE
    tiny_models = {f"builtin:{name}" for name in available()} | {f"new:{family}" for family in BUILDABLE}
    assert recipe.model.name_or_path in tiny_models


def test_eval_grid_is_greedy_per_tokens_per_step_plus_the_rollout_sampler() -> None:
    recipe = load_recipe(RECIPES / "countdown_mdpo.yaml", ["rollout.remasking=rcr"])  # a sampler unlike greedy's
    grid = eval_settings(recipe)
    assert [(s.steps, s.temperature, s.remasking) for s in grid.values()] == [
        (16, 0.0, "low_confidence"),
        (8, 0.0, "low_confidence"),
        (recipe.rollout.steps, recipe.rollout.temperature, "rcr"),
    ]
    assert SAMPLED in grid
    bad = load_recipe(RECIPES / "countdown_mdpo.yaml", ["eval.steps_per_token=[3]"])
    with pytest.raises(UserError, match="3 tokens per step does not divide"):
        eval_settings(bad)
    plain = load_recipe(RECIPES / "countdown_mdpo.yaml", ["eval.cache=none"])
    assert {s.cache for s in eval_settings(plain).values()} == {"none"}
    dual = load_recipe(RECIPES / "countdown_mdpo.yaml", ["eval.cache=dual"])
    assert {s.cache for s in eval_settings(dual).values()} == {"dual"}


def test_rl_prompts_never_include_a_heldout_problem() -> None:
    recipe = load_recipe(RECIPES / "countdown_mdpo.yaml", ["eval.limit=300", "data.generator.size=2000"])
    heldout = eval_rows(recipe)
    assert len(heldout) == 300 and heldout[0]["prompt"].endswith("</answer> tags.")
    train = training_rows(recipe, heldout)
    assert 0 < len(train) < 2000
    assert not {problem_key(r) for r in heldout} & {problem_key(r) for r in train}


def test_paired_comparison_reports_interval_of_the_difference() -> None:
    before = [0.0] * 80 + [1.0] * 20
    after = [0.0] * 60 + [1.0] * 40  # 20 problems flipped to correct, none lost
    row = compare("accuracy", before, after)
    assert row.before == pytest.approx(0.2) and row.after == pytest.approx(0.4)
    assert row.ci.diff == pytest.approx(0.2) and 0.1 < row.ci.low < 0.2 < row.ci.high
    assert row.improved
    assert not compare("accuracy", after, after).improved
    table = markdown_table([row], {"train": 12.0})
    assert "| accuracy (%) | 20.0 | 40.0 | 20.0 [" in table and "train 12 s" in table


def test_curve_is_written_as_png(tmp_path: Path) -> None:
    path = plot_curves([(1, 0.1), (2, 0.3)], {"greedy": [(0, 0.2), (2, 0.3)]}, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resumed_run_keeps_its_metrics_history(tmp_path) -> None:
    from unmask.run import METRICS_FILE, log_metrics, start_metrics_log

    log_metrics(tmp_path, {"step": 1})
    start_metrics_log(tmp_path, resuming=True)
    assert (tmp_path / METRICS_FILE).read_text().count("\n") == 1
    start_metrics_log(tmp_path, resuming=False)
    assert not (tmp_path / METRICS_FILE).exists()
