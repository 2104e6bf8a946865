"""Decoding settings of an evaluation and the grid ``unmask eval`` sweeps.

A setting's ``label`` is part of every sample's key, so two runs (or a resumed
run) match samples by it: it must name everything that changes the answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from unmask.errors import UserError
from unmask.rollouts.options import CACHE_MODES, REMASKING

#: the published protocol: block 32, steps = gen_length / 2, greedy, low-confidence remasking
DEFAULT_BLOCK_LENGTH = 32


@dataclass(frozen=True)
class EvalSettings:
    """One decoding configuration: everything the sampler needs besides the prompts."""

    gen_length: int
    steps: int
    block_length: int
    temperature: float = 0.0
    remasking: str = "low_confidence"
    #: KV cache of block decoding (approximate unless "none"), docs/sampling.md §5
    cache: str = "none"
    #: Fast-dLLM parallel decoding: commit every position above this confidence (§4)
    threshold: float | None = None
    #: end a row once its first EOS has no masked position before it (its tail becomes EOS)
    early_exit: bool = False

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
        if self.cache not in CACHE_MODES:
            raise UserError(f"--cache '{self.cache}': choose from {', '.join(CACHE_MODES)}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1] (got {self.threshold})")
        if self.threshold is not None and self.remasking == "rcr":
            raise UserError("--threshold and --remasking rcr exclude each other: drop one of them")
        if self.early_exit and self.remasking == "rcr":
            raise UserError("--early-exit needs committed tokens to stay: it cannot be used with --remasking rcr")

    @property
    def label(self) -> str:
        """Exact decoding keeps its historical label; speed-ups that change answers add theirs."""
        label = (
            f"len{self.gen_length}-steps{self.steps}-block{self.block_length}"
            f"-{self.remasking}-t{self.temperature:g}"
        )
        if self.cache != "none":
            label += f"-{self.cache}cache"
        if self.threshold is not None:
            label += f"-th{self.threshold:g}"
        if self.early_exit:
            label += "-early_exit"
        return label

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


def parse_caches(text: str | None) -> list[str]:
    """``"none,dual"`` → ``["none", "dual"]`` (validated by ``EvalSettings``); None → no cache."""
    caches = [part.strip() for part in (text or "none").split(",") if part.strip()]
    if not caches:
        raise UserError(f"--cache is empty; give e.g. none,dual (choose from {', '.join(CACHE_MODES)})")
    return caches


def parse_thresholds(text: str | None) -> list[float | None]:
    """``"0.9,0.7"`` → ``[0.9, 0.7]``; None → ``[None]`` (the step schedule, no threshold)."""
    if text is None:
        return [None]
    try:
        values: list[float | None] = [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--threshold expects a comma list of numbers in (0, 1], e.g. 0.9 (got '{text}')") from None
    if not values:
        raise UserError("--threshold is empty; give e.g. 0.9")
    return values


def settings_grid(
    gen_lengths: list[int],
    steps: list[int] | None = None,
    block_length: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    caches: Sequence[str] = ("none",),
    thresholds: Sequence[float | None] = (None,),
    early_exit: bool = False,
) -> list[EvalSettings]:
    """Every (gen_length, steps, cache, threshold) combination; steps default to gen_length / 2.

    The block is ``min(block_length or 32, gen_length)`` so short answers (the tiny
    family) keep the protocol's block without exceeding the answer.
    """
    grid = []
    for length in gen_lengths:
        block = min(block_length or DEFAULT_BLOCK_LENGTH, length)
        for count in steps if steps is not None else [max(1, length // 2)]:
            for cache in caches:
                for threshold in thresholds:
                    grid.append(EvalSettings(length, count, block, temperature, remasking, cache, threshold, early_exit))
    return grid


#: default generation lengths per model family: the papers' middle length for the
#: 7–8B families; the tiny family's answers fit the default recipe's 16 tokens
DEFAULT_GEN_LENGTHS: dict[str, list[int]] = {"tiny": [16]}
PAPER_GEN_LENGTH = 256


def default_gen_lengths(family: str) -> list[int]:
    return DEFAULT_GEN_LENGTHS.get(family, [PAPER_GEN_LENGTH])
