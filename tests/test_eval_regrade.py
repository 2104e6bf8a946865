"""``unmask eval --regrade``: d1 JSON, unmask samples.jsonl and plain JSONL, without a model."""

from __future__ import annotations

import json

import pytest

from unmask.cli import main
from unmask.errors import UserError
from unmask.evaluation.generations import file_group, read_generations
from unmask.evaluation.regrade import wilson_interval


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _verdicts(out):
    return [json.loads(line) for line in (out / "regrade.jsonl").read_text().splitlines()]


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_file_group_joins_shards():
    from pathlib import Path

    assert file_group(Path("gsm8k_instruct_128_64_3_generations.json")) == "gsm8k_instruct_128_64"
    assert file_group(Path("mine.jsonl")) == "mine"


def test_regrade_d1_files_without_a_model(shared_data, tmp_path, capsys):
    files = sorted((shared_data / "real_generations").glob("countdown_*.json"))[:2]
    out = tmp_path / "out"
    assert main(["eval", "--regrade", *map(str, files), "--out", str(out)]) == 0
    verdicts = _verdicts(out)
    items = [i for f in files for i in read_generations(f)[0]]
    assert len(verdicts) == len(items) and {v["task"] for v in verdicts} == {"countdown"}
    summary = json.loads((out / "regrade_summary.json").read_text())
    (group,) = summary["groups"]
    assert group["n"] == len(items) and group["correct"] == sum(v["correct"] for v in verdicts)
    assert group["correct"] > 0  # LLaDA's \boxed{...} inside <answer> is read
    assert group["group"] == "countdown_instruct_128_64" and "countdown" in capsys.readouterr().out


def test_regrade_unmask_samples_lists_disagreements(tmp_path, capsys):
    """A stored verdict that unmask's grader does not share is listed with the answer."""
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"bench": "gsm8k", "setting": "s", "problem": 0, "sample": 0, "completion": "<answer>\\boxed{6,277}</answer>",
         "reference": {"answer": "#### 6277"}, "correct": False},
        {"bench": "gsm8k", "setting": "s", "problem": 1, "sample": 0, "completion": "<answer>12</answer>",
         "reference": {"answer": "#### 12"}, "correct": True},
        {"bench": "countdown", "setting": "s", "problem": 0, "sample": 0,
         "completion": "<answer>\\boxed{49 + 55 - 53}</answer>", "reference": {"nums": [49, 55, 53], "target": 51},
         "correct": False},
    ]  # fmt: skip
    samples = _write_jsonl(run / "samples.jsonl", records)
    out = tmp_path / "out"
    main(["eval", "--regrade", str(samples), "--out", str(out), "--show-disagreements"])
    printed = capsys.readouterr().out
    assert [v["correct"] for v in _verdicts(out)] == [True, True, True]
    assert [v["stored_correct"] for v in _verdicts(out)] == [False, True, False]
    assert "samples.jsonl#0" in printed and "samples.jsonl#2" in printed and "samples.jsonl#1" not in printed
    assert "6,277" in printed


def test_regrade_plain_jsonl_with_task_columns(tmp_path):
    plain = _write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"task": "math", "completion": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
            {"task": "math", "completion": "so \\boxed{3}", "answer": "0.5"},
            {"completion": "<answer>1234432121433412</answer>", "puzzle": "0204032001400402",
             "solution": "1234432121433412"},
        ],
    )  # fmt: skip
    out = tmp_path / "out"
    main(["eval", "--regrade", str(plain), "--out", str(out)])
    verdicts = _verdicts(out)
    assert [(v["task"], v["correct"]) for v in verdicts] == [("math", True), ("math", False), ("sudoku", True)]


def test_regrade_plain_jsonl_answer_needs_a_task(tmp_path):
    plain = _write_jsonl(tmp_path / "answers.jsonl", [{"completion": "\\boxed{3}", "answer": "3"}])
    with pytest.raises(UserError, match="add a 'task' column or pass --task"):
        read_generations(plain)
    items, _ = read_generations(plain, task="gsm8k")
    assert items[0].task == "gsm8k"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"answer": "3"}\n', "needs a 'completion' string"),
        ("not json\n", "not valid JSON"),
        ('{"task": "countdown", "completion": "1+2", "nums": [1, 2]}\n', "needs reference column"),
    ],
)
def test_regrade_bad_jsonl_is_one_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(UserError, match=message):
        read_generations(bad)


def test_regrade_missing_file_and_bad_task(tmp_path):
    with pytest.raises(UserError, match="no such generation file"):
        read_generations(tmp_path / "nope.json")
    with pytest.raises(UserError, match="--task"):
        read_generations(tmp_path / "nope.json", task="chess")
