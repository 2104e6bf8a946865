"""4x4 Sudoku grading: accuracy over the cells the puzzle left empty."""

from __future__ import annotations

from .extract import boxed_answer
from .result import GradeResult

CELLS = 16


def _board(name: str, value: str | int, allow_empty: bool) -> str:
    text = str(value).strip()
    if len(text) == CELLS - 1 and text.isdigit():  # a CSV reader may drop a leading 0
        text = "0" + text
    digits = "01234" if allow_empty else "1234"
    if len(text) != CELLS or any(ch not in digits for ch in text):
        raise ValueError(
            f"sudoku reference '{name}' must be 16 digits from {digits!r}, got {text!r}"
        )
    return text


def grade_sudoku(completion: str, *, puzzle: str | int, solution: str | int) -> GradeResult:
    """Score = share of the puzzle's empty cells (``0``) that the answer fills correctly.

    The answer grid is the first 16 digits of the box inside ``<answer>``, else of the
    block, else of the last box (``extract.boxed_answer``);
    separators and layout are ignored. ``correct`` means every empty cell is right.
    """
    puzzle_s = _board("puzzle", puzzle, allow_empty=True)
    solution_s = _board("solution", solution, allow_empty=False)
    if any(p != "0" and p != s for p, s in zip(puzzle_s, solution_s, strict=True)):
        raise ValueError(f"sudoku solution {solution_s} contradicts the givens of {puzzle_s}")
    block = boxed_answer(completion)
    if block is None:
        return GradeResult(False, 0.0, None, "no answer block found")
    grid = "".join(ch for ch in block[:10_000] if ch.isascii() and ch.isdigit())[:CELLS]
    empty = [i for i, ch in enumerate(puzzle_s) if ch == "0"]
    if not empty:
        raise ValueError(f"sudoku puzzle {puzzle_s} has no empty cell to grade")
    right = sum(1 for i in empty if i < len(grid) and grid[i] == solution_s[i])
    return GradeResult(right == len(empty), right / len(empty), grid)
