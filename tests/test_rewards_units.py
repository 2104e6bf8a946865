"""Extraction, format shaping (d1's GSM8K recipe), TRL signatures and reference checks."""

from __future__ import annotations

import pytest

from unmask.rewards.countdown import evaluate
from unmask.rewards.extract import answer_tag, last_boxed, last_math_span, last_number
from unmask.rewards.formats import soft_format, strict_format, xml_count
from unmask.rewards.functions import completion_text
from unmask.rewards.graders import grade
from unmask.rewards.registry import RewardSpec, available, load_reward
from unmask.rewards.runner import RewardRunner

D1_PERFECT = "<reasoning>\n9*2=18\n</reasoning>\n<answer>\n18\n</answer>\n"


def test_extractors():
    assert last_boxed(r"\boxed{a} and \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed 7 done") == "7"
    assert last_boxed(r"\boxed{open") is None and last_boxed("none") is None
    assert answer_tag("<answer> 4 </answer><answer>5") == "5"
    assert last_math_span(r"$a$ then \[b+1\]") == "b+1"
    assert last_number("from -3 to 1,234.5 units") == "1,234.5"


def test_d1_gsm8k_shaping_is_reproduced_by_weights():
    specs = [
        RewardSpec("xmlcount"),
        RewardSpec("format_soft", 0.5),
        RewardSpec("format_strict", 0.5),
        RewardSpec("int_answer", 0.5),
        RewardSpec("gsm8k", 2.0),
    ]
    texts = [D1_PERFECT, D1_PERFECT + "tail", "<answer>18</answer>", "18"]
    batch = RewardRunner(specs, num_workers=0).score([""] * 4, texts, {"answer": ["#### 18"] * 4})
    assert batch.totals[0] == pytest.approx(0.5 + 0.5 + 0.5 + 0.5 + 2.0)
    # four trailing characters: soft still holds, strict fails, xmlcount loses 0.001/char
    assert batch.per_reward["xmlcount"][1] == pytest.approx(0.5 - 0.004 - 0.004)
    assert batch.per_reward["format_strict"][1] == 0.0 and batch.per_reward["format_soft"][1] == 1.0
    assert batch.totals[2] == pytest.approx(0.5 + 2.0) and batch.totals[3] == pytest.approx(2.0)


def test_format_checks_refuse_repeated_or_misordered_tags():
    assert strict_format(D1_PERFECT) and soft_format(D1_PERFECT)
    assert not soft_format("<answer>1</answer><reasoning>r</reasoning>")
    assert not soft_format("<reasoning>r</reasoning> text <answer>1</answer>")
    assert not strict_format(D1_PERFECT + D1_PERFECT)
    assert xml_count("") == 0.0


def test_conversational_completions_are_read_like_strings():
    messages = [{"role": "assistant", "content": r"so \boxed{4}"}]
    assert completion_text(messages) == r"so \boxed{4}"
    math = load_reward("math")
    assert math(["p"] * 2, [messages, r"\boxed{5}"], answer=["4", "4"]) == [1.0, 0.0]
    with pytest.raises(TypeError, match="list of"):
        completion_text(42)


def test_countdown_evaluator_explains_refusals():
    value, used, claimed = evaluate("(6 - 2) * 3 = 12")
    assert (value, sorted(used), claimed) == (12, [2, 3, 6], 12)
    for text, reason in [
        ("2**3", "exponentiation"),
        ("2 ^ 3", "'\\^'"),
        ("2 x 3", "'x'"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=reason):
            evaluate(text)


@pytest.mark.parametrize(
    "task,reference,match",
    [
        ("countdown", {"nums": "1,a", "target": 3}, "countdown reference"),
        ("sudoku", {"puzzle": "12", "solution": "3142243142131324"}, "16 digits"),
        ("sudoku", {"puzzle": "3102200002100320", "solution": "4142243142131324"}, "contradicts"),
        ("gsm8k", {"answer": "no number"}, "no number after"),
    ],
)
def test_bad_reference_data_names_the_field(task, reference, match):
    with pytest.raises(ValueError, match=match):
        grade(task, "<answer>1</answer>", **reference)


def test_unknown_task_lists_choices_and_registry_is_complete():
    with pytest.raises(ValueError, match="choose one of"):
        grade("chess", "e4")
    expected = {
        "math",
        "gsm8k",
        "countdown",
        "sudoku",
        "format_strict",
        "format_soft",
        "boxed",
        "xmlcount",
        "int_answer",
    }
    assert expected <= set(available())
