"""RewardRunner: weights, dedup, cache, containment of failing/hanging/crashing plug-ins.

The plug-ins below are loaded by dotted path (``test_rewards_runner:...``) inside the
worker processes, exactly as a user's reward module would be. Like every function that
is not built in, they are called once per batch, as TRL calls them.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from unmask.rewards.registry import RewardSpec
from unmask.rewards.result import RewardConfigError
from unmask.rewards.runner import RewardRunner


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def flaky_reward(prompts, completions, **_):
    if any("boom" in c for c in completions):
        raise ValueError("boom seen")
    return [1.0] * len(completions)


def hang_reward(prompts, completions, **_):
    if any("hang" in c for c in completions):
        time.sleep(60)
    return [1.0] * len(completions)


def crash_reward(prompts, completions, **_):
    if any("crash" in c for c in completions):
        os.kill(os.getpid(), signal.SIGKILL)
    return [1.0] * len(completions)


def greedy_reward(prompts, completions, **_):
    bytearray(3 * 2**30)
    return [1.0] * len(completions)


def two_values_reward(prompts, completions, **_):
    return [1.0, 1.0]


def text_reward(prompts, completions, **_):
    return ["high"]


def spec(name: str, weight: float = 1.0) -> RewardSpec:
    return RewardSpec(f"test_rewards_runner:{name}", weight)


def test_weighted_total_and_per_reward_values_in_process():
    specs = [RewardSpec("gsm8k", 2.0), RewardSpec("format_soft", 0.5), spec("length_reward", 0.0)]
    texts = ["<reasoning>r</reasoning><answer>7</answer>", "so 8", "<answer>8</answer>"]
    with RewardRunner(specs, num_workers=0) as runner:
        batch = runner.score(["q"] * 3, texts, {"answer": ["#### 7", "#### 7", "#### 8"]})
    assert batch.per_reward["gsm8k"] == [1.0, 0.0, 1.0]
    assert batch.per_reward["format_soft"] == [1.0, 0.0, 0.0]
    assert batch.totals == [2.5, 0.0, 2.0]
    assert batch.metrics["rewards/gsm8k/mean"] == pytest.approx(2 / 3)


def test_mdpo_like_batch_is_deduplicated_then_cached():
    texts = ["\\boxed{1}", "\\boxed{2}"] * 6 + ["\\boxed{3}"]
    with RewardRunner([RewardSpec("math")], num_workers=0) as runner:
        first = runner.score([""] * 13, texts, {"answer": ["2"] * 13})
        second = runner.score([""] * 13, texts, {"answer": ["2"] * 13})
        other_reference = runner.score([""], ["\\boxed{1}"], {"answer": ["1"]})
    assert first.metrics["graded"] == 3 and first.metrics["dedup_hits"] == 10
    assert second.metrics["graded"] == 0 and second.metrics["cache_hits"] == 13
    assert second.per_reward["math"] == first.per_reward["math"] == [0.0, 1.0] * 6 + [0.0]
    assert other_reference.per_reward["math"] == [1.0]


def test_raising_plugin_scores_on_error_counted_and_logged_once(caplog):
    runner = RewardRunner([spec("flaky_reward")], num_workers=0, on_error=-1.0)
    with caplog.at_level(logging.WARNING, logger="unmask.rewards"):
        first = runner.score([""] * 3, ["ok", "boom 1", "ok 2"])
        second = runner.score([""] * 2, ["boom 2", "ok"])
        fine = runner.score([""] * 2, ["ok", "ok 2"])
    assert first.totals == [-1.0] * 3 and second.totals == [-1.0] * 2  # the call failed for the whole batch
    assert fine.totals == [1.0, 1.0]
    assert first.metrics["errors"] == second.metrics["errors"] == 1
    assert sum("boom seen" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "name,message", [("two_values_reward", "2 values"), ("text_reward", "str")]
)
def test_wrong_return_is_a_config_error(name, message):
    with (
        RewardRunner([spec(name)], num_workers=0) as runner,
        pytest.raises(RewardConfigError, match=message),
    ):
        runner.score([""], ["x"])


def test_bad_specs_are_refused_with_the_fix():
    with pytest.raises(RewardConfigError, match="unknown reward 'nope'"):
        RewardRunner([RewardSpec("nope")])
    with pytest.raises(RewardConfigError, match="cannot import module 'no_such_mod'"):
        RewardRunner([RewardSpec("no_such_mod:fn")])
    with pytest.raises(RewardConfigError, match="no function 'missing'"):
        RewardRunner([spec("missing")])
    with pytest.raises(RewardConfigError, match="takes no option"):
        RewardRunner([RewardSpec("countdown", kwargs={"format_scor": 0.2})])
    with pytest.raises(RewardConfigError, match="weight"):
        RewardSpec("math", weight=float("nan"))
    with pytest.raises(RewardConfigError, match="more than once"):
        RewardRunner([RewardSpec("math"), RewardSpec("math", 2.0)])


def test_missing_dataset_column_is_a_config_error():
    runner = RewardRunner([RewardSpec("countdown")], num_workers=0)
    with pytest.raises(RewardConfigError, match=r"needs dataset column\(s\) \['nums'\]"):
        runner.score([""], ["<answer>1+2</answer>"], {"target": [3]})


def test_pool_contains_hang_crash_and_memory_blowup():
    specs = [spec("hang_reward"), spec("crash_reward"), spec("greedy_reward", 0.0)]
    texts = ["fine", "hang", "crash", "fine too"]
    with RewardRunner(specs, num_workers=2, deadline_s=1.0, memory_limit_mb=512) as runner:
        started = time.perf_counter()
        batch = runner.score([""] * 4, texts)
        assert time.perf_counter() - started < 5.0
        assert batch.per_reward["test_rewards_runner:hang_reward"] == [0.0] * 4
        assert batch.per_reward["test_rewards_runner:crash_reward"] == [0.0] * 4
        assert batch.metrics["timeouts"] == 1
        # one crash plus one MemoryError from the 3 GiB allocation under a 512 MiB cap
        assert batch.metrics["errors"] == 2
        assert batch.metrics["worker_restarts"] == 2
        again = runner.score([""], ["fresh"])
        assert again.per_reward["test_rewards_runner:crash_reward"] == [1.0]
        assert again.per_reward["test_rewards_runner:hang_reward"] == [1.0]
