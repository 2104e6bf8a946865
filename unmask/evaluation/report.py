"""From sample records to numbers: per (benchmark, setting) summaries and the table.

Everything here is derived from ``samples.jsonl`` alone, so a resumed run, a
finished run and ``--compare`` all report the same numbers for the same records.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unmask.evaluation.stats import mean_pass_at_k

SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"


@dataclass
class Summary:
    """Aggregate of one benchmark under one decoding setting."""

    bench: str
    setting: str
    settings: dict[str, Any]
    problems: int
    samples_per_problem: int
    #: mean correctness over every sample (= pass@1)
    accuracy: float
    #: unbiased pass@k for k = samples per problem (only when k > 1)
    pass_at_k: dict[int, float] = field(default_factory=dict)
    #: answer tokens before the first EOS, averaged over samples
    mean_answer_tokens: float = 0.0
    #: model forward passes per answer
    nfe_per_answer: float = 0.0
    #: answer tokens generated per second of sampling wall time
    tokens_per_second: float = 0.0
    #: samples whose grading passed its deadline (counted wrong; rewards.Grader)
    grading_timeouts: int = 0


def group_by_problem(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, list[dict[str, Any]]]]:
    """``{(bench, setting): {problem: [records]}}``."""
    groups: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        groups[(record["bench"], record["setting"])][int(record["problem"])].append(record)
    return groups


def summarize(records: list[dict[str, Any]]) -> list[Summary]:
    """One ``Summary`` per (benchmark, setting), in first-seen order."""
    out = []
    for (bench, setting), problems in group_by_problem(records).items():
        flat = [r for rs in problems.values() for r in rs]
        k = min(len(rs) for rs in problems.values())
        counts = [(len(rs), sum(r["correct"] for r in rs)) for rs in problems.values()]
        passes = mean_pass_at_k(counts, [k]) if k > 1 else {}
        seconds = sum(r["seconds"] for r in flat)
        tokens = sum(r["answer_tokens"] for r in flat)
        out.append(
            Summary(
                bench=bench,
                setting=setting,
                settings=flat[0]["settings"],
                problems=len(problems),
                samples_per_problem=k,
                accuracy=sum(r["correct"] for r in flat) / len(flat),
                pass_at_k=passes,
                mean_answer_tokens=tokens / len(flat),
                nfe_per_answer=sum(r["nfe"] for r in flat) / len(flat),
                tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
                grading_timeouts=sum(bool(r.get("grading_timeout")) for r in flat),
            )
        )
    return out


#: accuracy and pass@k in %, answer length in tokens, NFE = forward passes per answer
HEADERS = ("benchmark", "setting", "n", "acc %", "pass@k %", "len", "NFE", "tok/s")


def table_rows(summaries: list[Summary]) -> list[tuple[str, ...]]:
    """The table's cells as text (percentages with one decimal)."""
    rows = []
    for s in summaries:
        passes = ", ".join(f"@{k} {100 * v:.1f}" for k, v in s.pass_at_k.items()) or "-"
        rows.append(
            (
                s.bench,
                s.setting,
                str(s.problems),
                f"{100 * s.accuracy:.1f}",
                passes,
                f"{s.mean_answer_tokens:.1f}",
                f"{s.nfe_per_answer:.1f}",
                f"{s.tokens_per_second:.1f}",
            )
        )
    return rows


def markdown_table(summaries: list[Summary]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summaries)]
    return "\n".join(lines) + "\n"


def rich_table(summaries: list[Summary], title: str) -> Table:
    table = Table(title=title)
    for header in HEADERS:
        if header == "setting":
            table.add_column(header, overflow="fold")  # long labels wrap instead of being cut
        else:
            table.add_column(header, justify="left" if header == "benchmark" else "right", no_wrap=True)
    for row in table_rows(summaries):
        table.add_row(*row)
    return table


def write_report(out_dir: str | Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> list[Summary]:
    """Write ``summary.json`` and ``table.md`` for ``records``; returns the summaries."""
    out_dir = Path(out_dir)
    summaries = summarize(records)
    payload = {**meta, "results": [asdict(s) for s in summaries]}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / TABLE_FILE).write_text(markdown_table(summaries))
    return summaries


def print_table(summaries: list[Summary], title: str, console: Console | None = None) -> None:
    (console or Console()).print(rich_table(summaries, title))
