"""A recipe's weighted rewards on published generations: what its ``correct_threshold`` counts.

    python bench/recipe_rewards.py RECIPE.yaml... [--generations ../shared/data/real_generations]
        [--thresholds 1.75 2.0 2.01]

For each recipe, every generation of its task (d1's JSON files; MATH recipes read
MATH500) is scored by the recipe's rewards as a rollout would be: the text up to the
first end token, after the ``<reasoning>`` that d1's evaluation prompt ends with. It
prints the mean of each reward, the task grader's accuracy, and how often "total ≥
threshold" (what the trainer logs as accuracy, and what IGPO/MDPO act on) disagrees
with the grader's own verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unmask.evaluation.generations import read_d1
from unmask.recipe import load_recipe
from unmask.run import reward_runner

#: recipe task → file prefix of its development-set generations
FILES = {"gsm8k": "gsm8k", "math": "math500", "math500": "math500", "countdown": "countdown", "sudoku": "sudoku"}
END_MARKERS = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>")
PROMPT_TAIL = "<reasoning>"


def answer_text(generation: str) -> str:
    """What a rollout decodes: the model's text up to its first end token."""
    cut = min((i for i in (generation.find(m) for m in END_MARKERS) if i >= 0), default=len(generation))
    return PROMPT_TAIL + generation[:cut]


def report(recipe_file: Path, generations: Path, thresholds: list[float]) -> None:
    recipe = load_recipe(recipe_file)
    task = recipe.data.task
    items = [i for f in sorted(generations.glob(f"{FILES[task]}_*.json")) for i in read_d1(f)[0]]
    columns = {key: [item.reference[key] for item in items] for key in items[0].reference}
    completions = [answer_text(item.completion) for item in items]
    with reward_runner(recipe) as runner:
        result = runner.score([""] * len(items), completions, columns)
    grader = next(f.name for f in recipe.rewards.functions if f.name in FILES)
    truth = [value == 1.0 for value in result.per_reward[grader]]
    means = ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in result.per_reward.items())
    print(f"{recipe_file} ({len(items)} {task} answers): grader {grader} accuracy {sum(truth) / len(truth):.2%}; means: {means}")
    for threshold in sorted({recipe.algorithm.correct_threshold, *thresholds}):
        counted = [total >= threshold for total in result.totals]
        wrong_in = sum(c and not t for c, t in zip(counted, truth, strict=True))
        right_out = sum(t and not c for c, t in zip(counted, truth, strict=True))
        mark = "  <- recipe" if threshold == recipe.algorithm.correct_threshold else ""
        print(f"  total >= {threshold:<5g}: counted accuracy {sum(counted) / len(counted):.2%}, "
              f"wrong answers counted correct {wrong_in}, right answers counted wrong {right_out}{mark}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", type=Path, nargs="+")
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_generations"
    parser.add_argument("--generations", type=Path, default=default)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[])
    args = parser.parse_args()
    for recipe_file in args.recipes:
        report(recipe_file, args.generations, args.thresholds)


if __name__ == "__main__":
    main()
