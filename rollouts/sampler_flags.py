"""Command-line flags of the sampler settings, made from ``SamplerConfig``'s fields.

``unmask sample`` and ``unmask eval`` add them here, so a new setting reaches the command line
with its help, and its rules stay ``SamplerConfig``'s: argparse only converts numbers, the
choices and ranges are checked by ``SamplerConfig.checked(cli_label, ...)`` in one line.
Every flag defaults to None (not given), so a command can fall back to a checkpoint's
``generation_config.json`` before ``SamplerConfig``'s own defaults.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Collection
from typing import Any

from unmask.rollouts.sampler_config import CHOICES, SamplerConfig, cli_label

#: the settings ``unmask eval`` takes as comma lists and sweeps (it adds those flags itself)
GRID_SETTINGS = ("gen_length", "steps", "cache", "threshold")


def _argument(name: str) -> dict[str, Any]:
    field = SamplerConfig.model_fields[name]
    help_text = (field.description or "").replace("%", "%%")
    if field.annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "default": None, "help": help_text}
    if name in CHOICES:
        return {"default": None, "metavar": "NAME", "help": f"{help_text} One of: {', '.join(CHOICES[name])}."}
    kinds = typing.get_args(field.annotation) or (field.annotation,)
    number = next((k for k in kinds if k in (int, float)), str)
    default = "" if field.is_required() or field.default is None else f" (default {field.default})"
    return {"type": number, "default": None, "help": help_text + default}


def add_sampler_flags(parser: argparse.ArgumentParser, skip: Collection[str] = ()) -> None:
    """One ``--flag`` per sampler setting not in ``skip`` (a command that takes e.g. a list of lengths adds its own)."""
    for name in SamplerConfig.model_fields:
        if name not in skip:
            parser.add_argument(cli_label(name), **_argument(name))


def given_settings(args: argparse.Namespace, skip: Collection[str] = ()) -> dict[str, Any]:
    """The sampler settings given on the command line, but those in ``skip`` (flags left out are absent)."""
    return {
        name: value for name in SamplerConfig.model_fields
        if name not in skip and (value := getattr(args, name, None)) is not None
    }
