"""Errors a user can cause and fix: the CLI prints them as one line, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a recipe, a path, data or a plug-in: the message says what to change."""


class RecipeError(UserError):
    """A recipe file or override that does not validate."""
