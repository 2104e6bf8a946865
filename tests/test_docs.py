"""The front page and the documentation a user has: the README's size and commands, every cited doc exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("unmask", "rl", "rewards", "rollouts", "kernels", "bench", "examples", "tests")


def test_readme_is_a_front_page_with_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 180
    assert "make train" in text and "make test" in text


def test_every_cited_doc_exists():
    """Docstrings, docs and the README cite documents in docs/: each must be a file a user has."""
    cited: dict[str, set[str]] = {}
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(p for src in SOURCES for p in (ROOT / src).rglob("*.py"))]
    for path in files:
        text = path.read_text()
        names = set(re.findall(r"docs/([A-Za-z0-9_-]+\.md)", text))
        if path.parent.name == "docs" or path.name == "README.md":
            names |= set(re.findall(r"\]\((?:docs/)?([A-Za-z0-9_-]+\.md)\)", text)) - {"README.md"}
        for name in names:
            cited.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    missing = {name: sorted(where) for name, where in cited.items() if not (ROOT / "docs" / name).is_file()}
    assert not missing, f"cited but not in docs/: {missing}"
