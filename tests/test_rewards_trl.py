"""Reward functions written for TRL, unchanged, through unmask's own RewardRunner and trainer.

TRL's ``GRPOTrainer._calculate_rewards`` calls a reward function once per batch with
``prompts``, ``completions``, ``completion_ids``, every dataset column,
``trainer_state``, ``log_extra`` and ``log_metric``, and awaits async functions. The
functions below are loaded by dotted path (``test_rewards_trl:...``), inside worker
processes where ``num_workers`` > 0, as a user's reward module is.
"""

from __future__ import annotations

import asyncio
import types

import pytest
from test_trainer import ROWS, make_model, recipe

from unmask.rewards.batch import RewardState
from unmask.rewards.registry import RewardSpec
from unmask.rewards.result import RewardConfigError
from unmask.rewards.runner import RewardRunner
from unmask.rl.logging import read_metrics
from unmask.rl.trainer import Trainer

#: the keywords each in-process call of ``recording_reward`` received, in call order
CALLS: list[dict] = []
#: what TRL passes besides prompts, completions and the dataset columns
TRL_KEYWORDS = {"completion_ids", "trainer_state", "log_extra", "log_metric"}


def recording_reward(prompts, completions, **kwargs):
    CALLS.append({"prompts": prompts, "completions": completions, **kwargs})
    return [float(len(c)) for c in completions]


def schedule_reward(prompts, completions, completion_ids, trainer_state, log_metric, log_extra, **columns):
    """Uses every TRL keyword: a progress-scaled length reward over the token ids."""
    progress = trainer_state.global_step / trainer_state.max_steps
    log_metric("judge/progress", progress)
    log_extra("answer_seen", list(columns["answer"]))
    return [progress * len(ids) for ids in completion_ids]


async def async_reward(prompts, completions, **kwargs):
    await asyncio.sleep(0.01)  # e.g. an LLM judge over the network
    kwargs["log_metric"]("judge/calls", 1.0)
    return [1.0 if c.startswith("yes") else None for c in completions]


def batch_mean_reward(prompts, completions, **kwargs):
    """Depends on the whole batch: only a batch call gives TRL's values."""
    mean = sum(len(c) for c in completions) / len(completions)
    return [len(c) - mean for c in completions]


def short_reward(prompts, completions, **kwargs):
    return [1.0]


def spec(name: str, weight: float = 1.0) -> RewardSpec:
    return RewardSpec(f"test_rewards_trl:{name}", weight)


def trl_keywords(fn, prompts, completions, completion_ids, rows, global_step):
    """The keywords TRL 1.x's own ``_calculate_rewards`` passes ``fn`` (run on a minimal trainer object)."""
    from transformers import TrainerState
    from trl import GRPOTrainer

    trainer = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(device="cpu", is_main_process=True), args=types.SimpleNamespace(report_to=[]),
        reward_funcs=[fn], reward_processing_classes=[None], reward_func_names=[fn.__name__],
        state=TrainerState(global_step=global_step), environments=None,
        _log_completion_extra=lambda column, values: None, _log_metric=lambda name, value: None,
    )  # fmt: skip
    CALLS.clear()
    GRPOTrainer._calculate_rewards(trainer, [{"prompt": p, **row} for p, row in zip(prompts, rows, strict=True)],
                                   prompts, completions, completion_ids)  # fmt: skip
    (call,) = CALLS
    return call


def test_same_keywords_and_values_as_trl_in_one_call():
    prompts, completions, ids = ["q1", "q2", "q3"], ["abc", "de", "abc"], [[5, 6, 2], [7, 2], [5, 6, 2]]
    rows = [{"answer": "1", "nums": [1, 2]}, {"answer": "2", "nums": [3]}, {"answer": "1", "nums": [1, 2]}]
    trl = trl_keywords(recording_reward, prompts, completions, ids, rows, global_step=3)
    CALLS.clear()
    with RewardRunner([spec("recording_reward")], num_workers=0) as runner:
        runner.state = RewardState(global_step=3, max_steps=10)
        batch = runner.score(prompts, completions, {k: [r[k] for r in rows] for k in rows[0]}, completion_ids=ids)
    (ours,) = CALLS  # one call for the batch, duplicates included, as TRL makes it
    assert set(ours) == set(trl) == {"prompts", "completions", "answer", "nums"} | TRL_KEYWORDS
    for key in ("prompts", "completions", "completion_ids", "answer", "nums"):
        assert ours[key] == trl[key], key
    assert ours["trainer_state"].global_step == trl["trainer_state"].global_step == 3
    assert callable(ours["log_metric"]) and callable(ours["log_extra"])
    assert batch.per_reward["test_rewards_trl:recording_reward"] == [3.0, 2.0, 3.0]


def test_every_keyword_crosses_the_worker_boundary():
    texts, ids = ["a", "bb", "ccc"], [[1], [1, 2], [1, 2, 3]]
    with RewardRunner([spec("schedule_reward")], num_workers=1, deadline_s=30.0) as runner:
        runner.state = RewardState(global_step=5, max_steps=10)
        batch = runner.score(["q"] * 3, texts, {"answer": ["x", "y", "z"]}, completion_ids=ids)
    assert batch.per_reward["test_rewards_trl:schedule_reward"] == [0.5, 1.0, 1.5]
    assert batch.metrics["judge/progress"] == 0.5
    assert batch.extra == {"answer_seen": ["x", "y", "z"]}


def test_async_function_runs_and_none_means_no_reward():
    specs = [spec("async_reward", 2.0), spec("batch_mean_reward", 1.0)]
    for workers in (0, 1):
        with RewardRunner(specs, num_workers=workers, deadline_s=30.0) as runner:
            batch = runner.score(["q"] * 3, ["yes", "nope", "yes k"])
        assert batch.per_reward["test_rewards_trl:async_reward"] == [1.0, None, 1.0]
        assert batch.per_reward["test_rewards_trl:batch_mean_reward"] == [-1.0, 0.0, 1.0]
        assert batch.totals == [1.0, 0.0, 3.0]  # None adds nothing, as TRL's nansum
        assert batch.metrics["judge/calls"] == 1.0
        assert batch.metrics["rewards/test_rewards_trl:async_reward/mean"] == 1.0


def test_async_function_called_from_a_running_event_loop():
    async def inside_a_notebook():
        with RewardRunner([spec("async_reward")], num_workers=0) as runner:
            return runner.score(["q"], ["yes"])

    assert asyncio.run(inside_a_notebook()).totals == [1.0]


def test_wrong_length_stops_with_the_function_named():
    with RewardRunner([spec("short_reward")], num_workers=0) as runner, pytest.raises(
        RewardConfigError, match="short_reward.*returned 1 values for 3 completions"
    ):
        runner.score([""] * 3, ["a", "b", "c"])


def test_trainer_passes_step_and_token_ids_and_logs_reward_metrics(tmp_path):
    r = recipe(tmp_path, "diffu_grpo", optim={"max_steps": 2},
               rewards={"functions": [{"name": "test_rewards_trl:schedule_reward"}, {"name": "test_trainer:digit_reward"}],
                        "num_workers": 1, "timeout": 30.0})  # fmt: skip
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    list(trainer.steps())
    logged = read_metrics(tmp_path / "diffu_grpo" / "metrics.jsonl")
    assert [m["judge/progress"] for m in logged] == [0.0, 0.5]  # global_step 0 and 1 of max_steps 2
    # step 1: progress 0.5 x the answer's token count, EOS included: positive wherever tokens came back
    assert logged[1]["rewards/test_rewards_trl:schedule_reward/mean"] > 0
