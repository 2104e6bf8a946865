"""Prompt templates per task, kept in one place and overridable from a recipe.

Templates are ``str.format`` strings over the row's columns. Math-style tasks ask
for ``\\boxed{}``; Countdown and Sudoku ask for ``<answer>`` tags, which is what
their graders extract. A recipe may also name a style (``data.prompt_template: d1``)
whose template per task asks for the layout that style's reward functions score.
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
#: code: LLaDA's OpenCompass prompts (zero-shot HumanEval; MBPP with tasks 2-4 as worked
#: examples in ``{shots}``, written into the user turn since prompts here are one turn)
TEMPLATES["humaneval"] = TEMPLATES["humaneval_plus"] = "Complete the following python code:\n{question}"
#: the tiny model's code task (unmask.data.tinycode): short, as the tiny prompts are
TEMPLATES["tinycode"] = "Write f(x) = {description} in Python."
TEMPLATES["mbpp"] = TEMPLATES["mbpp_plus"] = (
    "{shots}You are an expert Python programmer, and here is your task: {question} "
    "Your code should pass these tests:\n\n{test_list}\n"
)

_D1_LAYOUT = (
    "Work through the problem step by step, then reply in exactly this layout:\n"
    "<reasoning>\nyour step-by-step working\n</reasoning>\n<answer>\n{answer}\n</answer>"
)
#: d1's prompt shape: ``<reasoning>``/``<answer>`` tags (what xmlcount and the format rewards
#: score) and, per task, what goes inside the answer: GSM8K a bare number (int_answer),
#: MATH a box, Countdown the expression alone in a box, Sudoku the 16 digits
D1_TEMPLATES: dict[str, str] = {
    "gsm8k": _D1_LAYOUT.format(answer="the final number alone, digits only") + "\n\n{question}",
    "math": _D1_LAYOUT.format(answer="\\boxed{{the final answer}}") + "\n\n{problem}",
    "countdown": (
        "Using the numbers {nums}, write an arithmetic expression that equals {target}. Use every "
        "number exactly once, with + - * / and parentheses; put only the expression in the box, "
        'without "=" or the result.\n' + _D1_LAYOUT.format(answer="\\boxed{{expression}}")
    ),
    "sudoku": (
        "Solve this 4x4 Sudoku: each row, column and 2x2 box holds 1-4 once; 0 is an empty cell.\n"
        "Puzzle: {puzzle}\n" + _D1_LAYOUT.format(answer="the 16 digits of the solution, row by row")
    ),
}
D1_TEMPLATES["math500"] = D1_TEMPLATES["amc"] = D1_TEMPLATES["math"]
_EVALPLUS = "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n"
#: EvalPlus's instruction prompt (DiffuCoder evaluates with it) and JustGRPO's
EVALPLUS_TEMPLATES = {
    "humaneval": _EVALPLUS + "```\n{question}\n```",
    "mbpp": _EVALPLUS + '```\n"""\n{question}\n{first_test}\n"""\n```',
}
JUSTGRPO_TEMPLATES = {
    "humaneval": "You are an expert Python programmer. Your task is to complete the implementation of a "
    "function named `{entry_point}`.\n\n```python\n{question}\n```",
    "mbpp": "You are an expert Python programmer, and here is your task: {question} "
    "Your code should pass these tests:\n\n{test_list}\n",
}
for _styled in (EVALPLUS_TEMPLATES, JUSTGRPO_TEMPLATES):
    _styled["humaneval_plus"], _styled["mbpp_plus"] = _styled["humaneval"], _styled["mbpp"]
_TRACERL = "\nPlease reason step by step, and put your final answer within \\boxed{{}}."
#: TraceRL's rollout prompt for TraDo / SDAR (the user turn inside the Qwen chat template)
TRACERL_TEMPLATES = {"gsm8k": "{question}" + _TRACERL, "math": "{problem}" + _TRACERL}
TRACERL_TEMPLATES["math500"] = TRACERL_TEMPLATES["amc"] = TRACERL_TEMPLATES["math"]
#: named prompt styles a recipe's ``data.prompt_template`` may give instead of a template
STYLES: dict[str, dict[str, str]] = {
    "d1": D1_TEMPLATES, "evalplus": EVALPLUS_TEMPLATES, "justgrpo": JUSTGRPO_TEMPLATES, "tracerl": TRACERL_TEMPLATES,
}


def render_prompt(task: str, row: dict[str, Any], template: str | None = None) -> str:
    """Fill the task's template (or ``template``: a ``str.format`` string or a style name) with the row's columns."""
    text = template if template is not None else TEMPLATES[task]
    if text in STYLES:
        if task not in STYLES[text]:
            raise UserError(f"data.prompt_template: style '{text}' has no prompt for task '{task}'")
        text = STYLES[text][task]
    try:
        return text.format(**row)
    except (KeyError, IndexError) as exc:
        raise UserError(
            f"data.prompt_template: field {exc} is not a column of task '{task}' "
            f"(columns: {', '.join(sorted(row))}); escape literal braces as {{{{ }}}}"
        ) from None
