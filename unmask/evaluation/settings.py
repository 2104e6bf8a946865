"""Decoding settings of an evaluation and the grid ``unmask eval`` sweeps.

A setting's ``label`` is part of every sample's key, so two runs (or a resumed
run) match samples by it: it must name everything that changes the answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from unmask.errors import UserError

#: the published protocol: block 32, steps = gen_length / 2, greedy, low-confidence remasking
DEFAULT_BLOCK_LENGTH = 32
REMASKING = ("low_confidence", "random", "margin", "entropy", "rcr")


@dataclass(frozen=True)
class EvalSettings:
    """One decoding configuration: everything the sampler needs besides the prompts."""

    gen_length: int
    steps: int
    block_length: int
    temperature: float = 0.0
    remasking: str = "low_confidence"

    def __post_init__(self) -> None:
        if self.gen_length <= 0 or self.steps <= 0 or self.block_length <= 0:
            raise UserError(
                f"--gen-length, --steps and --block-length must be positive "
                f"(got {self.gen_length}, {self.steps}, {self.block_length})"
            )
        if self.gen_length % self.block_length:
            raise UserError(
                f"--block-length {self.block_length} must divide --gen-length {self.gen_length}"
            )
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0 (got {self.temperature})")
        if self.remasking not in REMASKING:
            raise UserError(f"--remasking '{self.remasking}': choose one of {', '.join(REMASKING)}")

    @property
    def label(self) -> str:
        return (
            f"len{self.gen_length}-steps{self.steps}-block{self.block_length}"
            f"-{self.remasking}-t{self.temperature:g}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_int_list(option: str, text: str | None) -> list[int] | None:
    """``"128,256"`` → ``[128, 256]``; None stays None; anything else names the option."""
    if text is None:
        return None
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} expects a comma list of integers, e.g. 128,256 (got '{text}')") from None
    if not values:
        raise UserError(f"{option} is empty; give e.g. 128,256")
    return values


def settings_grid(
    gen_lengths: list[int],
    steps: list[int] | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
) -> list[EvalSettings]:
    """Every (gen_length, steps) pair; steps default to gen_length / 2 per length.

    The block is ``min(block_length or 32, gen_length)`` so short answers (the tiny
    family) keep the protocol's block without exceeding the answer.
    """
    grid = []
    for length in gen_lengths:
        block = min(block_length or DEFAULT_BLOCK_LENGTH, length)
        for count in steps if steps is not None else [max(1, length // 2)]:
            grid.append(EvalSettings(length, count, block, temperature, remasking))
    return grid


#: default generation lengths per model family: the papers' middle length for the
#: 7–8B families; the tiny family's answers fit the default recipe's 16 tokens
DEFAULT_GEN_LENGTHS: dict[str, list[int]] = {"tiny": [16]}
PAPER_GEN_LENGTH = 256


def default_gen_lengths(family: str) -> list[int]:
    return DEFAULT_GEN_LENGTHS.get(family, [PAPER_GEN_LENGTH])
