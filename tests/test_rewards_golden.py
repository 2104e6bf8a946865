"""Golden cases (tests/golden_rewards.jsonl, hand-checked) and adversarial inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from unmask.rewards.graders import grade
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner

GOLDEN = [json.loads(line) for line in (Path(__file__).parent / "golden_rewards.jsonl").open()]

ADVERSARIAL = {
    "power": "9**9**9**9",
    "latex_tower": "9^{9^{9^{9}}}",
    "parens": "(" * 10_000,
    "import": "__import__('os').system('true')",
    "huge_int": "1" * 10_000,
    "div_zero": "1/0",
    "empty": "",
    "nul": "\x00\x00\x00",
    "surrogates": "\ud800\udfff",
    "replacement": "\ufffd\ufffd",
    "megabyte": "x" * 1_000_000,
}
WRAPPERS = ("{}", "\\boxed{{{}}}", "<answer>{}</answer>")
REFERENCES = {
    "math": {"answer": ["5"]},
    "gsm8k": {"answer": ["#### 5"]},
    "countdown": {"nums": ["1,2,3"], "target": [6]},
}


def test_golden_file_is_large_and_covers_every_task():
    tasks = {case["task"] for case in GOLDEN}
    assert len(GOLDEN) >= 150 and tasks == {"math", "gsm8k", "countdown", "sudoku"}


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{c['task']}-{c['note']}" for c in GOLDEN])
def test_golden_case(case):
    result = grade(case["task"], case["completion"], **case["reference"])
    assert (result.correct, result.score) == pytest.approx((case["correct"], case["score"]))


@pytest.mark.parametrize("name", [n for n in ADVERSARIAL if n != "latex_tower"])
def test_adversarial_in_process_scores_zero_fast(name):
    """Everything but the sympy power tower is refused cheaply, even without a pool."""
    for task, reference in REFERENCES.items():
        for wrapper in WRAPPERS:
            started = time.perf_counter()
            result = grade(
                task, wrapper.format(ADVERSARIAL[name]), **{k: v[0] for k, v in reference.items()}
            )
            assert result.score == 0.0 and not result.correct, (task, wrapper)
            assert time.perf_counter() - started < 1.0, (task, wrapper)


def test_adversarial_through_pool_all_zero_within_deadline():
    deadline = 2.0
    texts = [w.format(p) for p in ADVERSARIAL.values() for w in WRAPPERS]
    specs = [RewardSpec(task) for task in REFERENCES]
    columns = {k: v * len(texts) for ref in REFERENCES.values() for k, v in ref.items()}
    with RewardRunner(specs, num_workers=2, deadline_s=deadline) as runner:
        started = time.perf_counter()
        batch = runner.score([""] * len(texts), texts, columns)
        elapsed = time.perf_counter() - started
        assert batch.totals == [0.0] * len(texts)
        # the boxed and tagged towers hang sympy: each costs one deadline, no more
        assert batch.metrics["timeouts"] == 2 and batch.metrics["worker_restarts"] == 2
        assert elapsed < 3 * deadline + 3
        # the pool survived: a normal item still grades
        after = runner.score([""], ["\\boxed{5}"], {k: v[:1] for k, v in columns.items()})
        assert after.per_reward["math"] == [1.0]
