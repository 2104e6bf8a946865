"""Reading published generation files into gradeable items, without a model.

Three layouts are understood, so that ``unmask eval --regrade`` can audit a paper's
numbers with unmask's graders:

- d1's JSON (``{"generations": [{"question", "generations", "ground_truth"}, ...]}``),
- unmask's own ``samples.jsonl`` (records with ``bench``, ``completion``, ``reference``),
- a plain JSONL of ``completion`` plus the grader's reference columns (``answer``;
  ``nums`` + ``target``; ``puzzle`` + ``solution``; code ``prefix``, ``tests``,
  ``entry_point``, ``setup``, ``timeout_s``), with an optional ``task`` column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unmask.errors import UserError
from unmask.evaluation.benchmarks import GRADER_TASK, REFERENCE_COLUMNS

#: per-item fields that hold a verdict someone else stored (compared by --show-disagreements)
STORED_VERDICT_KEYS = ("is_correct", "correct")
_SUDOKU_PUZZLE = re.compile(r"(?<!\d)([0-4]{16})(?!\d)")
_SHARD = re.compile(r"(?:_generations)?(?:_\d+)?(?:_generations)?$")


@dataclass(frozen=True)
class Item:
    """One completion to grade: where it came from, its task, reference and any stored verdict."""

    source: str
    index: int
    group: str
    task: str
    completion: str
    reference: dict[str, Any]
    stored: bool | None = None


def file_group(path: Path) -> str:
    """Shards of one run share a group: ``gsm8k_instruct_128_64_3_generations`` → ``gsm8k_instruct_128_64``."""
    return _SHARD.sub("", path.stem) or path.stem


def task_from_name(name: str) -> str | None:
    """The grader a file name points at (``math500_…`` → math), or None."""
    lowered = name.lower()
    for key in sorted(GRADER_TASK, key=len, reverse=True):
        if key in lowered:
            return GRADER_TASK[key]
    return None


def _stored(record: dict[str, Any]) -> bool | None:
    for key in STORED_VERDICT_KEYS:
        if isinstance(record.get(key), bool):
            return record[key]
    return None


def _d1_reference(task: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    """unmask reference columns of one d1 entry; None where the entry has no usable truth."""
    truth = entry.get("ground_truth")
    if truth is None:
        return None
    if task == "countdown":
        if not (isinstance(truth, list) and len(truth) == 2 and isinstance(truth[0], list)):
            raise ValueError(f"countdown ground_truth must be [[numbers], target], got {truth!r}")
        return {"nums": truth[0], "target": truth[1]}
    if task == "sudoku":
        found = _SUDOKU_PUZZLE.search(str(entry.get("question", "")))
        if found is None:
            raise ValueError("sudoku question holds no 16-digit puzzle")
        return {"puzzle": found.group(1), "solution": str(truth)}
    return {"answer": truth}


def _d1_task(path: Path, entries: list[dict[str, Any]], task: str | None) -> str:
    task = task or task_from_name(path.name)
    if task is None and entries:
        truth = entries[0].get("ground_truth")
        if isinstance(truth, list):
            task = "countdown"
        elif "sudoku" in str(entries[0].get("question", "")).lower():
            task = "sudoku"
    if task is None:
        raise UserError(f"{path}: cannot tell the task from the file name or contents; pass --task")
    return task


def read_d1(path: Path, task: str | None = None) -> tuple[list[Item], int]:
    """Items of a d1 generation file, and how many entries had no ground truth."""
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("generations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UserError(f"{path}: not a d1 generation file (no 'generations' list)")
    task = _d1_task(path, entries, task)
    items, skipped = [], 0
    for i, entry in enumerate(entries):
        try:
            ref = _d1_reference(task, entry)
        except ValueError as exc:
            raise UserError(f"{path}: entry {i}: {exc}") from None
        if ref is None:
            skipped += 1
            continue
        text = str(entry.get("generations", ""))
        items.append(Item(str(path), i, file_group(path), task, text, ref, _stored(entry)))
    return items, skipped


def _jsonl_task(record: dict[str, Any], path: Path, task: str | None) -> str:
    if task:
        return task
    named = record.get("task") or record.get("bench")
    if named in GRADER_TASK:
        return GRADER_TASK[named]
    columns = set(record.get("reference") or record)
    for candidate in ("countdown", "sudoku", "code"):
        if set(REFERENCE_COLUMNS[candidate]) <= columns:
            return candidate
    if "####" in str((record.get("reference") or record).get("answer", "")):
        return "gsm8k"
    found = task_from_name(path.name)
    if found is None:
        raise UserError(
            f"{path}: cannot tell whether 'answer' is a math or a gsm8k reference; "
            "add a 'task' column or pass --task"
        )
    return found


def read_jsonl(path: Path, task: str | None = None) -> tuple[list[Item], int]:
    """Items of unmask's ``samples.jsonl`` or of a plain completion + reference JSONL."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("completion"), str):
            raise UserError(f"{path}:{number}: each line needs a 'completion' string")
        row_task = _jsonl_task(record, path, task)
        source = record.get("reference") if isinstance(record.get("reference"), dict) else record
        missing = [c for c in REFERENCE_COLUMNS[row_task] if c not in source]
        if missing:
            raise UserError(f"{path}:{number}: {row_task} needs reference column(s) {missing}")
        ref = {c: source[c] for c in REFERENCE_COLUMNS[row_task]}
        group = f"{file_group(path.parent) if path.name == 'samples.jsonl' else file_group(path)}"
        if "setting" in record:
            group += f"/{record['setting']}"
        items.append(Item(str(path), number - 1, group, row_task, record["completion"], ref, _stored(record)))
    return items, 0


def read_generations(path: str | Path, task: str | None = None) -> tuple[list[Item], int]:
    """Items of one generation file of any supported layout, and entries skipped (no reference)."""
    path = Path(path)
    if task is not None and task not in GRADER_TASK:
        raise UserError(f"--task {task!r}: choose one of {sorted(set(GRADER_TASK.values()))}")
    task = GRADER_TASK.get(task, task) if task else None
    if not path.is_file():
        raise UserError(f"{path}: no such generation file")
    if path.suffix == ".jsonl":
        return read_jsonl(path, task)
    try:
        return read_d1(path, task)
    except json.JSONDecodeError:
        raise UserError(f"{path}: not JSON; give a d1 .json file or a .jsonl of completions") from None
