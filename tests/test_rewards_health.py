"""Reward health: per-step shares of unread answers, and one warning when a run starts blind."""

from __future__ import annotations

import logging

from unmask.rewards.health import RewardHealth, trim
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner

# what a grader that does not know \text{} would see all run long
UNREADABLE = "<reasoning>\n55 minus 53 is 2, plus 49 is 51\n</reasoning>\n<answer>\n\\text{55 - 53 + 49}\n</answer>"
COUNTDOWN = {"nums": [[49, 55, 53]] * 4, "target": [51] * 4}


def _step(runner: RewardRunner, completions: list[str], columns: dict) -> tuple[dict, str | None]:
    batch = runner.score([""] * len(completions), completions, columns)
    return batch.metrics, runner.end_step()


def test_shares_of_missing_and_unparseable_answers_per_reward():
    completions = [UNREADABLE, "no tags at all", "<answer>\\boxed{55 - 53 + 49}</answer>", "<answer>55-53</answer>"]
    with RewardRunner([RewardSpec("countdown"), RewardSpec("format_soft")], num_workers=0) as runner:
        metrics = runner.score([""] * 4, completions, COUNTDOWN).metrics
    assert metrics["rewards/countdown/no_answer"] == 0.25
    assert metrics["rewards/countdown/unparseable"] == 0.25
    assert "rewards/format_soft/no_answer" not in metrics  # format rewards have no answer to read


def test_warns_once_naming_reward_reason_and_completion(caplog):
    with RewardRunner([RewardSpec("countdown")], num_workers=0) as runner, caplog.at_level(logging.WARNING, "unmask.rewards"):
        warnings = [_step(runner, [UNREADABLE] * 4, COUNTDOWN)[1] for _ in range(5)]
    assert warnings[:2] == [None, None] and warnings[3:] == [None, None]
    message = warnings[2]
    assert "'countdown'" in message and "first 3 steps" in message and "12 of 12" in message
    assert "unparseable: character '\\\\' is not allowed" in message
    assert "\\\\text{55 - 53 + 49}" in message  # the offending completion, trimmed to its end
    assert [r.getMessage() for r in caplog.records] == [message]


def test_no_warning_when_answers_are_read_but_wrong():
    wrong = ["<answer>\\boxed{7}</answer>"] * 4
    with RewardRunner([RewardSpec("gsm8k")], num_workers=0) as runner:
        results = [_step(runner, wrong, {"answer": ["#### 5"] * 4}) for _ in range(3)]
    assert [w for _, w in results] == [None, None, None]
    assert results[-1][0]["rewards/gsm8k/no_answer"] == 0.0


def test_no_warning_once_a_step_scored():
    health = RewardHealth(watch_steps=2)
    health.record("math", ["no answer: no answer found"] * 3, ["x"] * 3, [0.0, 0.0, 0.5])
    assert health.end_step() is None
    health.record("math", ["no answer: no answer found"] * 3, ["x"] * 3, [0.0] * 3)
    assert health.end_step() is None


def test_trim_keeps_the_end_on_one_line():
    assert trim("a\nb") == "a⏎b"
    text = "x" * 500 + "<answer>5</answer>"
    assert trim(text).endswith("<answer>5</answer>") and len(trim(text)) == 241


def test_pool_and_in_process_report_the_same_reasons():
    completions = [UNREADABLE, "nothing", "\\boxed{\\frac{1}{2}}", "\\boxed{\\sqrt{2}/2}"]
    columns = {"answer": ["\\frac{\\sqrt{2}}{2}"] * 4}
    with RewardRunner([RewardSpec("math")], num_workers=0) as local:
        expected = local.score([""] * 4, completions, columns)
    with RewardRunner([RewardSpec("math")], num_workers=1) as pooled:
        got = pooled.score([""] * 4, completions, columns)
    assert got.per_reward == expected.per_reward == {"math": [0.0, 0.0, 0.0, 1.0]}
    assert got.metrics["rewards/math/no_answer"] == expected.metrics["rewards/math/no_answer"] == 0.25
    # "nothing" and 1/2 (far from the gold) are decided here; \text{…} and the surd need sympy
    assert got.metrics["in_process"] == 2


def test_trainer_warns_when_the_reward_reads_no_answer(tmp_path, caplog):
    """Three steps of the tiny model (random answers, never an <answer> block) on a
    Countdown reward: the run logs the warning once."""
    from test_trainer import make_model, recipe

    from unmask.rl.trainer import train

    rows = [{"prompt": f"numbers {i}", "nums": [1, 2, 3], "target": 6} for i in range(8)]
    config = recipe(tmp_path, "diffu_grpo", rewards={"functions": [{"name": "countdown"}], "num_workers": 0})
    with caplog.at_level(logging.WARNING, "unmask.rewards"):
        train(config, model_factory=make_model, rows=rows)
    warnings = [r.getMessage() for r in caplog.records if "gave a total reward of 0" in r.getMessage()]
    assert len(warnings) == 1 and "'countdown'" in warnings[0] and "no answer" in warnings[0]
