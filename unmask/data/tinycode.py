"""A synthetic code task the tiny model can learn: one-line Python functions from a description.

A problem describes ``f`` in words ("x times 3 plus 4"); the answer is the function as a
lambda (``f=lambda x:x*3+4``), graded by five unit tests in the sandbox, as HumanEval is.
Like tiny Countdown, some demonstrations are careless (the second operation left
out), a habit unit-test rewards can remove. The 170 functions (five forms, a in 2..9, b in
1..9) are split once: every fifth is held out, so evaluation asks for functions never
seen in training, described with the same words.
"""

from __future__ import annotations

import random
from typing import Any

#: (description, code) per form
FORMS = (
    ("x plus {b}", "x+{b}"),
    ("x minus {b}", "x-{b}"),
    ("x times {a}", "x*{a}"),
    ("x times {a} plus {b}", "x*{a}+{b}"),
    ("x times {a} minus {b}", "x*{a}-{b}"),
)
TEST_INPUTS = (0, 1, 2, 5, 9)
EVAL_SEED = 3_141_592
#: with 0.3 (tiny Countdown's share) greedy decoding answered 94 % of held-out problems right
#: after SFT, leaving RL almost nothing to remove; at 0.6 the careless answer is the habit
CARELESS_FRACTION = 0.6
TIMEOUT_S = 2.0


def functions() -> list[tuple[int, int, int]]:
    """Every (form, a, b) once, in a fixed order."""
    out = []
    for form, (_, code) in enumerate(FORMS):
        for a in range(2, 10) if "{a}" in code else (1,):
            for b in range(1, 10) if "{b}" in code else (0,):
                out.append((form, a, b))
    return out


def split_functions(split: str) -> list[tuple[int, int, int]]:
    """Held out ("test"): every fifth function; "train": the rest."""
    every = functions()
    return [f for i, f in enumerate(every) if (i % 5 == 0) == (split == "test")]


def value(form: int, a: int, b: int, x: int) -> int:
    """f(x) of function (form, a, b)."""
    return (x + b, x - b, x * a, x * a + b, x * a - b)[form]


def row(form: int, a: int, b: int, careless: bool = False) -> dict[str, Any]:
    """One problem: prompt fields, the demonstrated ``solution``, and the code grader's references."""
    description, code = FORMS[form]
    shown = f"x*{a}" if careless and form >= 3 else code.format(a=a, b=b)  # careless: drop "+b" / "-b"
    tests = [f"assert f({x}) == {value(form, a, b, x)}" for x in TEST_INPUTS]
    return {
        "description": description.format(a=a, b=b), "solution": f"f=lambda x:{shown}",
        "prefix": "", "tests": tests, "entry_point": "f", "setup": "", "timeout_s": TIMEOUT_S,
    }  # fmt: skip


def generate(n: int, split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """``n`` problems of ``split`` drawn with ``seed`` (held-out ones with ``EVAL_SEED``);
    training demonstrations are careless in ``CARELESS_FRACTION`` of rows."""
    pool = split_functions(split)
    rng = random.Random(EVAL_SEED if split == "test" else seed)
    return [row(*rng.choice(pool), careless=split != "test" and rng.random() < CARELESS_FRACTION) for _ in range(n)]
