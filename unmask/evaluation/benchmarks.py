"""Which problems a benchmark evaluates on, and which grader and columns judge them.

The held-out Countdown set (no ``--data-dir``) is
``countdown.generate(limit or 1000, seed=COUNTDOWN_EVAL_SEED, <generator settings>)``
with the recipe's generator ranges (default: 3 numbers in 1..10, targets 1..100).
Generation is prefix-stable, so ``--limit n`` is the first n problems of it, and
the trainer's evaluation of the default recipe (same settings, same seed) sees the
very same problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unmask.data import CODE_TASKS, DATA_FILES, load_rows
from unmask.errors import UserError

BENCHMARKS = tuple(DATA_FILES)
#: far from the small training seeds recipes use, so train and eval draws differ
COUNTDOWN_EVAL_SEED = 2_718_281
COUNTDOWN_EVAL_SIZE = 1000
#: benchmark / task → grader name in ``unmask.rewards.GRADERS``
GRADER_TASK = {"math500": "math", "amc": "math", "math": "math", "gsm8k": "gsm8k",
               "countdown": "countdown", "sudoku": "sudoku", **dict.fromkeys((*CODE_TASKS, "tinycode"), "code")}  # fmt: skip
#: the row columns each grader takes as reference
REFERENCE_COLUMNS = {"math": ("answer",), "gsm8k": ("answer",),
                     "countdown": ("nums", "target"), "sudoku": ("puzzle", "solution"),
                     "code": ("prefix", "tests", "entry_point", "setup", "timeout_s")}  # fmt: skip


def parse_benchmarks(text: str) -> list[str]:
    """``"gsm8k,countdown"`` → names, each checked."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown or not names:
        raise UserError(f"--bench {text!r}: choose from {', '.join(BENCHMARKS)} (comma-separated)")
    return names


def benchmark_rows(
    bench: str,
    *,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    limit: int | None = None,
    generator: dict[str, Any] | None = None,
    template: str | None = None,
) -> list[dict[str, Any]]:
    """Rows (with a rendered ``prompt``) of ``bench`` from ``path``, ``data_dir``, the hub or the generator."""
    if path is None and data_dir is not None:
        path = Path(data_dir) / DATA_FILES[bench]
        if not path.is_file():
            fallback = "the generated held-out set" if bench == "countdown" else "the hub"
            raise UserError(
                f"benchmark '{bench}': {DATA_FILES[bench]} not found in --data-dir {data_dir}; "
                f"put the file there or leave out --data-dir to use {fallback}"
            )
    if bench == "countdown" and path is None:
        settings = {k: v for k, v in (generator or {}).items() if k != "size"}
        return load_rows(
            bench, limit=limit or COUNTDOWN_EVAL_SIZE, generator=settings,
            seed=COUNTDOWN_EVAL_SEED, template=template,
        )  # fmt: skip
    return load_rows(bench, path=path, limit=limit, template=template)


def reference(task: str, row: dict[str, Any]) -> dict[str, Any]:
    """The columns of ``row`` the ``task`` grader compares against."""
    return {name: row[name] for name in REFERENCE_COLUMNS[GRADER_TASK[task]]}
