"""MATH-style grading: boxed extraction plus math-verify equivalence, with guards.

math-verify's own timeouts use SIGALRM, which fails off the main thread, so they are
disabled here; the per-item deadline is enforced by the RewardRunner's process pool.
Cheap pre-checks (length, nesting depth) reject inputs that make sympy's parser crawl
so that they do not even reach the deadline.
"""

from __future__ import annotations

import functools
import logging
import re

import sympy
from math_verify import parse, verify

from .extract import answer_tag, last_boxed, last_math_span
from .mathfast import quick_equal
from .result import GradeResult

# math-verify warns on every call that its timeout is disabled: we do that on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 500
MAX_NESTING = 12
# Relative tolerance for the exact-number re-check (see _same_magnitude).
_REL_TOL = 1e-5
# `\sqrt(2)` is parsed by math-verify as an empty root (so `4\sqrt(2)` == 4).
_SQRT_PARENS = re.compile(r"\\sqrt\s*\(([^()]*)\)")


def extract_math_answer(completion: str) -> str | None:
    """The answer a MATH-style completion commits to: last box, else ``<answer>``
    content, else the last LaTeX math span. An ``<answer>`` block left empty is no
    answer: the reasoning's last formula is not read in its place."""
    for extractor in (last_boxed, answer_tag, last_math_span):
        found = extractor(completion)
        if found is not None and found.strip():
            return found.strip()
        if extractor is answer_tag and found is not None:
            return None
    return None


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")}]":
            depth -= 1
    return deepest


def _guard(answer: str) -> str | None:
    """Why ``answer`` is refused before parsing, or None if it may be parsed."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    if _nesting(answer) > MAX_NESTING:
        return f"answer nested deeper than {MAX_NESTING} brackets"
    if "\x00" in answer or any(0xD800 <= ord(ch) <= 0xDFFF for ch in answer):
        return "answer contains NUL or invalid unicode"
    return None


@functools.lru_cache(maxsize=4096)
def _parse(latex: str) -> list:
    """math-verify's parse, cached: a gold answer is shared by a whole group of rollouts.
    (Callers never mutate the returned list.)"""
    fixed = _SQRT_PARENS.sub(r"\\sqrt{\1}", latex)
    return parse(f"${fixed}$", parsing_timeout=None)


def _same_magnitude(gold: list, pred: list) -> bool:
    """Reject plain numbers that math-verify calls equal only by absolute rounding.

    math-verify rounds to 6 decimals, so 1/2004! "equals" 1/2006!; a relative check on
    the first parsed exact values catches that without touching symbolic answers.
    """
    g, p = gold[0], pred[0]
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return True
    if not (g.is_number and p.is_number):
        return True
    gv, pv = sympy.N(g, 30), sympy.N(p, 30)
    if not (gv.is_real and pv.is_real):
        return True
    scale = max(abs(gv), abs(pv))
    return bool(scale == 0 or abs(gv - pv) <= _REL_TOL * scale)


def math_equal(gold: str, answer: str) -> bool:
    """math-verify equivalence of two LaTeX answers, gold first (its order matters).

    The cheap exact path (``mathfast.quick_equal``) answers first where it is certain.
    """
    quick = quick_equal(gold, answer)
    if quick is not None:
        return quick
    return verify_equal(gold, answer)


def verify_equal(gold: str, answer: str) -> bool:
    """math-verify's verdict alone (through sympy), with the relative-magnitude re-check."""
    gold_parsed, pred_parsed = _parse(gold), _parse(answer)
    if not gold_parsed or not pred_parsed:
        return False
    if not verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return False
    return _same_magnitude(gold_parsed, pred_parsed)


def quick_grade_math(completion: str, *, answer: str) -> GradeResult | None:
    """The verdict of ``grade_math`` where it needs no sympy (no answer, a refused answer,
    or a ``mathfast`` decision), else None: what the reward runner grades in process."""
    extracted = extract_math_answer(completion)
    if extracted is None:
        return GradeResult(False, 0.0, None, "no answer found")
    refused = _guard(extracted)
    if refused:
        return GradeResult(False, 0.0, extracted[:MAX_ANSWER_CHARS], refused)
    quick = quick_equal(str(answer), extracted)
    return None if quick is None else GradeResult(quick, float(quick), extracted)


def grade_math(completion: str, *, answer: str) -> GradeResult:
    """Grade a completion against a MATH gold ``answer`` (LaTeX, without ``$``)."""
    quick = quick_grade_math(completion, answer=answer)
    if quick is not None:
        return quick
    extracted = extract_math_answer(completion) or ""
    correct = verify_equal(str(answer), extracted)
    return GradeResult(correct, float(correct), extracted)
