"""Task data: rows with a ``prompt`` plus the columns each task's reward needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unmask.data import countdown, tinycode
from unmask.data.benchmarks import load_benchmark
from unmask.data.code import CODE_TASKS, load_code
from unmask.data.prompts import TEMPLATES, render_prompt

#: the file name each benchmark has in a ``--data-dir`` (the public releases' names)
DATA_FILES: dict[str, str] = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500_test.jsonl",
    "amc": "amc_test.json",
    "countdown": "countdown_cd3_test.jsonl",
    "sudoku": "sudoku4x4_test.csv",
    "humaneval": "code/HumanEval.jsonl.gz",
    "mbpp": "code/mbpp.jsonl",
    "humaneval_plus": "code/HumanEvalPlus.jsonl",
    "mbpp_plus": "code/MbppPlus.jsonl",
    "tinycode": "tinycode_test.jsonl",
}


def load_rows(
    task: str,
    *,
    path: str | Path | None = None,
    hub_id: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    template: str | None = None,
    generator: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows for ``task`` with a rendered ``prompt`` column.

    Countdown without a ``path`` is generated (``generator`` settings, ``seed``), and so is
    tinycode (its split's functions); code tasks come from ``unmask.data.code``; everything
    else comes from ``path`` or the hub.
    """
    if task == "countdown":
        if path is not None:
            rows = countdown.load_file(path)
        else:
            settings = dict(generator or {})
            size = settings.pop("size", limit or 1000)
            rows = countdown.generate(limit or size, seed=seed, **settings)
    elif task == "tinycode" and path is None:
        rows = tinycode.generate(limit or 1000, split=split or "test", seed=seed)
    elif task in CODE_TASKS:
        rows = load_code(task, path=path, hub_id=hub_id, split=split)
    else:
        rows = load_benchmark(task, path=path, hub_id=hub_id, split=split)
    if limit is not None:
        rows = rows[:limit]
    for row in rows:
        row["prompt"] = render_prompt(task, row, template)
    return rows


__all__ = ["CODE_TASKS", "DATA_FILES", "TEMPLATES", "countdown", "load_benchmark", "tinycode", "load_rows", "render_prompt"]
