"""Benchmark loaders: by hub id with ``datasets`` by default, or from a local file.

Each loader returns rows with the columns its reward needs. Local files use the
formats of the public releases (GSM8K/MATH500 JSONL, AMC JSON, Sudoku CSV).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unmask.errors import UserError
from unmask.rewards.extract import last_boxed

#: task → (hub id, hub config, default split)
HUB_IDS: dict[str, tuple[str, str | None, str]] = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "amc": ("AI-MO/aimo-validation-amc", None, "train"),
}


def _gsm8k_row(record: dict[str, Any]) -> dict[str, Any]:
    reasoning, _, gold = str(record["answer"]).rpartition("####")
    return {
        "question": record["question"],
        "answer": gold.strip().replace(",", ""),
        "reasoning": reasoning.strip(),
    }


def _math_row(record: dict[str, Any]) -> dict[str, Any]:
    # MATH training sets (e.g. MATH-lighteval) carry the answer only boxed inside the solution
    answer = record["answer"] if "answer" in record else last_boxed(record["solution"])
    if answer is None:
        raise KeyError("answer")
    return {
        "problem": record["problem"],
        "answer": str(answer),
        "solution": record.get("solution", ""),
        "reasoning": record.get("solution", ""),
        **{k: record[k] for k in ("subject", "level", "unique_id") if k in record},
    }


def _amc_row(record: dict[str, Any]) -> dict[str, Any]:
    answer = record["answer"]
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    return {"problem": record["problem"], "answer": str(answer)}


def _sudoku_row(record: dict[str, Any]) -> dict[str, Any]:
    return {"puzzle": str(record["Puzzle"]).zfill(16), "solution": str(record["Solution"]).zfill(16)}


ROW_BUILDERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "gsm8k": _gsm8k_row,
    "math500": _math_row,
    "math": _math_row,
    "amc": _amc_row,
    "sudoku": _sudoku_row,
}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a ``.jsonl``, ``.json`` (list or {split: list}), ``.csv`` or ``.parquet`` file."""
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    try:
        if path.suffix == ".jsonl":
            with path.open() as fh:
                return [json.loads(line) for line in fh if line.strip()]
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list):
                raise UserError(f"{path}: expected a JSON list of records")
            return data
        if path.suffix == ".csv":
            with path.open(newline="") as fh:
                return list(csv.DictReader(fh))
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot parse ({exc})") from None
    raise UserError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .json, .csv or .parquet)")


def _from_hub(task: str, hub_id: str | None, split: str | None) -> list[dict[str, Any]]:
    if task not in HUB_IDS and hub_id is None:
        raise UserError(f"task '{task}' has no hub dataset; give a local file with data.path / --data-dir")
    default_id, config, default_split = HUB_IDS.get(task, (hub_id, None, "test"))
    hub_id = hub_id or default_id
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split or default_split)
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same actionable message
        raise UserError(
            f"benchmark '{task}': cannot load '{hub_id}' from the hub ({type(exc).__name__}); "
            f"pass a local file with data.path=FILE (recipes) or --data-dir DIR (unmask eval)"
        ) from None
    return [dict(r) for r in ds]


def load_benchmark(
    task: str, path: str | Path | None = None, hub_id: str | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """Rows of a benchmark from ``path`` if given, else from the hub."""
    if task not in ROW_BUILDERS:
        raise UserError(f"unknown benchmark '{task}'; choose one of {', '.join(ROW_BUILDERS)}")
    records = read_records(Path(path)) if path is not None else _from_hub(task, hub_id, split)
    build = ROW_BUILDERS[task]
    try:
        return [build(r) for r in records]
    except KeyError as exc:
        where = path or hub_id or HUB_IDS.get(task, ("?",))[0]
        raise UserError(f"{where}: records lack the column {exc} that benchmark '{task}' needs") from None
