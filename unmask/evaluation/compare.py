"""``unmask eval --compare RUN_A RUN_B``: paired differences and flipped problems.

Problems are paired by (benchmark, setting, problem index); a problem's score is
its mean correctness over samples, and it "flips" when its majority verdict
(score >= 0.5) differs between the runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unmask.errors import UserError
from unmask.evaluation.report import group_by_problem
from unmask.evaluation.stats import BootstrapCI, paired_bootstrap
from unmask.evaluation.store import SAMPLES_FILE, read_samples


@dataclass
class Comparison:
    """B − A on one benchmark and setting."""

    bench: str
    setting: str
    accuracy_a: float
    accuracy_b: float
    ci: BootstrapCI
    #: problem indices solved by B but not by A
    gained: list[int] = field(default_factory=list)
    #: problem indices solved by A but not by B
    lost: list[int] = field(default_factory=list)


def _scores(problems: dict[int, list[dict[str, Any]]]) -> dict[int, float]:
    return {p: sum(r["correct"] for r in rs) / len(rs) for p, rs in problems.items()}


def compare_records(
    records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], *, seed: int = 0
) -> list[Comparison]:
    """One ``Comparison`` per (benchmark, setting) present in both runs, over shared problems."""
    groups_a, groups_b = group_by_problem(records_a), group_by_problem(records_b)
    out = []
    for key in [k for k in groups_a if k in groups_b]:
        scores_a, scores_b = _scores(groups_a[key]), _scores(groups_b[key])
        shared = sorted(set(scores_a) & set(scores_b))
        if not shared:
            continue
        a = [scores_a[p] for p in shared]
        b = [scores_b[p] for p in shared]
        out.append(
            Comparison(
                bench=key[0],
                setting=key[1],
                accuracy_a=sum(a) / len(a),
                accuracy_b=sum(b) / len(b),
                ci=paired_bootstrap(a, b, seed=seed),
                gained=[p for p in shared if scores_b[p] >= 0.5 > scores_a[p]],
                lost=[p for p in shared if scores_a[p] >= 0.5 > scores_b[p]],
            )
        )
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, *, seed: int = 0) -> list[Comparison]:
    """Compare two ``unmask eval`` output directories."""
    comparisons = compare_records(
        read_samples(Path(run_a) / SAMPLES_FILE), read_samples(Path(run_b) / SAMPLES_FILE), seed=seed
    )
    if not comparisons:
        raise UserError(
            f"--compare {run_a} {run_b}: the runs share no (benchmark, setting, problem); "
            f"evaluate both with the same --bench and decoding options"
        )
    return comparisons


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}"


def print_comparison(comparisons: list[Comparison], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="B − A (paired bootstrap 95% CI)")
    for header in ("benchmark", "setting", "problems", "A", "B", "diff", "95% CI", "gained", "lost"):
        table.add_column(header, overflow="fold")
    for c in comparisons:
        table.add_row(
            c.bench, c.setting, str(c.ci.n), f"{100 * c.accuracy_a:.1f}", f"{100 * c.accuracy_b:.1f}",
            _pct(c.ci.diff), f"[{_pct(c.ci.low)}, {_pct(c.ci.high)}]", str(len(c.gained)), str(len(c.lost)),
        )
    console.print(table)
    for c in comparisons:
        if c.gained or c.lost:
            console.print(f"{c.bench} {c.setting}: gained {c.gained or '-'}; lost {c.lost or '-'}")
