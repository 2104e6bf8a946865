"""Graders against the real benchmark gold answers in ../shared/data."""

from __future__ import annotations

import csv
import json

from unmask.data.countdown import solve
from unmask.rewards.graders import grade
from unmask.rewards.gsm8k import gsm8k_gold


def _jsonl(path):
    with path.open() as f:
        return [json.loads(line) for line in f]


def test_every_math500_answer_equals_itself_and_its_solution(shared_data):
    """All 500 items (about 3 s): boxed gold vs gold, and the solution's own box."""
    wrong = []
    for row in _jsonl(shared_data / "math500_test.jsonl"):
        gold = row["answer"]
        if not grade("math", f"\\boxed{{{gold}}}", answer=gold).correct:
            wrong.append(("self", gold))
        if not grade("math", row["solution"], answer=gold).correct:
            wrong.append(("solution", gold))
    assert wrong == []


def test_every_gsm8k_gold_equals_itself(shared_data):
    rows = _jsonl(shared_data / "gsm8k_test.jsonl")
    assert len(rows) == 1319
    for row in rows:
        gold = gsm8k_gold(row["answer"])
        assert grade("gsm8k", f"\\boxed{{{gold}}}", answer=row["answer"]).correct, gold
        assert grade("gsm8k", row["answer"], answer=row["answer"]).correct, gold


def test_every_countdown_item_has_an_accepted_solution_and_a_rejected_near_miss(shared_data):
    for row in _jsonl(shared_data / "countdown_cd3_test.jsonl"):
        nums, target = [int(n) for n in row["input"].split(",")], int(row["output"])
        expression = solve(nums, target)
        answer = f"<answer>{expression}</answer>"
        assert grade("countdown", answer, nums=row["input"], target=row["output"]).correct, row
        near = grade("countdown", answer, nums=row["input"], target=target + 1)
        assert not near.correct and near.score == 0.1, row
        dropped = grade(
            "countdown", f"<answer>{expression}</answer>", nums=nums + [1], target=target
        )
        assert not dropped.correct, row


def test_every_sudoku_solution_scores_one_and_the_puzzle_zero(shared_data):
    with (shared_data / "sudoku4x4_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        puzzle, solution = row["Puzzle"], row["Solution"]
        assert (
            grade("sudoku", f"<answer>{solution}</answer>", puzzle=puzzle, solution=solution).score
            == 1.0
        )
        assert (
            grade("sudoku", f"<answer>{puzzle}</answer>", puzzle=puzzle, solution=solution).score
            == 0.0
        )
