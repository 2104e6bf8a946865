"""Countdown grading with a small exact parser: no eval, no Python AST, Fractions only.

Grammar (after normalising LaTeX/unicode operators):
    equation := expr [ "=" number ]
    expr     := term (("+" | "-") term)*
    term     := factor (("*" | "/") factor)*
    factor   := number | "(" expr ")" | "-" factor     (unary minus only first in a group)
The length cap (200 characters) bounds the recursion depth.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from .extract import boxed_answer
from .result import GradeResult

MAX_CHARS = 200
MAX_DIGITS = 6

_REPLACEMENTS = (
    ("\\times", "*"), ("\\cdot", "*"), ("\\ast", "*"), ("×", "*"), ("·", "*"), ("⋅", "*"),
    ("∗", "*"), ("\\div", "/"), ("÷", "/"), ("∕", "/"), ("−", "-"), ("–", "-"), ("—", "-"),
    ("\\left", ""), ("\\right", ""), ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""),
    ("\\,", " "), ("\\;", " "), ("\\:", " "), ("\\!", ""), ("\\ ", " "), ("$", ""),
    ("{", "("), ("}", ")"), ("[", "("), ("]", ")"),
)  # fmt: skip
_FRAC = re.compile(r"\\[dt]?frac(?![a-zA-Z])")
_TOKEN = re.compile(r"\d+|[-+*/()=]|\s+|.", re.S)


class _Malformed(Exception):
    """The text is not an expression of the Countdown grammar."""


@dataclass
class _Parser:
    tokens: list[str]
    pos: int = 0
    numbers: list[int] = field(default_factory=list)
    divided_by_zero: bool = False

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _Malformed("expression ends early")
        self.pos += 1
        return token

    def number(self) -> int:
        token = self.take()
        if not token.isdigit():
            raise _Malformed(f"expected a number, found {token!r}")
        if len(token) > MAX_DIGITS:
            raise _Malformed(f"number with more than {MAX_DIGITS} digits")
        return int(token)

    def expr(self) -> Fraction:
        value = self.term(group_start=True)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(group_start=False)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, group_start: bool) -> Fraction:
        value = self.factor(group_start)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor(group_start=False)
            if op == "*":
                value *= rhs
            elif rhs == 0:
                self.divided_by_zero = True
                value = Fraction(0)
            else:
                value /= rhs
        return value

    def factor(self, group_start: bool) -> Fraction:
        token = self.peek()
        if token == "-" and group_start:
            self.take()
            return -self.factor(group_start=False)
        if token == "(":
            self.take()
            value = self.expr()
            if self.take() != ")":
                raise _Malformed("unbalanced parentheses")
            return value
        value = self.number()
        self.numbers.append(value)
        return Fraction(value)


def _group(text: str, start: int) -> int:
    """End (exclusive) of the LaTeX argument at ``start``: a balanced ``{…}`` or one character."""
    if start >= len(text):
        raise ValueError("\\frac without its arguments")
    if text[start] != "{":
        return start + 1
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced braces")


def _expand_fracs(text: str) -> str:
    """``\\frac{a}{b}`` (also ``\\dfrac``, ``\\tfrac``, ``\\frac12``) → ``(a)/(b)``."""
    while (match := _FRAC.search(text)) is not None:
        num_start = match.end()
        num_end = _group(text, num_start)
        den_end = _group(text, num_end)
        numerator, denominator = text[num_start:num_end], text[num_end:den_end]
        text = f"{text[: match.start()]}({numerator})/({denominator}){text[den_end:]}"
    return text


def normalise(expression: str) -> str:
    """Map LaTeX/unicode operators to ``+ - * /``, fractions to divisions and braces to
    parentheses, and drop math delimiters and LaTeX spacing. Raises ValueError on a
    malformed ``\\frac``."""
    expression = _expand_fracs(expression)
    for old, new in _REPLACEMENTS:
        expression = expression.replace(old, new)
    return expression.strip().rstrip(".")


def evaluate(expression: str) -> tuple[Fraction | None, list[int], Fraction | None]:
    """Exact value, numbers used, and the claimed ``= n`` result (if any) of ``expression``.

    The value is None after a division by zero. Raises ValueError naming the problem if
    the text is not an arithmetic expression of the allowed form.
    """
    if len(expression) > 2 * MAX_CHARS:  # before normalising: bounds its work too
        raise ValueError(f"expression longer than {MAX_CHARS} characters")
    text = normalise(expression)
    if not text:
        raise ValueError("empty expression")
    if len(text) > MAX_CHARS:
        raise ValueError(f"expression longer than {MAX_CHARS} characters")
    if "**" in text:
        raise ValueError("exponentiation is not allowed")
    tokens = [t for t in _TOKEN.findall(text) if not t.isspace()]
    bad = next((t for t in tokens if not (t.isdigit() or t in "+-*/()=")), None)
    if bad is not None:
        raise ValueError(f"character {bad!r} is not allowed")
    if tokens.count("=") > 1:
        raise ValueError("more than one '='")
    claimed = None
    if "=" in tokens:
        split = tokens.index("=")
        rhs = _Parser(tokens[split + 1 :])
        try:
            claimed = rhs.expr()
        except _Malformed as exc:
            raise ValueError(f"after '=': {exc}") from None
        if rhs.peek() is not None or len(rhs.numbers) != 1 or rhs.divided_by_zero:
            raise ValueError("only a number may follow '='")
        tokens = tokens[:split]
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except _Malformed as exc:
        raise ValueError(str(exc)) from None
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    return (None if parser.divided_by_zero else value), parser.numbers, claimed


def _reference(nums: str | list | tuple, target: str | int) -> tuple[list[int], Fraction]:
    try:
        numbers = [int(n) for n in (nums.split(",") if isinstance(nums, str) else nums)]
        goal = Fraction(str(target).strip())
    except (TypeError, ValueError):
        raise ValueError(
            f"countdown reference needs 'nums' (list of ints or 'a,b,c') and a numeric "
            f"'target'; got nums={nums!r}, target={target!r}"
        ) from None
    return numbers, goal


def extract_countdown_answer(completion: str) -> str | None:
    """The expression a completion commits to (``extract.boxed_answer``)."""
    return boxed_answer(completion)


def grade_countdown(
    completion: str,
    *,
    nums: str | list | tuple,
    target: str | int,
    correct_score: float = 1.0,
    format_score: float = 0.1,
    no_answer_score: float = 0.0,
) -> GradeResult:
    """Correct iff the expression uses each of ``nums`` exactly once (as a multiset, no
    other numbers) and equals ``target`` exactly; a trailing ``= target`` is allowed.

    Scores follow d1's shaping: ``correct_score``; ``format_score`` for a well-formed
    but wrong expression; ``no_answer_score`` when there is no expression, it breaks the
    grammar or limits, or it divides by zero.
    """
    numbers, goal = _reference(nums, target)
    extracted = extract_countdown_answer(completion)
    if extracted is None:
        return GradeResult(False, no_answer_score, None, "no answer found")
    shown = extracted[: MAX_CHARS * 2]
    try:
        value, used, claimed = evaluate(extracted)
    except ValueError as exc:
        return GradeResult(False, no_answer_score, shown, str(exc))
    if value is None:
        return GradeResult(False, no_answer_score, shown, "division by zero")
    correct = Counter(used) == Counter(numbers) and value == goal and claimed in (None, goal)
    return GradeResult(correct, correct_score if correct else format_score, shown)
