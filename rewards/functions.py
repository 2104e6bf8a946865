"""Built-in reward functions with TRL's signature ``fn(prompts, completions, **columns)``.

Task rewards read their reference from dataset columns (math/gsm8k ``answer``;
countdown ``nums`` + ``target``; sudoku ``puzzle`` + ``solution``; code ``prefix``,
``tests``, ``entry_point``, ``setup``, ``timeout_s``); options such as Countdown's shaping
scores or code's all-or-nothing switch come from the recipe through ``RewardSpec.kwargs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import formats
from .code import format_score
from .graders import grade
from .mathgrade import quick_grade_math
from .registry import register
from .result import GradeResult, RewardConfigError

#: built-in rewards whose work per item is a bounded string scan: no worker needed
BOUNDED_REWARDS = ("format_strict", "format_soft", "boxed", "int_answer", "xmlcount", "code_format")

_TASK_COLUMNS = {
    "math": ("answer",),
    "gsm8k": ("answer",),
    "countdown": ("nums", "target"),
    "sudoku": ("puzzle", "solution"),
    "code": ("prefix", "tests", "entry_point", "setup", "timeout_s"),
}
#: built-in rewards that are one task grader each (the runner reads their verdicts)
TASK_REWARDS = tuple(_TASK_COLUMNS)


def completion_text(completion: Any) -> str:
    """Plain text of a completion given as a string or as TRL conversational messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(m, Mapping) for m in completion):
        return "".join(str(m.get("content", "")) for m in completion)
    raise TypeError(
        "a completion must be a str or a list of {'role', 'content'} messages, "
        f"got {type(completion).__name__}"
    )


def _reference_rows(task: str, n: int, columns: Mapping[str, Sequence]) -> list[dict]:
    needed = _TASK_COLUMNS[task]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise RewardConfigError(
            f"reward {task!r} needs dataset column(s) {missing}; the batch has {sorted(columns)}"
        )
    for name in needed:
        if len(columns[name]) != n:
            raise RewardConfigError(
                f"reward {task!r}: column {name!r} has {len(columns[name])} values for {n} completions"
            )
    return [{name: columns[name][i] for name in needed} for i in range(n)]


def _grade_all(task: str, completions: Sequence, columns: Mapping, **options: Any) -> list[float]:
    rows = _reference_rows(task, len(completions), columns)
    return [
        grade(task, completion_text(c), **row, **options).score
        for c, row in zip(completions, rows, strict=True)
    ]


def grade_one(task: str, completion: Any, columns: Mapping[str, Any], **options: Any) -> GradeResult:
    """The full verdict behind the ``task`` reward's score for one item (the runner reads
    its ``error`` to report why completions found no answer)."""
    (row,) = _reference_rows(task, 1, {k: [v] for k, v in columns.items()})
    return grade(task, completion_text(completion), **row, **options)


def quick_one(task: str, completion: Any, columns: Mapping[str, Any], **options: Any) -> GradeResult | None:
    """``grade_one`` where it is cheap and bounded (every task but MATH and code always; MATH
    when ``quick_grade_math`` decides without sympy), else None: the item needs a worker."""
    if task == "code":
        return None
    if task != "math":
        return grade_one(task, completion, columns, **options)
    (row,) = _reference_rows(task, 1, {k: [v] for k, v in columns.items()})
    return quick_grade_math(completion_text(completion), answer=row["answer"])


def _task_reward(task: str) -> None:
    def reward(prompts: Sequence, completions: Sequence, **columns: Any) -> list[float]:
        return _grade_all(task, completions, columns)

    reward.__name__ = f"{task}_reward"
    reward.__doc__ = f"Score of the {task!r} grader for each completion (see grade())."
    register(task)(reward)


for _task in ("math", "gsm8k", "sudoku"):
    _task_reward(_task)


@register("countdown")
def countdown_reward(
    prompts: Sequence,
    completions: Sequence,
    correct_score: float = 1.0,
    format_score: float = 0.1,
    no_answer_score: float = 0.0,
    **columns: Any,
) -> list[float]:
    """Countdown score with recipe-set shaping (d1: 1.0 / 0.1 / 0.0)."""
    return _grade_all(
        "countdown",
        completions,
        columns,
        correct_score=correct_score,
        format_score=format_score,
        no_answer_score=no_answer_score,
    )


def _format_reward(name: str, check: Callable[[str], bool]) -> None:
    def reward(prompts: Sequence, completions: Sequence, **_columns: Any) -> list[float]:
        return [float(check(completion_text(c))) for c in completions]

    reward.__name__ = f"{name}_reward"
    reward.__doc__ = f"1.0 where {check.__name__}() holds, else 0.0."
    register(name)(reward)


_format_reward("format_strict", formats.strict_format)
_format_reward("format_soft", formats.soft_format)
_format_reward("boxed", formats.has_boxed)
_format_reward("int_answer", formats.int_answer)


@register("xmlcount")
def xmlcount_reward(
    prompts: Sequence,
    completions: Sequence,
    per_tag: float = 0.125,
    trailing_penalty: float = 0.001,
    **_columns: Any,
) -> list[float]:
    """d1's tag-count shaping (see formats.xml_count)."""
    return [formats.xml_count(completion_text(c), per_tag, trailing_penalty) for c in completions]


@register("code")
def code_reward(
    prompts: Sequence,
    completions: Sequence,
    binary: bool = False,
    memory_mb: int = 1024,
    **columns: Any,
) -> list[float]:
    """Share of the task's unit tests the extracted program passes in the sandbox
    (``binary``: 1.0 only when all pass, DiffuCoder's ``binary_code``)."""
    return _grade_all("code", completions, columns, binary=binary, memory_mb=memory_mb)


@register("code_format")
def code_format_reward(prompts: Sequence, completions: Sequence, **_columns: Any) -> list[float]:
    """DiffuCoder's format term (see code.format_score): 1.0 / 0.5 / 0.0."""
    return [format_score(completion_text(c)) for c in completions]
