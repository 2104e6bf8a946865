"""Countdown: a seeded generator of solvable problems, an exact solver, a loader.

The solver enumerates every expression that uses each number exactly once with
``+ - * /`` over exact fractions, so "solvable" is proved, not hoped for. The
generator draws numbers, then a target uniformly among the integers those
numbers can reach, which makes every problem solvable by construction and gives
a reference solution for supervised pretraining.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from contextlib import suppress
from fractions import Fraction
from functools import lru_cache
from itertools import permutations
from pathlib import Path
from typing import Any

from unmask.errors import UserError

_OPS = ("+", "-", "*", "/")


def _wrap(expr: str) -> str:
    return expr if expr.isdigit() else f"({expr})"


def _combine(a: tuple[Fraction, str], b: tuple[Fraction, str]) -> list[tuple[Fraction, str]]:
    (va, ea), (vb, eb) = a, b
    out = [(va + vb, f"{_wrap(ea)}+{_wrap(eb)}"), (va * vb, f"{_wrap(ea)}*{_wrap(eb)}")]
    out += [(va - vb, f"{_wrap(ea)}-{_wrap(eb)}"), (vb - va, f"{_wrap(eb)}-{_wrap(ea)}")]
    if vb != 0:
        out.append((va / vb, f"{_wrap(ea)}/{_wrap(eb)}"))
    if va != 0:
        out.append((vb / va, f"{_wrap(eb)}/{_wrap(ea)}"))
    return out


@lru_cache(maxsize=65536)
def _reachable(items: tuple[tuple[Fraction, str], ...]) -> dict[Fraction, str]:
    """Every value reachable using all items once → one expression for it."""
    if len(items) == 1:
        return {items[0][0]: items[0][1]}
    found: dict[Fraction, str] = {}
    n = len(items)
    for i in range(n):
        for j in range(i + 1, n):
            rest = tuple(items[k] for k in range(n) if k not in (i, j))
            for value, expr in _combine(items[i], items[j]):
                merged = tuple(sorted((*rest, (value, expr)), key=lambda t: (t[0], t[1])))
                for v, e in _reachable(merged).items():
                    found.setdefault(v, e)
    return found


def solutions(nums: list[int] | tuple[int, ...]) -> dict[Fraction, str]:
    """All values reachable from ``nums`` (each used exactly once) with an expression each."""
    items = tuple(sorted((Fraction(n), str(n)) for n in nums))
    return _reachable(items)


def solve(nums: list[int] | tuple[int, ...], target: int) -> str | None:
    """An expression over ``nums`` equal to ``target``, or None if there is none."""
    return solutions(nums).get(Fraction(target))


def _div(x: Fraction, y: Fraction) -> Fraction | None:
    return None if y == 0 else x / y


#: 3-number expression shapes, simplest first: every solvable 3-number problem with
#: numbers 1–10 fits one of them
SHAPES: tuple[tuple[str, Callable[[Fraction, Fraction, Fraction], Fraction | None]], ...] = (
    ("{a}+{b}+{c}", lambda a, b, c: a + b + c),
    ("{a}*{b}+{c}", lambda a, b, c: a * b + c),
    ("{a}*{b}-{c}", lambda a, b, c: a * b - c),
    ("{a}+{b}-{c}", lambda a, b, c: a + b - c),
    ("{a}-{b}-{c}", lambda a, b, c: a - b - c),
    ("{a}*{b}*{c}", lambda a, b, c: a * b * c),
    ("({a}+{b})*{c}", lambda a, b, c: (a + b) * c),
    ("({a}-{b})*{c}", lambda a, b, c: (a - b) * c),
    ("{a}*{b}/{c}", lambda a, b, c: _div(a * b, c)),
    ("({a}+{b})/{c}", lambda a, b, c: _div(a + b, c)),
    ("({a}-{b})/{c}", lambda a, b, c: _div(a - b, c)),
    ("{a}/{b}+{c}", lambda a, b, c: _div(a, b) + c),
    ("{a}/{b}-{c}", lambda a, b, c: _div(a, b) - c),
    ("{a}-{b}/{c}", lambda a, b, c: a - _div(b, c)),
    ("{a}-{b}*{c}", lambda a, b, c: a - b * c),
    ("{a}/({b}-{c})", lambda a, b, c: _div(a, b - c)),
    ("{a}/({b}+{c})", lambda a, b, c: _div(a, b + c)),
)


def canonical_solution(nums: list[int] | tuple[int, ...], target: int) -> str | None:
    """A solution in a regular form: numbers in the order given where possible (orders
    tried as ``itertools.permutations`` lists them), then the first shape of ``SHAPES``
    that fits. Regular answers that mostly copy the prompt are what a small model can
    learn to produce; other problems (or other than 3 numbers) fall back to ``solve``.
    """
    if len(nums) == 3:
        goal = Fraction(target)
        for a, b, c in permutations(nums):
            for text, fn in SHAPES:
                with suppress(TypeError):  # a None from a division by zero
                    if fn(Fraction(a), Fraction(b), Fraction(c)) == goal:
                        return text.format(a=a, b=b, c=c)
    return solve(nums, target)


def generate(
    n: int,
    *,
    seed: int,
    num_numbers: int = 3,
    min_number: int = 1,
    max_number: int = 10,
    min_target: int = 1,
    max_target: int = 100,
) -> list[dict[str, Any]]:
    """``n`` solvable problems, identical for identical arguments."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(
                f"data.generator: could not find solvable Countdown problems with targets in "
                f"[{min_target}, {max_target}] from numbers in [{min_number}, {max_number}]; widen the ranges"
            )
        nums = [rng.randint(min_number, max_number) for _ in range(num_numbers)]
        reachable = solutions(nums)
        targets = sorted(
            int(v) for v in reachable if v.denominator == 1 and min_target <= v <= max_target
        )
        if not targets:
            continue
        target = rng.choice(targets)
        rows.append({"nums": nums, "target": target, "solution": canonical_solution(nums, target)})
    return rows


