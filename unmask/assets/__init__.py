"""Checkpoints shipped inside the package, addressed as ``builtin:NAME`` in recipes and the CLI."""

from __future__ import annotations

from pathlib import Path

from unmask.errors import UserError

PREFIX = "builtin:"
ROOT = Path(__file__).resolve().parent
#: shipped checkpoint → the make target that rebuilds it
BUILD_TARGETS = {"tiny-countdown": "tiny-model", "tiny-countdown-block": "tiny-block-model"}


def available() -> list[str]:
    """Names of the shipped checkpoints (directories holding a ``config.json``)."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())


def builtin_path(name: str) -> Path:
    """Directory of the shipped checkpoint ``name`` (with or without the ``builtin:`` prefix)."""
    name = name.removeprefix(PREFIX)
    path = ROOT / name
    if not (path / "config.json").is_file():
        shipped = ", ".join(f"{PREFIX}{n}" for n in available()) or "none"
        target = BUILD_TARGETS.get(name)
        hint = f" (run `make {target}` to build it)" if target else ""
        raise UserError(f"model {PREFIX}{name}: no such built-in checkpoint{hint}; shipped: {shipped}")
    return path
