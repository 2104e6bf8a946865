"""Reward functions by name or by ``package.module:function`` path, with weights."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from unmask.plugins import import_function

from .result import RewardConfigError

RewardFn = Callable[..., list]
_REGISTRY: dict[str, RewardFn] = {}


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a TRL-signature reward function to the registry under ``name``."""

    def add(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return add


def available() -> list[str]:
    """Registered reward names."""
    return sorted(_REGISTRY)


def load_reward(name_or_path: str) -> RewardFn:
    """A registered reward, or a user function given as ``package.module:function``."""
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    module_name, colon, attr = name_or_path.partition(":")
    if not colon or not module_name or not attr:
        raise RewardConfigError(
            f"unknown reward {name_or_path!r}: use one of {available()} "
            "or a dotted path 'package.module:function'"
        )
    return import_function(name_or_path, "reward", RewardConfigError)


@dataclass(frozen=True)
class RewardSpec:
    """One recipe entry: which reward, its weight in the total, and its options."""

    name: str
    weight: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RewardConfigError(f"reward name must be a non-empty string, got {self.name!r}")
        if (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, int | float)
            or not math.isfinite(self.weight)
        ):
            raise RewardConfigError(
                f"reward {self.name!r}: weight must be a finite number, got {self.weight!r}"
            )
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise RewardConfigError(
                f"reward {self.name!r}: kwargs must be a mapping of option names"
            )

    def load(self) -> RewardFn:
        """The function with this spec's options bound; options it cannot take are refused.

        Built-in rewards take ``**columns`` for dataset columns only, so their options are
        checked against their named parameters; a user function with ``**kwargs`` takes any.
        """
        fn = load_reward(self.name)
        params = list(inspect.signature(fn).parameters.values())
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        if self.name in _REGISTRY or not open_ended:
            allowed = {p.name for p in params[2:] if p.kind is not inspect.Parameter.VAR_KEYWORD}
            unknown = sorted(set(self.kwargs) - allowed)
            if unknown:
                raise RewardConfigError(
                    f"reward {self.name!r} takes no option(s) {unknown}; it takes {sorted(allowed)}"
                )
        return functools.partial(fn, **self.kwargs) if self.kwargs else fn
