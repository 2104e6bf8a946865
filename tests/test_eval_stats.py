"""Evaluation building blocks without a model: pass@k, bootstrap, sample log, summaries, compare."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.evaluation import (
    EvalSettings,
    SampleLog,
    compare_records,
    paired_bootstrap,
    pass_at_k,
    read_samples,
    settings_grid,
    summarize,
)
from unmask.evaluation.settings import parse_int_list


def test_pass_at_k_hand_computed() -> None:
    # n=5 samples, c=2 correct, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(4, 0, 3) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # only one wrong sample: any 2 contain a correct one
    with pytest.raises(ValueError, match="0 < k <= n"):
        pass_at_k(2, 1, 3)


def test_bootstrap_identical_runs_give_zero() -> None:
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    ci = paired_bootstrap(scores, scores, seed=3)
    assert ci.diff == 0.0 and ci.contains(0.0) and (ci.low, ci.high) == (0.0, 0.0)


def test_bootstrap_clearly_better_run_is_above_zero_and_seeded() -> None:
    a = [0.0] * 30 + [1.0] * 10
    b = [1.0] * 25 + [0.0] * 5 + [1.0] * 10
    ci = paired_bootstrap(a, b, seed=1)
    assert ci.diff == pytest.approx(25 / 40)
    assert 0.0 < ci.low < ci.diff < ci.high <= 1.0
    assert paired_bootstrap(a, b, seed=1) == ci
    noisy = paired_bootstrap([0.0, 1.0] * 10, [1.0, 0.0] * 10, seed=1)
    assert noisy.contains(0.0)


def test_settings_grid_follows_the_protocol() -> None:
    grid = settings_grid([16, 128])
    assert [(s.gen_length, s.steps, s.block_length) for s in grid] == [(16, 8, 16), (128, 64, 32)]
    grid = settings_grid([64], steps=[64, 32], block_length=8, temperature=0.5, remasking="random")
    assert [s.label for s in grid] == [
        "len64-steps64-block8-random-t0.5",
        "len64-steps32-block8-random-t0.5",
    ]
    with pytest.raises(UserError, match=r"--gen-length \(64\) must be a positive multiple of --block-length \(24\)"):
        settings_grid([64], block_length=24)
    with pytest.raises(UserError, match="--remasking 'best'"):
        EvalSettings(8, 4, 8, remasking="best")
    with pytest.raises(UserError, match="--steps expects a comma list"):
        parse_int_list("--steps", "8,x")


def _record(bench: str, problem: int, sample: int, correct: bool, **extra: object) -> dict:
    settings = EvalSettings(8, 4, 8)
    return {
        "bench": bench, "setting": settings.label, "settings": settings.as_dict(), "problem": problem,
        "sample": sample, "correct": correct, "answer_tokens": 4, "nfe": 4, "seconds": 0.5, **extra,
    }  # fmt: skip


def test_summary_pass_at_k_and_rates() -> None:
    # problem 0: 2 of 3 correct (pass@3 = 1), problem 1: 0 of 3 (pass@3 = 0)
    records = [_record("gsm8k", 0, k, k < 2) for k in range(3)] + [_record("gsm8k", 1, k, False) for k in range(3)]
    (summary,) = summarize(records)
    assert summary.problems == 2 and summary.samples_per_problem == 3
    assert summary.accuracy == pytest.approx(2 / 6)
    assert summary.pass_at_k == {3: pytest.approx(0.5)}
    assert summary.tokens_per_second == pytest.approx(8.0)
    assert summary.nfe_per_answer == 4.0


def test_sample_log_resumes_and_tolerates_a_truncated_last_line(tmp_path) -> None:
    log = SampleLog(tmp_path)
    log.append([_record("amc", p, 0, p % 2 == 0) for p in range(3)])
    path = tmp_path / "samples.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 10])  # crash in the middle of the last line
    assert [r["problem"] for r in read_samples(path)] == [0, 1]
    reopened = SampleLog(tmp_path)
    assert reopened.done == {("amc", _record("amc", 0, 0, True)["setting"], p, 0) for p in (0, 1)}
    reopened.append([_record("amc", p, 0, True) for p in range(4)])  # 0 and 1 are skipped
    lines = path.read_text().splitlines()
    assert [json.loads(line)["problem"] for line in lines] == [0, 1, 2, 3]


def test_sample_log_rejects_corruption_before_the_end(tmp_path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"bench": \n' + json.dumps(_record("amc", 0, 0, True)) + "\n")
    with pytest.raises(UserError, match="samples.jsonl:1: corrupt line"):
        read_samples(path)


def test_compare_lists_flips_and_pairs_by_problem() -> None:
    a = [_record("math500", p, 0, p in (0, 1)) for p in range(4)]
    b = [_record("math500", p, 0, p in (1, 2, 3)) for p in range(4)]
    (c,) = compare_records(a, b, seed=0)
    assert (c.accuracy_a, c.accuracy_b) == (0.5, 0.75)
    assert c.gained == [2, 3] and c.lost == [0]
    assert c.ci.diff == pytest.approx(0.25) and c.ci.n == 4
    (same,) = compare_records(a, a)
    assert same.gained == same.lost == [] and same.ci.contains(0.0)
    assert compare_records(a, [_record("gsm8k", 0, 0, True)]) == []
