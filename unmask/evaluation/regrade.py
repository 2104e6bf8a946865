"""``unmask eval --regrade FILE…``: re-score published generations with unmask's graders.

No model is loaded: each file's completions are graded (the same ``rewards.Grader``
evaluation uses, MATH under a per-item deadline), accuracy is printed with a 95 %
Wilson interval per task and file group, and every verdict is written to
``regrade.jsonl`` in ``--out``. With ``--show-disagreements`` the items where a
stored verdict (``is_correct``/``correct``) differs from unmask's are listed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unmask.errors import UserError
from unmask.evaluation.generations import Item, read_generations
from unmask.rewards.grading import Grader
from unmask.rewards.result import GradeResult

VERDICTS_FILE = "regrade.jsonl"
SUMMARY_FILE = "regrade_summary.json"
_Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: stays inside [0, 1] and is sensible
    at 0 % or 100 %, where the normal approximation collapses to a point."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class GroupSummary:
    """Accuracy of one (task, file group), with the stored verdicts it was compared to."""

    task: str
    group: str
    n: int
    correct: int
    low: float
    high: float
    mean_score: float
    stored: int
    stored_correct: int
    disagreements: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def grade_items(items: list[Item], grader: Grader) -> list[GradeResult]:
    """Verdicts in item order, graded one task at a time (one pool, deadlines where needed)."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_task[item.task].append(i)
    verdicts: list[GradeResult | None] = [None] * len(items)
    for task, indices in by_task.items():
        results = grader.grade_many(
            task, [items[i].completion for i in indices], [items[i].reference for i in indices]
        )
        for i, result in zip(indices, results, strict=True):
            verdicts[i] = result
    return [v for v in verdicts if v is not None]


def summarize(items: list[Item], verdicts: list[GradeResult]) -> list[GroupSummary]:
    """One summary per (task, file group), in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[(item.task, item.group)].append(i)
    out = []
    for (task, group), indices in groups.items():
        correct = sum(verdicts[i].correct for i in indices)
        stored = [i for i in indices if items[i].stored is not None]
        low, high = wilson_interval(correct, len(indices))
        out.append(
            GroupSummary(
                task, group, len(indices), correct, low, high,
                mean_score=sum(verdicts[i].score for i in indices) / len(indices),
                stored=len(stored), stored_correct=sum(bool(items[i].stored) for i in stored),
                disagreements=sum(items[i].stored != verdicts[i].correct for i in stored),
            )
        )  # fmt: skip
    return out


def verdict_record(item: Item, verdict: GradeResult) -> dict[str, Any]:
    """The per-item line of ``regrade.jsonl``."""
    return {
        "source": item.source, "index": item.index, "group": item.group, "task": item.task,
        "reference": item.reference, "extracted": verdict.extracted, "correct": verdict.correct,
        "score": verdict.score, "error": verdict.error, "grading_timeout": verdict.timed_out,
        "stored_correct": item.stored,
    }  # fmt: skip


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary_table(summaries: list[GroupSummary]) -> Table:
    table = Table(
        title="regrade with unmask's graders (95 % Wilson interval)",
        caption="score %: mean reward score (Sudoku: share of empty cells right, d1's measure)",
    )
    for header in ("task", "group", "n", "acc %", "95 % CI", "score %", "stored %", "differ"):
        table.add_column(header, justify="left" if header in ("task", "group") else "right",
                         overflow="fold", no_wrap=header != "group")
    for s in summaries:
        stored = f"{100 * s.stored_correct / s.stored:.1f}" if s.stored else "-"
        table.add_row(
            s.task, s.group, str(s.n), f"{100 * s.accuracy:.1f}",
            f"{100 * s.low:.1f}–{100 * s.high:.1f}", f"{100 * s.mean_score:.1f}", stored,
            str(s.disagreements) if s.stored else "-",
        )  # fmt: skip
    return table


def _trim(text: str, width: int = 200) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else "…" + text[-width:]


def print_disagreements(items: list[Item], verdicts: list[GradeResult], console: Console) -> int:
    """List each item whose stored verdict differs from unmask's; returns how many."""
    count = 0
    for item, verdict in zip(items, verdicts, strict=True):
        if item.stored is None or item.stored == verdict.correct:
            continue
        count += 1
        console.print(
            f"[bold]{item.source}#{item.index}[/bold] ({item.task}) stored={item.stored} "
            f"unmask={verdict.correct} read {verdict.extracted!r}"
            f"{f' ({verdict.error})' if verdict.error else ''} reference={item.reference}",
            markup=True, highlight=False, soft_wrap=True,
        )  # fmt: skip
        console.print(f"  {_trim(item.completion)}", markup=False, highlight=False, soft_wrap=True)
    if not count:
        console.print("no stored verdict differs from unmask's")
    return count


def run_regrade(args: argparse.Namespace, console: Console | None = None) -> int:
    """Entry point of ``unmask eval --regrade`` (see ``unmask.cli``)."""
    console = console or Console()
    items: list[Item] = []
    skipped = 0
    for path in args.regrade:
        found, missing = read_generations(path, getattr(args, "task", None))
        items += found
        skipped += missing
    if not items:
        raise UserError(f"--regrade: no gradeable items in {', '.join(map(str, args.regrade))}")
    with Grader() as grader:
        verdicts = grade_items(items, grader)
    summaries = summarize(items, verdicts)
    out = Path(args.out) if args.out else Path("runs") / "regrade" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(verdict_record(i, v), ensure_ascii=False) + "\n" for i, v in zip(items, verdicts, strict=True))
    write_atomic(out / VERDICTS_FILE, lines)
    payload = {"files": [str(p) for p in args.regrade], "skipped_without_reference": skipped,
               "groups": [{**s.__dict__, "accuracy": s.accuracy} for s in summaries]}  # fmt: skip
    write_atomic(out / SUMMARY_FILE, json.dumps(payload, indent=2) + "\n")
    console.print(summary_table(summaries))
    if skipped:
        console.print(f"{skipped} entries without a reference were skipped")
    if args.show_disagreements:
        print_disagreements(items, verdicts, console)
    console.print(f"per-item verdicts in {out / VERDICTS_FILE}", soft_wrap=True)
    return 0
