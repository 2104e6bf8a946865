"""Prompt templates per task, kept in one place and overridable from a recipe.

Templates are ``str.format`` strings over the row's columns. Math-style tasks ask
for ``\\boxed{}``; Countdown and Sudoku ask for ``<answer>`` tags, which is what
their graders extract.
"""

from __future__ import annotations

from typing import Any

from unmask.errors import UserError

TEMPLATES: dict[str, str] = {
    "countdown": (
        "Using the numbers {nums}, create an equation that equals {target}. "
        "Use each number once with + - * /. Put the equation in <answer> </answer> tags."
    ),
    "gsm8k": (
        "{question}\nSolve the problem step by step, then give the final number "
        "in \\boxed{{}}."
    ),
    "math": "{problem}\nReason step by step and put your final answer in \\boxed{{}}.",
    "sudoku": (
        "Solve this 4x4 Sudoku. Each row, column and 2x2 box holds 1-4 once; 0 is empty.\n"
        "Puzzle: {puzzle}\nWrite the 16 digits of the solution in <answer> </answer> tags."
    ),
}
TEMPLATES["math500"] = TEMPLATES["math"]
TEMPLATES["amc"] = TEMPLATES["math"]


def render_prompt(task: str, row: dict[str, Any], template: str | None = None) -> str:
    """Fill the task's template (or ``template``) with the row's columns."""
    text = template if template is not None else TEMPLATES[task]
    try:
        return text.format(**row)
    except (KeyError, IndexError) as exc:
        raise UserError(
            f"data.prompt_template: field {exc} is not a column of task '{task}' "
            f"(columns: {', '.join(sorted(row))}); escape literal braces as {{{{ }}}}"
        ) from None
