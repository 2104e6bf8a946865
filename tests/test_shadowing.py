"""No file or folder of the repository may hide an installed distribution.

Python puts the working directory (``python -c``, ``python -m``) or the script's folder
(``python bench/x.py``) first on ``sys.path``, and pytest puts ``tests/`` there. A module
or regular package in one of those folders whose name is also a top-level import name of
an installed distribution is imported instead of it: the repository's ``kernels/`` once
hid Hugging Face's ``kernels``, which transformers imports (docs/layout.md).
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USER_DIRECTORIES = [ROOT, ROOT / "bench", ROOT / "examples", ROOT / "tests"]
OWN_DISTRIBUTION = "unmask"


def importable_names(directory: Path) -> dict[str, Path]:
    """Modules and regular packages that ``directory`` provides when it is on ``sys.path``.

    Folders without ``__init__.py`` are left out: a namespace portion is used only when
    no regular package or module of that name exists anywhere on the path.
    """
    names: dict[str, Path] = {}
    suffixes = importlib.machinery.all_suffixes()
    for entry in directory.iterdir():
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names[entry.name] = entry
        elif entry.is_file():
            for suffix in suffixes:
                if entry.name.endswith(suffix):
                    names[entry.name[: -len(suffix)].split(".")[0]] = entry
    return names


def installed_top_level_names() -> dict[str, list[str]]:
    """Top-level import name -> distributions, for every installed distribution but unmask."""
    by_name = importlib.metadata.packages_distributions()
    return {
        name: dists
        for name, dists in by_name.items()
        if not name.startswith("_") and dists and OWN_DISTRIBUTION not in dists
    }


def shadowed(directory: Path, installed: dict[str, list[str]]) -> list[str]:
    return sorted(
        f"{path.relative_to(directory.parent)} hides {', '.join(installed[name])} ({name})"
        for name, path in importable_names(directory).items()
        if name in installed
    )


def test_the_check_sees_installed_transformers_dependencies():
    installed = installed_top_level_names()
    for name in ("kernels", "transformers", "torch", "ray"):
        assert name in installed, f"{name} is not an installed top-level name: the check reads nothing"


@pytest.mark.parametrize("directory", USER_DIRECTORIES, ids=lambda d: d.name)
def test_no_repository_name_hides_an_installed_distribution(directory):
    assert shadowed(directory, installed_top_level_names()) == []


@pytest.mark.parametrize("layout", ["kernels/__init__.py", "kernels.py"])
def test_the_check_fails_when_shadowing_is_put_back(tmp_path, layout):
    """A regular ``kernels`` package or module, as the repository once had, is reported."""
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_text("")
    (tmp_path / "rl").mkdir()  # a namespace folder, as rl/ is now: not a shadow
    report = shadowed(tmp_path, installed_top_level_names())
    assert len(report) == 1 and "(kernels)" in report[0]


@pytest.mark.parametrize("cwd", USER_DIRECTORIES, ids=lambda d: d.name)
def test_import_kernels_from_a_user_directory_gives_the_installed_package(cwd):
    out = subprocess.run(
        [sys.executable, "-c", "import kernels; print(kernels.__file__)"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout and str(ROOT / "kernels") not in out.stdout
