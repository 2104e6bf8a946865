"""unmask's graders against d1's own answer parser, on d1 generation files.

Run: python bench/d1_compare.py [FILES…] [--show N] [--json OUT]
(default FILES: ../shared/data/real_generations/*.json). Prints, per task, unmask's
accuracy, d1's accuracy and how many items each one alone calls correct, then every
disagreement with both extractions. Asserts nothing: the disagreements are read and
classified by a person (docs/grading.md).

``D1Parser`` is a from-scratch re-implementation of the behaviour d1's
``parse_and_get_acc`` documents (github dllm-reasoning/d1): first-match non-greedy
``\\boxed{…}`` and ``<answer>`` regexes, ``float`` comparisons, the Hendrycks MATH
string normaliser, Countdown by character filter + Python arithmetic, Sudoku by
cell accuracy over the puzzle's empty cells. It exists to be compared against, not
used: it is not a grader of unmask.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from unmask.evaluation.generations import Item, read_generations
from unmask.rewards.graders import grade

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_generations"
_FIRST_BOX = re.compile(r"\\boxed{(.*?)}")
_FIRST_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_NUMBERS = re.compile(r"-?\d+\.?\d*")


# ---------------------------------------------------------------- d1's parser, re-written
def d1_gsm8k(text: str, truth: float) -> tuple[bool, str | None]:
    """First parseable box (its first number), else the ``<answer>`` block's last number."""
    parsed = None
    for content in _FIRST_BOX.findall(text):
        content = content.strip()
        if not content or set(content) == {"."}:
            continue
        parsed = _to_float(content)
        if parsed is None:
            found = _NUMBERS.findall(content)
            parsed = _to_float(found[0]) if found else None
        if parsed is not None:
            break
    if parsed is None:
        block = _FIRST_ANSWER.search(text)
        if block and block.group(1).strip():
            content = block.group(1).strip()
            parsed = _to_float(content)
            if parsed is None:
                found = _NUMBERS.findall(content)
                parsed = _to_float(found[-1]) if found else None
    return parsed is not None and parsed == float(truth), None if parsed is None else str(parsed)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _last_box_content(text: str) -> str | None:
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    if start < 0:
        return None
    if text.startswith("\\boxed ", start):
        return text[start + len("\\boxed ") :].split("$")[0]
    depth, opened = 0, None
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
            opened = j if opened is None else opened
        elif text[j] == "}":
            depth -= 1
            if depth == 0 and opened is not None:
                return text[opened + 1 : j]
    return None


