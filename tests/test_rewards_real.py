"""Graders on real LLaDA-8B-Instruct answers (../shared/data/real_generations, d1's files).

Each pinned item was read by a person (docs/grading.md lists every disagreement with
d1's parser and how it was classified); the verdicts below are that audited reading.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest

from unmask.evaluation.generations import Item, read_generations
from unmask.rewards.graders import grade

REAL = "real_generations"

# (file, index in the file, audited verdict, grader score)
PINNED = [
    # Countdown: d1's prompt puts the expression in \boxed{} inside <answer>
    ("countdown_instruct_128_64_1_generations.json", 10, True, 1.0),  # 18 * 2 + 37
    ("countdown_instruct_128_64_5_generations.json", 13, True, 1.0),  # (46 + 19) + 35
    ("countdown_instruct_128_64_6_generations.json", 26, True, 1.0),  # 46-21+17
    ("countdown_instruct_128_64_0_generations.json", 2, True, 1.0),  # 87 - 85 + 60
    ("countdown_instruct_128_64_0_generations.json", 20, False, 0.1),  # 82 - 35 + 4 = 51, not 58
    ("countdown_instruct_128_64_2_generations.json", 9, False, 0.1),  # 76 \times 17 - 14
    ("countdown_instruct_128_64_1_generations.json", 0, False, 0.1),  # 18 used twice
    ("countdown_instruct_128_64_4_generations.json", 8, False, 0.1),  # 20 + 28 - 19
    ("countdown_instruct_128_64_0_generations.json", 0, False, 0.1),  # 55 - 53: 49 unused
    ("countdown_instruct_128_64_0_generations.json", 30, False, 0.1),  # 93 \div 11 - 74
    # GSM8K
    ("gsm8k_instruct_128_64_0_generations.json", 9, True, 1.0),  # unclosed \boxed{36>
    ("gsm8k_instruct_128_64_0_generations.json", 12, True, 1.0),  # unclosed \boxed{225>
    ("gsm8k_instruct_128_64_0_generations.json", 80, True, 1.0),  # no <answer>, ends "= 79 miles."
    ("gsm8k_instruct_128_64_1_generations.json", 79, True, 1.0),  # \boxed{43,500} (d1 reads 43)
    ("gsm8k_instruct_128_64_1_generations.json", 123, True, 1.0),  # cut before <answer>, "= 7"
    ("gsm8k_instruct_128_64_4_generations.json", 86, True, 1.0),  # <answer>145</answer}
    ("gsm8k_instruct_128_64_7_generations.json", 2, True, 1.0),  # cut before <answer>, "$7425"
    ("gsm8k_instruct_128_64_9_generations.json", 54, True, 1.0),
    ("gsm8k_instruct_128_64_3_generations.json", 161, True, 1.0),
    ("gsm8k_instruct_128_64_1_generations.json", 130, False, 0.0),  # \boxed{} left empty
    ("gsm8k_instruct_128_64_4_generations.json", 3, False, 0.0),  # \boxed{...}
    ("gsm8k_instruct_128_64_1_generations.json", 17, False, 0.0),  # \boxed{x}
    ("gsm8k_instruct_128_64_4_generations.json", 13, False, 0.0),
    ("gsm8k_instruct_128_64_1_generations.json", 16, False, 0.0),
    # MATH500
    ("math500_instruct_128_64_0_generations.json", 33, True, 1.0),  # 15.975 = 639/40
    ("math500_instruct_128_64_0_generations.json", 46, True, 1.0),  # 0.25 = \frac14
    ("math500_instruct_128_64_0_generations.json", 72, True, 1.0),  # \frac{3}{24} = 1/8
    ("math500_instruct_128_64_0_generations.json", 131, True, 1.0),  # 8 + 8 + 15 = 31 units
    ("math500_instruct_128_64_0_generations.json", 202, True, 1.0),  # 36.00 vs \$36
    ("math500_instruct_128_64_0_generations.json", 247, True, 1.0),  # 2516 vs 2516_8
    ("math500_instruct_128_64_1_generations.json", 62, True, 1.0),  # C vs \text{(C)}
    ("math500_instruct_128_64_1_generations.json", 156, True, 1.0),  # unclosed \boxed{23>
    ("math500_instruct_128_64_1_generations.json", 176, True, 1.0),
    ("math500_instruct_128_64_0_generations.json", 20, False, 0.0),  # <answer> left empty
    ("math500_instruct_128_64_1_generations.json", 82, False, 0.0),
    ("math500_instruct_128_64_0_generations.json", 191, False, 0.0),  # 3\sqrt{3} vs 3\sqrt{13}
    ("math500_instruct_128_64_0_generations.json", 165, False, 0.0),
    # Sudoku: score = share of the empty cells filled right
    ("sudoku_instruct_128_64_0_generations.json", 1, True, 1.0),
    ("sudoku_instruct_128_64_0_generations.json", 3, False, 0.5),
    ("sudoku_instruct_128_64_0_generations.json", 18, False, 0.25),
    ("sudoku_instruct_128_64_2_generations.json", 21, False, 0.125),  # 7 digits, </answer cut
    ("sudoku_instruct_128_64_6_generations.json", 12, False, 0.0),  # the puzzle copied back
    ("sudoku_instruct_128_64_0_generations.json", 6, False, 0.0),  # rows of five digits
]

# audited accuracy of the whole development set (docs/grading.md), items graded correct
AUDITED = {"countdown": (54, 256), "gsm8k": (793, 1128), "math": (147, 500), "sudoku": (1, 256)}


@functools.cache
def _items(path: Path) -> dict[int, Item]:
    items, _ = read_generations(path)
    return {item.index: item for item in items}


@pytest.mark.parametrize(("name", "index", "correct", "score"), PINNED, ids=[f"{n.split('_')[0]}-{n.split('_')[4]}-{i}" for n, i, _, _ in PINNED])
def test_real_answer_pinned(shared_data, name, index, correct, score):
    item = _items(shared_data / REAL / name)[index]
    result = grade(item.task, item.completion, **item.reference)
    assert (result.correct, result.score) == (correct, pytest.approx(score))


def test_pinned_set_is_large_and_two_sided():
    tasks = {name.split("_")[0] for name, *_ in PINNED}
    assert len(PINNED) >= 40 and tasks == {"countdown", "gsm8k", "math500", "sudoku"}
    for task in tasks:
        verdicts = {c for n, _, c, _ in PINNED if n.startswith(task)}
        assert verdicts == {True, False}, task


def test_development_set_regrades_to_audited_accuracy(shared_data):
    """Every real answer of the four tasks, graded in process (~10 s, MATH's sympy cases)."""
    totals = {task: [0, 0] for task in AUDITED}
    for path in sorted((shared_data / REAL).glob("*.json")):
        for item in _items(path).values():
            totals[item.task][0] += grade(item.task, item.completion, **item.reference).correct
            totals[item.task][1] += 1
    assert {task: tuple(v) for task, v in totals.items()} == AUDITED


def _d1_compare():
    path = Path(__file__).resolve().parents[1] / "bench" / "d1_compare.py"
    spec = importlib.util.spec_from_file_location("d1_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["gsm8k", "countdown", "sudoku"])
def test_d1_parser_reimplementation_matches_published_accuracy(shared_data, task):
    """bench/d1_compare.py's parser reproduces the accuracies d1 reports for these files
    (as d1 published them): GSM8K 69.29 % of 1130, Sudoku 11.72 % of cells; Countdown
    20.70 % (53 of 256) is matched within one item (54)."""
    d1 = _d1_compare()
    items = [i for p in sorted((shared_data / REAL).glob(f"{task}_*.json")) for i in _items(p).values()]
    scores = [float(d1.D1[task](i.completion, i.reference)[0]) for i in items]
    if task == "gsm8k":
        assert round(100 * sum(scores) / (len(items) + 2), 2) == 69.29  # 2 entries lack a truth
    elif task == "sudoku":
        assert round(100 * sum(scores) / len(items), 2) == 11.72
    else:
        assert abs(sum(scores) - 53) <= 1
