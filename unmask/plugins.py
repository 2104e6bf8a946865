"""User functions a recipe names as ``package.module:function`` (reward functions, SFT row formatting)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from unmask.errors import UserError


def import_function(spec: str, what: str, error: type[UserError] = UserError) -> Callable[..., Any]:
    """The function ``spec`` names; any mistake is one ``error`` line naming ``what`` it was for."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise error(f"{what} {spec!r}: expected a dotted path 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{what} {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn
