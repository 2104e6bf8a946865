"""Format checks on the ``<reasoning>...</reasoning><answer>...</answer>`` layout.

These are plain string scans rather than regexes with lazy ``.*?`` so that megabyte
completions cost linear time. ``xml_count`` reproduces d1's GSM8K shaping term.
"""

from __future__ import annotations

from .extract import answer_tag, last_boxed

_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


def _each_tag_once(text: str) -> bool:
    return all(text.count(tag) == 1 for tag in _TAGS)


def strict_format(text: str) -> bool:
    """Exactly ``<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>`` (one final
    newline allowed), each tag once."""
    body = text[:-1] if text.endswith("\n") else text
    return (
        _each_tag_once(text)
        and body.startswith("<reasoning>\n")
        and body.endswith("\n</answer>")
        and "\n</reasoning>\n<answer>\n" in body
    )


def soft_format(text: str) -> bool:
    """Starts with ``<reasoning>``, then ``</reasoning>``, only whitespace, ``<answer>``,
    ``</answer>``; each tag once; anything may follow."""
    if not _each_tag_once(text) or not text.lstrip().startswith("<reasoning>"):
        return False
    close_reasoning = text.find("</reasoning>")
    open_answer = text.find("<answer>")
    between = text[close_reasoning + len("</reasoning>") : open_answer]
    return close_reasoning < open_answer < text.find("</answer>") and not between.strip()


def xml_count(text: str, per_tag: float = 0.125, trailing_penalty: float = 0.001) -> float:
    """d1's tag-count shaping: ``per_tag`` for each of the four newline-delimited tags
    present exactly once, minus ``trailing_penalty`` per character after the answer."""
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += per_tag
    if text.count("\n</reasoning>\n") == 1:
        score += per_tag
    if text.count("\n<answer>\n") == 1:
        score += per_tag - trailing_penalty * len(text.split("\n</answer>\n")[-1])
    if text.count("\n</answer>") == 1:
        score += per_tag - trailing_penalty * (len(text.split("\n</answer>")[-1]) - 1)
    return score


def has_boxed(text: str) -> bool:
    """A complete ``\\boxed{…}`` is present."""
    return last_boxed(text) is not None


def int_answer(text: str) -> bool:
    """The ``<answer>`` block holds a bare non-negative integer (d1's integer reward)."""
    block = answer_tag(text)
    return block is not None and block.isascii() and block.isdigit()
