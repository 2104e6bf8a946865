"""The before/after report of a run: paired differences with intervals, and the curve.

Numbers come in as per-problem scores of the same held-out problems before and
after training, so every difference carries a paired-bootstrap 95 % interval
(``unmask.evaluation.stats``): a gain is only claimed when its interval is above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unmask.evaluation.stats import BootstrapCI, paired_bootstrap

CURVE_FILE = "curve.png"


@dataclass(frozen=True)
class Comparison:
    """One metric before and after training, with the interval of the paired difference."""

    name: str
    before: float
    after: float
    ci: BootstrapCI | None
    #: "%" for rates shown in points, "" for plain numbers
    unit: str = "%"

    @property
    def improved(self) -> bool:
        """True when the whole 95 % interval of ``after - before`` is above zero."""
        return self.ci is not None and self.ci.low > 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "ci"}
        if self.ci is not None:
            out.update(diff=self.ci.diff, low=self.ci.low, high=self.ci.high, n=self.ci.n)
        return out


def compare(name: str, before: Sequence[float], after: Sequence[float], unit: str = "%", seed: int = 0) -> Comparison:
    """Means of paired per-problem scores and the bootstrap interval of their difference."""
    ci = paired_bootstrap(list(before), list(after), seed=seed)
    return Comparison(name, sum(before) / len(before), sum(after) / len(after), ci, unit)


def _fmt(value: float, unit: str) -> str:
    return f"{100 * value:.1f}" if unit == "%" else f"{value:.3f}"


def table_cells(rows: Sequence[Comparison]) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, difference [95 % CI]) as text; rates in points."""
    cells = []
    for row in rows:
        diff = "-"
        if row.ci is not None:
            diff = f"{_fmt(row.ci.diff, row.unit)} [{_fmt(row.ci.low, row.unit)}, {_fmt(row.ci.high, row.unit)}]"
        label = f"{row.name} (%)" if row.unit == "%" else row.name
        cells.append((label, _fmt(row.before, row.unit), _fmt(row.after, row.unit), diff))
    return cells


HEADERS = ("metric", "before", "after", "after - before [95% CI]")


def markdown_table(rows: Sequence[Comparison], timings: dict[str, float]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(rows)]
    lines.append("")
    lines.append("wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items()))
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[Comparison], timings: dict[str, float], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "metric" else "right")
    for cells in table_cells(rows):
        table.add_row(*cells)
    console = console or Console()
    console.print(table)
    console.print("wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items()))


def plot_curves(
    reward: Sequence[tuple[int, float]],
    accuracy: dict[str, Sequence[tuple[int, float]]],
    path: str | Path,
) -> Path:
    """Training reward per step (left) and held-out accuracies at their steps (right) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if reward:
        steps, values = zip(*reward, strict=True)
        left.plot(steps, values, marker=".")
    left.set(title="mean rollout reward", xlabel="RL step", ylabel="reward")
    for label, points in accuracy.items():
        if points:
            steps, values = zip(*points, strict=True)
            right.plot(steps, [100 * v for v in values], marker="o", label=label)
    right.set(title="held-out accuracy", xlabel="RL step", ylabel="accuracy (%)")
    if accuracy:
        right.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