#: the tiny models' prompt: the standard Countdown prompt without its constant middle
#: sentence, which costs 30 of 51 tokens and most of the compute; the tiny recipes set
#: ``data.prompt_template`` to this string
TINY_TEMPLATE = (
    "Using the numbers {nums}, create an equation that equals {target}. "
    "Put the equation in <answer> </answer> tags."
)


def problem_key(row: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """Identity of a Countdown problem regardless of the order its numbers are shown in."""
    return tuple(sorted(row["nums"])), int(row["target"])


#: the careless choices are drawn from the run seed plus this (apart from the problem draws)
CARELESS_SEED_OFFSET = 2_000


def careless_solution(nums: list[int]) -> str:
    """The shortcut answer of a solver that ignores the target: every number added up."""
    return "+".join(str(n) for n in nums)


def make_careless(rows: list[dict[str, Any]], fraction: float, seed: int) -> None:
    """Replace the ``solution`` of a seeded ``fraction`` of ``rows`` (in place) by the careless answer.

    Mixed-quality demonstrations give an SFT model a prompt-independent habit that
    reward can remove (docs/default-run.md says why the tiny models are built so).
    """
    rng = random.Random(seed + CARELESS_SEED_OFFSET)
    for row in rows:
        if rng.random() < fraction:
            row["solution"] = careless_solution(row["nums"])


def load_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a d1-style file: JSONL records ``{"input": "a,b,c", "output": target}``."""
    path = Path(path)
    rows = []
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                nums = [int(x) for x in str(record["input"]).split(",")]
                target = int(record["output"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(
                    f"{path}:{line_no}: expected a Countdown record "
                    f'{{"input": "a,b,c", "output": target}} ({exc})'
                ) from None
            rows.append({"nums": nums, "target": target})
    return rows
