"""``new:FAMILY``: a freshly initialised model instead of a checkpoint, for training from scratch.

A recipe names it as ``model.name_or_path: new:tiny-block`` with the architecture in
``model.config``; the weights are drawn from the recipe's seed. Only the tiny
families can be built this way: their tokenizer is built in code, while a real
family's vocabulary lives in a checkpoint directory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from unmask.models.base import DiffusionLM
from unmask.models.native import CheckpointError
from unmask.models.tiny import TinyLM, fresh_model, user_config
from unmask.models.tiny_block import TinyBlockLM
from unmask.models.tiny_dgemma import TinyDiffusionGemma

PREFIX = "new:"
#: family name after ``new:`` → its model class
BUILDABLE: dict[str, type[DiffusionLM]] = {cls.family: cls for cls in (TinyLM, TinyBlockLM, TinyDiffusionGemma)}


def is_new(name_or_path: str) -> bool:
    return str(name_or_path).startswith(PREFIX)


def buildable_class(name_or_path: str) -> type[DiffusionLM]:
    """The class ``new:FAMILY`` names (one clear line when it names none)."""
    family = str(name_or_path).removeprefix(PREFIX)
    if family not in BUILDABLE:
        choices = ", ".join(PREFIX + name for name in BUILDABLE)
        raise CheckpointError(f"model.name_or_path: {name_or_path!r} names no family built from scratch; use {choices}")
    return BUILDABLE[family]


def check_new(name_or_path: str, config: dict[str, Any] | None) -> None:
    """Validate ``new:FAMILY`` and its ``model.config`` keys without building any weights."""
    cls = buildable_class(name_or_path)
    user_config(cls.config_class, config)


def new_model_factory(name_or_path: str, config: dict[str, Any] | None, seed: int) -> Callable[[], DiffusionLM]:
    """A picklable builder of the fresh model (weights from ``seed``)."""
    return functools.partial(fresh_model, buildable_class(name_or_path), dict(config or {}), seed)
