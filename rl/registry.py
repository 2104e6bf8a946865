"""Named parts, each added where it is defined by a decorator, with traits that validation reads.

The RL objectives are compositions of parts of five kinds (advantages, likelihood
estimators, policy losses, KL forms, loss aggregations; docs/objectives.md). Each kind
has one ``Registry``; ``@REGISTRY.register("name", trait=value)`` adds a part, so a new
part is one decorated function in one file and a recipe can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Parts of one ``kind`` by name, plus each part's traits (level, needs, …)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._parts: dict[str, T] = {}
        self._traits: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **traits: Any) -> Callable[[T], T]:
        def add(part: T) -> T:
            if name in self._parts:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._parts[name], self._traits[name] = part, traits
            return part

        return add

    def __getitem__(self, name: str) -> T:
        """The part; an unknown name is a one-line ``ValueError`` listing the known ones."""
        if name not in self._parts:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._parts)}")
        return self._parts[name]

    def trait(self, name: str, trait: str, default: Any = None) -> Any:
        self[name]  # noqa: B018  (the unknown-name error)
        return self._traits[name].get(trait, default)

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)
