"""Training metrics: JSONL always at hand, TensorBoard / W&B on request, a rich progress bar."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unmask.errors import UserError


class MetricsLogger:
    """Fans one metrics dict per step out to the sinks named in ``logging.report_to``."""

    def __init__(self, output_dir: str | Path, report_to: list[str], config: dict[str, Any] | None = None) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = set(report_to) - {"none"}
        self._tb = self._wandb = None
        if "tensorboard" in self.sinks:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if "wandb" in self.sinks:
            try:
                import wandb
            except ImportError:
                raise UserError("logging.report_to: wandb is not installed; `pip install wandb` or drop it") from None
            self._wandb = wandb.init(dir=str(output_dir), config=config, reinit=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        if "jsonl" in self.sinks:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _json_number(value: Any) -> Any:
    """NaN/inf as strings, so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def drop_metrics_after(path: Path, step: int) -> None:
    """Remove training records past ``step`` (a resumed run logs those steps again), atomically."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.strip() or _kept(json.loads(line), step)]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _kept(record: dict[str, Any], step: int) -> bool:
    return "phase" in record or int(record.get("step", 0)) <= step


def progress_bar(enabled: bool, title: str = "RL") -> Progress:
    """A per-step bar whose description shows the phase and its timings."""
    return Progress(
        TextColumn(f"[bold]{title}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
