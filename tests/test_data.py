"""Task data: solvable deterministic Countdown, benchmark loaders, prompt templates."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from unmask.data import DATA_FILES, countdown, load_rows, render_prompt
from unmask.errors import UserError


def _evaluate(expr: str) -> Fraction:
    """Independent check of solver expressions: digits become Fractions, then Python arithmetic."""
    import re

    return eval(re.sub(r"(\d+)", r"Fraction(\1)", expr), {"Fraction": Fraction})  # test-only, own strings


def test_generator_problems_are_solvable_and_use_each_number_once() -> None:
    rows = countdown.generate(300, seed=3)
    for row in rows:
        assert 1 <= row["target"] <= 100
        assert all(1 <= n <= 10 for n in row["nums"])
        assert _evaluate(row["solution"]) == row["target"]
        used = sorted(int(t) for t in __import__("re").findall(r"\d+", row["solution"]))
        assert used == sorted(row["nums"])
        assert countdown.solve(row["nums"], row["target"]) is not None


def test_generator_is_deterministic_per_seed() -> None:
    assert countdown.generate(50, seed=1) == countdown.generate(50, seed=1)
    assert countdown.generate(50, seed=1) != countdown.generate(50, seed=2)


def test_generator_four_numbers_and_ranges() -> None:
    rows = countdown.generate(10, seed=0, num_numbers=4, min_number=2, max_number=20, max_target=50)
    assert all(len(r["nums"]) == 4 and r["target"] <= 50 for r in rows)


def test_solver_rejects_unsolvable() -> None:
    assert countdown.solve([1, 1, 1], 100) is None
    assert countdown.solve([2, 3, 4], 24) is not None
    assert countdown.solve([1, 5, 5, 5], 24) is not None  # needs fractions: (5 - 1/5) * 5


def test_generator_impossible_ranges_error() -> None:
    with pytest.raises(UserError, match="widen the ranges"):
        countdown.generate(3, seed=0, min_number=1, max_number=1, min_target=90, max_target=100)


@pytest.mark.parametrize(
    ("task", "count"), [("gsm8k", 1319), ("math500", 500), ("amc", 83), ("countdown", 256), ("sudoku", 500)]
)
def test_benchmark_loaders_read_shared_files(shared_data: Path, task: str, count: int) -> None:
    rows = load_rows(task, path=shared_data / DATA_FILES[task])
    assert len(rows) == count
    assert all(row["prompt"] for row in rows)


def test_benchmark_columns(shared_data: Path) -> None:
    gsm = load_rows("gsm8k", path=shared_data / DATA_FILES["gsm8k"], limit=5)
    assert gsm[0]["answer"] == "18" and "####" not in gsm[0]["reasoning"]
    cd = load_rows("countdown", path=shared_data / DATA_FILES["countdown"])
    assert all(countdown.solve(r["nums"], r["target"]) for r in cd[:64])
    amc = load_rows("amc", path=shared_data / DATA_FILES["amc"])
    assert all("." not in r["answer"] for r in amc)  # 142.0 → "142"
    sudoku = load_rows("sudoku", path=shared_data / DATA_FILES["sudoku"], limit=3)
    assert all(len(r["puzzle"]) == 16 and len(r["solution"]) == 16 for r in sudoku)


def test_missing_file_and_bad_records(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_rows("gsm8k", path=tmp_path / "nope.jsonl")
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(UserError, match="lack the column"):
        load_rows("gsm8k", path=bad)
    cd = tmp_path / "c.jsonl"
    cd.write_text('{"input": "1,x", "output": 3}\n')
    with pytest.raises(UserError, match=r"c\.jsonl:1"):
        load_rows("countdown", path=cd)


def test_prompt_template_override_and_error() -> None:
    row = {"nums": [1, 2, 3], "target": 6}
    assert "6" in render_prompt("countdown", row) and "<answer>" in render_prompt("countdown", row)
    assert render_prompt("countdown", row, "T={target}") == "T=6"
    with pytest.raises(UserError, match="not a column"):
        render_prompt("countdown", row, "{question}")


def test_unreachable_hub_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-unmask-cache")
    with pytest.raises(UserError, match="data-dir"):
        load_rows("gsm8k")


def test_math_training_rows_take_the_boxed_answer_from_the_solution(tmp_path: Path) -> None:
    path = tmp_path / "math_train.jsonl"
    records = [
        {"problem": "1+1?", "solution": "We add: $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "x?", "solution": "no box here"},
    ]
    path.write_text(json.dumps(records[0]) + "\n")
    assert load_rows("math", path=path)[0]["answer"] == "2"
    path.write_text(json.dumps(records[1]) + "\n")
    with pytest.raises(UserError, match="lack the column 'answer'"):
        load_rows("math", path=path)
