"""A cheap exact path for MATH verdicts that math-verify would reach anyway.

math-verify parses both sides into sympy (tens of milliseconds an answer); most real
answers are plain numbers, fractions or simple surds. This module reads that small
LaTeX subset (numbers, ``\\frac``, ``\\sqrt``, ``\\pi``, ``+ - * /``, small integer
powers, parentheses) without sympy and decides only where the outcome is certain:

- identical normalised strings → equal;
- two exact rationals → equal iff they are the same fraction;
- two values far apart (relative difference above ``FAR``) → unequal.

Everything else (close but not identical values, ``%``, degrees, units, sets,
equations, intervals, anything outside the subset) is undecided and goes to
math-verify. The golden file and the real development set pin that no verdict
changes (tests/test_rewards_mathfast.py).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

#: math-verify compares numbers rounded to 6 decimals and unmask adds a 1e-5 relative
#: check; values further apart than this are unequal under both
FAR = 1e-3
_MAX_CHARS = 80
_MAX_EXPONENT = 64
_MAX_BITS = 4096
_SPACING = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\$", "$", "\\displaystyle")
# anything that math-verify reads with meaning this parser does not model
_KNOWN_COMMANDS = re.compile(r"\\(?:frac|sqrt|pi|cdot|times|div)(?![a-zA-Z])")
# after the known commands are removed: letters (variables, other commands, units),
# percent, degrees, equations, lists, sub/superscript bases, digits split by spaces
_UNDECIDABLE = re.compile(r"[a-zA-Z%°=,_\\\[\]]|\d\s+\d")
# spaces that do not separate two digits ("2 3" stays as written)
_SPACES = re.compile(r"(?<!\d)\s+|\s+(?!\d)")
# decorations dropped when reading a value for an "unequal" verdict only
_VARIABLE = re.compile(r"^\s*[a-zA-Z]\s*=")
_DOLLAR = re.compile(r"\\\$")
_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\{[a-zA-Z ]*\}(?:\^\{?[23]\}?)?\s*$")
_PERCENT = re.compile(r"\\?%\s*$")
_DEGREES = re.compile(r"(?:\^\{?\\circ\}?|°)\s*$")
_INFINITY = {"\\infty": [math.inf], "+\\infty": [math.inf], "-\\infty": [-math.inf]}
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,(?:\\!)?\d{3})+(?:\.\d+)?")
_TOKEN = re.compile(r"\d+\.\d*|\.\d+|\d+|\\[a-zA-Z]+|\S")


def normalise(text: str) -> str:
    """Spacing commands, ``$``, ``\\dfrac``/``\\tfrac`` and a final period removed."""
    for old in _SPACING:
        text = text.replace(old, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.strip().rstrip(".").strip()


class _Unsupported(Exception):
    """Outside the subset: leave the verdict to math-verify."""


class _Reader:
    """Recursive descent over the subset; values are ``Fraction`` (exact) or ``float``."""

    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN.findall(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _Unsupported
        self.pos += 1
        return token

    def read(self) -> Fraction | float:
        value = self.expr()
        if self.peek() is not None:
            raise _Unsupported
        return value

    def expr(self) -> Fraction | float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction | float:
        value = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "\\cdot", "\\times"):
                self.take()
                value = value * self.unary()
            elif token in ("/", "\\div"):
                self.take()
                value = _divide(value, self.unary())
            elif token in ("\\sqrt", "\\pi"):
                # implicit product 2\sqrt{3}, 3\pi; not before \frac (2\frac12 is a mixed
                # number), "(" or "{" (math-verify reads 4{10} otherwise)
                value = value * self.power()
            else:
                return value

    def unary(self) -> Fraction | float:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        return self.power()

    def power(self) -> Fraction | float:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.atom()
        if not (isinstance(exponent, Fraction) and exponent.denominator == 1 and abs(exponent) <= _MAX_EXPONENT):
            raise _Unsupported
        if base == 0 and exponent < 0:
            raise _Unsupported
        if isinstance(base, Fraction):
            size = max(base.numerator.bit_length(), base.denominator.bit_length())
            if size * abs(int(exponent)) > _MAX_BITS:  # ((9^{64})^{64})^{64} stays cheap
                raise _Unsupported
        return base ** int(exponent)

    def group(self) -> Fraction | float:
        """A braced argument, or a single digit/command as in ``\\frac12``."""
        if self.peek() == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        token = self.take()
        if token.isdigit():
            if len(token) > 1:  # \frac12: one digit per argument
                self.tokens[self.pos - 1 : self.pos] = [token[0], token[1:]]
            return Fraction(token[0])
        raise _Unsupported

    def atom(self) -> Fraction | float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            if len(token.replace(".", "")) > 15:
                raise _Unsupported
            return Fraction(token)
        if token in ("(", "{"):
            value = self.expr()
            self.take(")" if token == "(" else "}")
            return value
        if token == "\\frac":
            numerator = self.group()
            return _divide(numerator, self.group())
        if token == "\\sqrt":
            if self.peek() == "[":
                raise _Unsupported
            radicand = self.group()
            if radicand < 0:
                raise _Unsupported
            root = math.isqrt(radicand.numerator) if isinstance(radicand, Fraction) and radicand.denominator == 1 else None
            return Fraction(root) if root is not None and root * root == radicand else math.sqrt(radicand)
        if token == "\\pi":
            return math.pi
        raise _Unsupported


def _divide(a: Fraction | float, b: Fraction | float) -> Fraction | float:
    if b == 0:
        raise _Unsupported
    return a / b


def value_of(text: str) -> Fraction | float | None:
    """The number ``text`` denotes within the subset, else None."""
    if len(text) > _MAX_CHARS or _UNDECIDABLE.search(_KNOWN_COMMANDS.sub("#", text)):
        return None
    try:
        value = _Reader(text).read()
        float(value)
    except (_Unsupported, OverflowError, ValueError, ZeroDivisionError, RecursionError):
        return None
    return value


def _readings(text: str) -> list[float]:
    """Every value math-verify could give ``text`` once decorations are dropped: the
    number itself, and for ``%`` its hundredth, for degrees its radians. Empty when
    the text is more than a decorated number."""
    text = _UNIT.sub("", _DOLLAR.sub("", _VARIABLE.sub("", text)))
    percent, text = _strip(text, _PERCENT)
    degrees, text = _strip(text, _DEGREES)
    value = value_of(text)
    if value is None:
        return []
    readings = [float(value)]
    if percent:
        readings.append(float(value) / 100)
    if degrees:
        readings.append(float(value) * math.pi / 180)
    return readings


def _strip(text: str, pattern: re.Pattern) -> tuple[bool, str]:
    stripped = pattern.sub("", text)
    return stripped != text, stripped.strip()


def _far(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a != b
    gap = abs(a - b)
    return gap > 1e-6 and gap > FAR * max(abs(a), abs(b))


def quick_equal(gold: str, answer: str) -> bool | None:
    """True/False where the cheap path is certain of math-verify's verdict, else None.

    True needs identical normalised text or the same exact rational. False needs one
    side fully read as numbers (one, or a list, tuple, interval or set of them) and an
    element of the other side far from all of them: unequal however math-verify reads
    the brackets, units, ``%`` or degrees.
    """
    gold_n, answer_n = normalise(gold), normalise(answer)
    if not gold_n or not answer_n:
        return None
    if _SPACES.sub("", gold_n) == _SPACES.sub("", answer_n):
        return True
    g, a = value_of(gold_n), value_of(answer_n)
    if isinstance(g, Fraction) and isinstance(a, Fraction) and g == a:
        return True
    gold_elements, answer_elements = _elements(gold_n), _elements(answer_n)
    if _stray(gold_elements, answer_elements) or _stray(answer_elements, gold_elements):
        return False
    return None


def _elements(text: str) -> list[list[float] | None]:
    """Readings of each element of ``text`` read as a number or a bracketed/bare list of
    them (``\\infty`` included); an unreadable element is None. A thousands-separated
    number (``10,080``) is one element."""
    inner = text.strip()
    if _DECIMAL_COMMA.fullmatch(inner):
        return [None]  # 0,5 may be a decimal comma: leave it to math-verify
    if not _THOUSANDS.fullmatch(inner):
        if inner[:2] == "\\{" and inner[-2:] == "\\}":
            inner = inner[2:-2]
        elif inner[:1] in "([" and inner[-1:] in ")]" and "," in inner:
            inner = inner[1:-1]
    parts = [inner] if _THOUSANDS.fullmatch(inner) else inner.split(",")
    return [_INFINITY.get(part.strip().replace(" ", "")) or _readings(part.strip()) or None for part in parts]


def _stray(these: list[list[float] | None], others: list[list[float] | None]) -> bool:
    """Every element of ``others`` is read, and one element of ``these`` is far from all."""
    if not others or any(o is None for o in others):
        return False
    return any(
        t is not None and all(_far(x, y) for o in others for x in t for y in o)  # type: ignore[union-attr]
        for t in these
    )
