"""The append-only sample log of an evaluation run (``samples.jsonl``).

One JSON object per (benchmark, setting, problem, sample). Lines are appended
and flushed per batch, so a crash loses at most the batch in flight; a crash in
the middle of a write leaves a truncated last line, which reading tolerates and
reopening for append cuts off. Resuming is "skip every key already present".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unmask.errors import UserError

SAMPLES_FILE = "samples.jsonl"

SampleKey = tuple[str, str, int, int]


def sample_key(record: dict[str, Any]) -> SampleKey:
    """(benchmark, setting label, problem index, sample index): what resume and compare match on."""
    return (record["bench"], record["setting"], int(record["problem"]), int(record["sample"]))


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``samples.jsonl``; an unparseable *last* line (a crash mid-write) is dropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sample log (is this an 'unmask eval' output directory?)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number}: corrupt line in the sample log; delete it to resume") from None
    return records


def _cut_partial_line(path: Path) -> None:
    """Drop bytes after the last newline so the next append starts on a fresh line."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)


class SampleLog:
    """Appends sample records to ``samples.jsonl`` and knows which keys are done."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / SAMPLES_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _cut_partial_line(self.path)
            self.records = read_samples(self.path)
        else:
            self.records = []
        self.done: set[SampleKey] = {sample_key(r) for r in self.records}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write ``records`` and flush them to disk before returning."""
        batch = [r for r in records if sample_key(r) not in self.done]
        if not batch:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            for record in batch:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.extend(batch)
        self.done.update(sample_key(r) for r in batch)
