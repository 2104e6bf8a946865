"""Answer forms real dLLMs write (issue: graders read answers the way LLaDA/Dream write them)."""

from __future__ import annotations

import pytest

from unmask.rewards.extract import boxed_answer
from unmask.rewards.graders import grade

CD = {"nums": [49, 55, 53], "target": 51}


@pytest.mark.parametrize(
    ("completion", "correct"),
    [
        ("<answer>\\boxed{49 + 55 - 53}</answer>", True),
        ("<answer>\n\\boxed{55 - 53 + 49}\n</answer><|eot_id|>", True),
        ("\\boxed{49 + 55 - 53}", True),  # box without an answer block
        ("<answer>The expression is \\boxed{49+55-53}.</answer>", True),
        ("<answer>\\boxed{}\n\\boxed{49 + 55 - 53}</answer>", True),  # last non-empty box
        ("<answer>\\boxed{\\left(49 + 55\\right) - 53}</answer>", True),
        ("<answer>\\boxed{49 + 55 − 53 = 51}</answer>", True),  # unicode minus, trailing = value
        ("<answer>\\boxed{49 + 55 - 53 = 52}</answer>", False),
        ("<answer>\n49\n+ 55\n- 53\n</answer>", True),  # newlines
        ("<answer>\\boxed{49 +\\, 55 - 53}</answer>", True),  # LaTeX spacing
        ("<answer>\\boxed{55 - 53 + 49 \\times 1}</answer>", False),  # 1 is not given
    ],
)
def test_countdown_forms(completion, correct):
    assert grade("countdown", completion, **CD).correct is correct


@pytest.mark.parametrize(
    ("completion", "nums", "target"),
    [
        ("<answer>\\boxed{6 \\times 4 \\div 2}</answer>", [6, 4, 2], 12),
        ("<answer>\\boxed{6 \\cdot 4 / 2}</answer>", [6, 4, 2], 12),
        ("<answer>\\boxed{6 × 4 ÷ 2}</answer>", [6, 4, 2], 12),
        ("<answer>\\boxed{\\frac{6 \\times 4}{2}}</answer>", [6, 4, 2], 12),
        ("<answer>\\boxed{\\dfrac{8}{3 - \\frac{8}{3}}}</answer>", [8, 3, 8, 3], 24),
        ("<answer>\\boxed{[(6 + 4) \\times 2]}</answer>", [6, 4, 2], 20),
    ],
)
def test_countdown_latex_operators_are_exact(completion, nums, target):
    assert grade("countdown", completion, nums=nums, target=target).correct


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("<answer>\\boxed{6,277}</answer>", "#### 6277", True),
        ("<answer>\\boxed{\\$18}</answer>", "#### 18", True),
        ("<answer>\\boxed{25\\%}</answer>", "#### 25", True),
        ("<answer>\\boxed{120\\text{ minutes}}</answer>", "#### 120", True),
        ("<answer>\\boxed{20 \\text{ m}^2}</answer>", "#### 20", True),  # the unit's 2 is not the answer
        ("<answer>\\boxed{9 \\times 2 = 18}</answer>", "#### 18", True),
        ("<answer>\n\\boxed{36", "#### 36", True),  # cut mid-box
        ("16 - 7 = 9 eggs, 9 * 2 = 18.\n</reasoning>\n<answer>\n\\boxed{}\n</answer>", "#### 18", False),
        ("9 * 2 = 18.\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>", "#### 18", False),
        ("so she makes 9 * 2 = $18 a day.\n</reasoning>", "#### 18", True),  # cut before <answer>
    ],
)
def test_gsm8k_forms(completion, gold, correct):
    assert grade("gsm8k", completion, answer=gold).correct is correct


def test_sudoku_box_inside_answer_beats_restated_puzzle():
    puzzle, solution = "4320004330100004", "4321124334122134"
    completion = f"<answer>\nPuzzle {puzzle}\n\\boxed{{{solution}}}\n</answer>"
    assert grade("sudoku", completion, puzzle=puzzle, solution=solution).correct
    rows = "<answer>\n4 3 2 1\n1 2 4 3\n3 4 1 2\n2 1 3 4\n</answer>"
    assert grade("sudoku", rows, puzzle=puzzle, solution=solution).correct


def test_math_empty_answer_block_is_no_answer():
    text = "So the expression is \\(15x - 80\\).\n</reasoning>\n<answer>\n</answer>"
    result = grade("math", text, answer="15x - 80")
    assert not result.correct and result.error == "no answer found"
    assert grade("math", text.replace("<answer>\n</answer>", ""), answer="15x - 80").correct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>\\boxed{1+2}</answer>", "1+2"),
        ("<answer>1+2</answer>\\boxed{3}", "1+2"),
        ("<answer></answer>\\boxed{3}", "3"),
        ("\\boxed{3}", "3"),
        ("nothing", None),
    ],
)
def test_boxed_answer(text, expected):
    assert boxed_answer(text) == expected
