"""The cheap exact MATH path: it decides only where math-verify agrees, and stays cheap."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from unmask.evaluation.generations import read_generations
from unmask.rewards.mathfast import quick_equal, value_of
from unmask.rewards.mathgrade import _guard, extract_math_answer, verify_equal

GOLDEN = Path(__file__).parent / "golden_rewards.jsonl"


def _pairs(cases):
    for gold, completion in cases:
        answer = extract_math_answer(completion)
        if answer and not _guard(answer):
            yield str(gold), answer


def _check_agreement(pairs) -> int:
    decided = 0
    for gold, answer in pairs:
        quick = quick_equal(gold, answer)
        if quick is not None:
            decided += 1
            assert quick == verify_equal(gold, answer), (gold, answer)
    return decided


def test_no_verdict_changes_on_the_golden_file():
    cases = [json.loads(line) for line in GOLDEN.open()]
    math_cases = [(c["reference"]["answer"], c["completion"]) for c in cases if c["task"] == "math"]
    assert _check_agreement(_pairs(math_cases)) >= 20


def test_no_verdict_changes_on_the_real_development_set(shared_data):
    """Every real MATH500 answer the cheap path decides, against math-verify's own verdict."""
    items = [i for p in sorted((shared_data / "real_generations").glob("math500_*.json")) for i in read_generations(p)[0]]
    decided = _check_agreement(_pairs((i.reference["answer"], i.completion) for i in items))
    assert decided >= 0.75 * len(items)


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("\\frac{639}{40}", "15.975", True),
        ("\\frac14", "0.25", True),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("2k + 2", "2k+2", True),  # identical once spacing is dropped
        ("16 \\sqrt{3}", "2", False),
        ("-\\frac{24}{25}", "\\frac{7}{25}", False),
        ("120^\\circ", "45", False),  # far under degrees and radians alike
        ("\\$18.90", "11.70", False),
        ("5", "(3, -1)", False),  # a list with an element far from the number
        ("(8,-2)", "(5,5)", False),
        ("(-\\infty, 0]", "[0, \\infty]", False),
        ("2, 3", "2, 4", False),
        ("2, 3", "3, 2", None),  # same elements: order and brackets are math-verify's call
        ("5", "5, 5", None),
        ("0.5", "0,5", None),  # maybe a decimal comma
        ("\\frac{1}{3}", "0.333333", None),  # close: math-verify's rounding decides
        ("30^\\circ", "30", None),
        ("50\\%", "0.5", None),
        ("40", "4{10}", None),  # math-verify does not read 4{10} as 40
        ("3", "x=3", None),
        ("2 3", "23", None),
        ("10,080", "10080", None),
        ("\\frac{1}{2004!}", "\\frac{1}{2006!}", None),
    ],
)
def test_quick_equal_cases(gold, answer, expected):
    assert quick_equal(gold, answer) is expected


@pytest.mark.parametrize("text", ["9^{9^{9^{9}}}", "((9^{64})^{64})^{64}", "(" * 40 + "1" + ")" * 40, "1" * 10_000, "\\frac{1}{0}", "\x00"])
def test_hostile_values_are_refused_fast(text):
    started = time.perf_counter()
    assert value_of(text) is None
    assert quick_equal("5", text) is None or quick_equal("5", text) is False
    assert time.perf_counter() - started < 0.05
