"""Finds the decoding rule that the sampler settings select, among every module of this folder.

Each module of ``unmask.rollouts.rules`` is imported once, so a rule added as a new
file is found without editing anything else; exactly one rule's ``build`` must
accept the (already validated) settings.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from unmask.rollouts.rules.base import DecodingRule, RuleSettings


@cache
def rule_classes() -> tuple[type[DecodingRule], ...]:
    """Every ``DecodingRule`` subclass defined in a module of this folder, in a fixed order."""
    package = importlib.import_module(__name__.rpartition(".")[0])
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [value for value in vars(module).values() if isinstance(value, type) and issubclass(value, DecodingRule)
                  and value.__module__ == module.__name__ and not inspect.isabstract(value)]
    return tuple(found)


def rule_for(settings: RuleSettings) -> DecodingRule:
    """The one rule that ``settings`` select."""
    rules = [rule for cls in rule_classes() if (rule := cls.build(settings)) is not None]
    if len(rules) != 1:
        names = ", ".join(type(rule).__name__ for rule in rules) or "none"
        raise ValueError(f"the sampler settings must select exactly one decoding rule, they select: {names}")
    return rules[0]
