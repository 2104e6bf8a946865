"""Code answers: extraction, DiffuCoder's format score, and the unit-test grader.

Extraction (docs/code.md says why): the first fenced block (any language tag; an unclosed
last block counts, since fixed-length answers are often cut), else the text between MBPP's
``[BEGIN]`` and ``[DONE]``, else the whole text. The program is the task's ``prefix``
(HumanEval's stub, so a bare function body completes it) + the extracted code + the task's
``setup``; each test snippet then runs against it in the sandbox (``sandbox.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from .result import GradeResult
from .sandbox import CodeJob, Limits, execute

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)
_BEGIN_DONE = re.compile(r"\[BEGIN\]\s*(.*?)\s*(?:\[DONE\]|\Z)", re.S)
_ONE_PYTHON_BLOCK = re.compile(r"\A(?:(?!```).)*```python\n((?:(?!```).)*)```\s*\Z", re.S)


def extract_code(text: str) -> str | None:
    """The code in a model's answer (see the module docstring); None if there is none."""
    found = _FENCE.search(text)
    if found is None and "[BEGIN]" in text:
        found = _BEGIN_DONE.search(text)
    code = found.group(1) if found else text.split("[DONE]")[0]
    code = code.strip("\n")
    if len(code) > 1 and code[0] == code[-1] == "'" and "\n" in code:  # OpenCompass quotes MBPP code
        code = code[1:-1]
    return code if code.strip() else None


def format_score(text: str) -> float:
    """DiffuCoder's format term: 1.0 for exactly one ```python block ending the answer that
    parses, 0.5 when that block does not parse, 0.0 for any other layout."""
    found = _ONE_PYTHON_BLOCK.match(text)
    if found is None:
        return 0.0
    try:
        ast.parse(found.group(1))
    except (SyntaxError, ValueError):
        return 0.5
    return 1.0


def grade_code(
    completion: str,
    *,
    prefix: str,
    tests: Sequence[str],
    entry_point: str,
    setup: str,
    timeout_s: float,
    binary: bool = False,
    memory_mb: int = 1024,
) -> GradeResult:
    """Run the extracted program against ``tests``; score = share of tests passed
    (``binary``: 1.0 only when all pass), correct = all passed.

    ``error`` is set only where the answer could not be judged (no code, a syntax error);
    every other failure is a verdict whose reason is in ``kind`` (timeout, memory,
    wrong answer, bad return type, no verdict, killed by signal N, sandbox unavailable).
    """
    code = extract_code(completion)
    if code is None:
        return GradeResult(False, 0.0, None, "no code in the answer", kind="no code")
    if isinstance(tests, str):
        tests = [tests]
    run = execute(
        CodeJob(code, tuple(tests), entry_point, prefix, setup),
        Limits(timeout_s=float(timeout_s), memory_mb=memory_mb),
    )
    score = float(run.ok) if binary else run.pass_rate
    error = run.error if run.reason == "syntax" else None
    return GradeResult(run.ok, score, code, error, kind=run.reason)
