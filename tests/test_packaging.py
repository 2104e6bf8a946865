"""A built wheel holds every module: pyproject's explicit package list names every source folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_listed_package():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {f"unmask.{name}": ROOT / path for name, path in
               ((k.removeprefix("unmask."), v) for k, v in setuptools["package-dir"].items()) if name != "unmask"}
    folders["unmask"] = ROOT / "unmask"
    found = set()
    for package, folder in folders.items():
        for module in folder.rglob("*.py"):
            parts = module.parent.relative_to(folder).parts
            if "assets" not in parts:
                found.add(".".join((package, *parts)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
