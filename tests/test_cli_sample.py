"""`unmask sample` prints one line per denoising step and the final answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.cli import main
from unmask.models import tiny


def test_sample_shows_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny(seed=0).save_pretrained(tmp_path / "m")
    code = main(["sample", "--model", str(tmp_path / "m"), "--prompt", "Using the numbers [1, 2, 3]",
                 "--gen-length", "8", "--steps", "4"])
    out = capsys.readouterr().out
    assert code == 0
    step_lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(step_lines) == 4
    assert "answer" in out and "forward passes: 4" in out


def test_sample_bad_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
