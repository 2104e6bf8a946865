"""Decoding settings of an evaluation and the grid ``unmask eval`` sweeps.

A setting's ``label`` is part of every sample's key, so two runs (or a resumed
run) match samples by it: it must name everything that changes the answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, ValidationError

from unmask.errors import UserError
from unmask.rollouts.options import CACHE_MODES
from unmask.rollouts.sampler_config import SamplerConfig, cli_label, one_line

#: the published protocol: block 32, steps = gen_length / 2, greedy, low-confidence remasking
DEFAULT_BLOCK_LENGTH = 32
#: the historical order of positional arguments (older call sites and scripts pass them so)
_POSITIONAL = ("gen_length", "steps", "block_length", "temperature", "remasking", "cache", "threshold", "early_exit")
#: settings that change answers beyond the historical label (partial_head is exact, so it is not named)
_LABELLED = ("cfg_scale", "dynamic_threshold", "schedule", "schedule_k", "confidence", "cache_refresh")


class EvalSettings(SamplerConfig):
    """One decoding configuration of an evaluation: a ``SamplerConfig`` whose mistakes name
    ``unmask eval``'s flags, hashable, with the label its samples are keyed by."""

    model_config = ConfigDict(frozen=True)

    def __init__(self, *args: Any, **settings: Any) -> None:
        settings.update(zip(_POSITIONAL, args, strict=False))
        try:
            super().__init__(**settings)
        except ValidationError as exc:
            raise UserError(one_line(exc, cli_label)) from None

    @classmethod
    def own_label(cls, field: str) -> str:
        return cli_label(field)

    @property
    def label(self) -> str:
        """Exact decoding keeps its historical label; settings that change answers add theirs."""
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
        for name in _LABELLED:
            value = getattr(self, name)
            if value != SamplerConfig.model_fields[name].default:
                label += f"-{name}{value:g}" if isinstance(value, float) else f"-{name}_{value}"
        return label

    def as_dict(self) -> dict[str, Any]:
        return self.generate_kwargs()


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
    caches: Sequence[str] = ("none",),
    thresholds: Sequence[float | None] = (None,),
    **settings: Any,
) -> list[EvalSettings]:
    """Every (gen_length, steps, cache, threshold) combination; steps default to gen_length / 2;
    ``settings`` are the other ``SamplerConfig`` fields, the same in every cell (None: the default).

    The block is ``min(block_length or 32, gen_length)`` so short answers (the tiny
    family) keep the protocol's block without exceeding the answer.
    """
    settings = {name: value for name, value in settings.items() if value is not None}
    grid = []
    for length in gen_lengths:
        block = min(block_length or DEFAULT_BLOCK_LENGTH, length)
        for count in steps if steps is not None else [max(1, length // 2)]:
            for cache in caches:
                for threshold in thresholds:
                    grid.append(EvalSettings(length, count, block, cache=cache, threshold=threshold, **settings))
    return grid


#: default generation lengths per model family: the papers' middle length for the
#: 7–8B families; the tiny family's answers fit the default recipe's 16 tokens
DEFAULT_GEN_LENGTHS: dict[str, list[int]] = {"tiny": [16]}
PAPER_GEN_LENGTH = 256


def default_gen_lengths(family: str) -> list[int]:
    return DEFAULT_GEN_LENGTHS.get(family, [PAPER_GEN_LENGTH])