def _hendrycks_normalise(s: str) -> str:
    """The MATH dataset's string normaliser (Hendrycks et al.), as d1 applies it."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0]) <= 2:
        s = parts[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    simple = re.fullmatch(r"(\d+)/(\d+)", s)
    if simple:
        s = f"\\frac{{{simple.group(1)}}}{{{simple.group(2)}}}"
    return s


def d1_math(text: str, truth: str) -> tuple[bool, str | None]:
    """Last box (balanced), else the first ``<answer>`` block; Hendrycks string equality."""
    parsed = _last_box_content(text)
    if not parsed:
        block = _FIRST_ANSWER.search(text)
        parsed = block.group(1).strip() if block else None
    if parsed is None:
        return False, None
    return _hendrycks_normalise(parsed) == _hendrycks_normalise(str(truth)), parsed


def d1_countdown(text: str, nums: list[int], target: int) -> tuple[bool, str | None]:
    """First ``<answer>`` block (else the text), first box in it, LaTeX ops mapped, text
    before ``=``; right iff its numbers are ``nums`` and it evaluates to ``target``."""
    block = _FIRST_ANSWER.search(text)
    equation = block.group(1).strip() if block else text
    box = _FIRST_BOX.search(equation)
    if box:
        equation = box.group(1)
    equation = equation.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    equation = equation.split("=")[0].strip()
    used = sorted(int(n) for n in re.findall(r"\d+", equation))
    if used != sorted(nums) or not re.fullmatch(r"[\d+\-*/().\s]+", equation):
        return False, equation
    value = _arith(equation)
    return value is not None and abs(value - target) < 1e-5, equation


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arith(equation: str) -> float | None:
    """Value of a ``+-*/()`` expression (d1 evaluates it with a restricted ``eval``; here
    Python's own parser builds the tree and only numbers and the four operators are
    computed, exactly, so nothing is executed)."""

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not arithmetic")

    try:
        return float(value(ast.parse(equation.strip(), mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def d1_sudoku(text: str, puzzle: str, solution: str) -> tuple[float, str | None]:
    """Share of the empty cells right in the first ``<answer>`` block's digits (d1 averages
    cells over the whole file, not puzzles)."""
    block = _FIRST_ANSWER.search(text)
    grid = re.sub(r"\D", "", block.group(1)) if block else ""
    empty = [i for i, ch in enumerate(puzzle) if ch == "0"]
    right = sum(1 for i in empty if i < len(grid) and grid[i] == solution[i])
    return right / len(empty), grid


D1: dict[str, Callable[..., tuple]] = {
    "gsm8k": lambda t, r: d1_gsm8k(t, r["answer"]),
    "math": lambda t, r: d1_math(t, r["answer"]),
    "countdown": lambda t, r: d1_countdown(t, r["nums"], r["target"]),
    "sudoku": lambda t, r: d1_sudoku(t, r["puzzle"], r["solution"]),
}


# ---------------------------------------------------------------- comparison
def compare(items: list[Item]) -> dict[str, list[dict]]:
    """Per task: one row per item with both verdicts and both extractions."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        ours = grade(item.task, item.completion, **item.reference)
        theirs, theirs_extracted = D1[item.task](item.completion, item.reference)
        # d1's Sudoku number is cell accuracy: compare cell shares there, verdicts elsewhere
        d1_right = float(theirs) if item.task == "sudoku" else bool(theirs)
        ours_right = ours.score if item.task == "sudoku" else ours.correct
        rows[item.task].append(
            {
                "source": Path(item.source).name, "index": item.index, "reference": item.reference,
                "unmask": ours_right, "solved": ours.correct, "unmask_score": ours.score, "unmask_extracted": ours.extracted,
                "unmask_error": ours.error, "d1": d1_right, "d1_score": float(theirs),
                "d1_extracted": theirs_extracted, "completion": item.completion,
            }
        )  # fmt: skip
    return rows


def _answer_tail(text: str, width: int = 160) -> str:
    cut = text.split("<|eot_id|>")[0]
    start = cut.rfind("</reasoning>")
    tail = cut[start:] if start >= 0 else cut[-width:]
    return tail[:width].replace("\n", "⏎")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--show", type=int, default=10_000, help="disagreements listed per task")
    parser.add_argument("--json", type=Path, help="write every row (both verdicts) to this JSON file")
    args = parser.parse_args()
    files = args.files or sorted(DEFAULT_DIR.glob("*.json"))
    if not files:
        sys.exit(f"no generation files (looked in {DEFAULT_DIR})")
    items, skipped = [], 0
    for path in files:
        found, missing = read_generations(path)
        items += found
        skipped += missing
    rows = compare(items)
    print("sudoku: % = mean share of empty cells right (d1's measure); 'solved' = whole grid right")
    print(f"{'task':<10} {'n':>5} {'unmask %':>9} {'d1 %':>7} {'unmask higher':>14} {'d1 higher':>10} {'solved %':>9}")
    for task, task_rows in rows.items():
        n = len(task_rows)
        ours = sum(r["unmask"] for r in task_rows)
        theirs = sum(r["d1"] for r in task_rows)
        only_ours = sum(r["unmask"] > r["d1"] for r in task_rows)
        only_theirs = sum(r["d1"] > r["unmask"] for r in task_rows)
        solved = 100 * sum(r["solved"] for r in task_rows) / n
        print(f"{task:<10} {n:>5} {100 * ours / n:>9.2f} {100 * theirs / n:>7.2f} {only_ours:>14} {only_theirs:>10} {solved:>9.2f}")
    if skipped:
        print(f"({skipped} entries without a ground truth skipped)")
    for task, task_rows in rows.items():
        differing = [r for r in task_rows if r["unmask"] != r["d1"]][: args.show]
        for r in differing:
            print(
                f"\n[{task}] {r['source']}#{r['index']} unmask={r['unmask']} d1={r['d1']} ref={r['reference']}\n"
                f"  unmask read {r['unmask_extracted']!r} ({r['unmask_error'] or 'ok'}); d1 read {r['d1_extracted']!r}\n"
                f"  answer: {_answer_tail(r['completion'])}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
