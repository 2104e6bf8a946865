"""GSM8K grading: exact numeric comparison of the final number with the ``####`` gold."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .extract import answer_tag, first_number, last_boxed, last_number
from .result import GradeResult

# Longer "numbers" are not answers; refusing them keeps Decimal work bounded.
MAX_NUMBER_CHARS = 64


def gsm8k_gold(answer: str | int | float) -> str:
    """The gold number of a GSM8K ``answer`` field (text after ``#### ``), or the value
    itself when the dataset already stores a bare number."""
    text = str(answer)
    marker = text.rfind("####")
    return (text[marker + 4 :] if marker >= 0 else text).strip().replace(",", "")


def to_decimal(number: str) -> Decimal | None:
    """Exact value of a written number (``1,000`` = ``1000.0``), None if unreadable."""
    cleaned = number.replace(",", "").replace("$", "").rstrip("%").strip()
    if not cleaned or len(cleaned) > MAX_NUMBER_CHARS:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _boxed_number(content: str) -> str | None:
    """The number a box states: the first after its last ``=`` that has one, so that
    ``\\boxed{9 \\times 2 = 18}`` is 18 and ``\\boxed{20 \\text{ m}^2}`` is 20."""
    for part in reversed(content.split("=")):
        found = first_number(part)
        if found is not None:
            return found
    return None


def extract_gsm8k_answer(completion: str) -> str | None:
    """The number a GSM8K completion commits to.

    The last box's number, else the last number of the ``<answer>`` block, else the last
    number written from the answer section on (the last ``<answer>`` or ``\\boxed``, so an
    unclosed ``\\boxed{36`` still counts); with no answer section at all, the last number
    of the text. An answer section that is present but empty (``\\boxed{}``,
    ``\\boxed{...}``) is no answer: the reasoning's numbers are not read for it.
    """
    box = last_boxed(completion)
    found = _boxed_number(box) if box is not None else None
    if found is None:
        block = answer_tag(completion)
        found = last_number(block) if block is not None else None
    if found is None:
        start = max(completion.rfind("<answer>"), completion.rfind("\\boxed"))
        found = last_number(completion[max(start, 0) :])
    return found


def grade_gsm8k(completion: str, *, answer: str | int | float) -> GradeResult:
    """Grade against a GSM8K ``answer`` (full solution text with ``#### n``, or ``n``)."""
    gold = to_decimal(gsm8k_gold(answer))
    if gold is None:
        raise ValueError(
            f"GSM8K reference answer has no number after '####': {str(answer)[-80:]!r}"
        )
    extracted = extract_gsm8k_answer(completion)
    if extracted is None:
        return GradeResult(False, 0.0, None, "no number found")
    value = to_decimal(extracted)
    if value is None:
        return GradeResult(False, 0.0, extracted[:MAX_NUMBER_CHARS], "number too long")
    correct = value == gold
    return GradeResult(correct, float(correct), extracted)
