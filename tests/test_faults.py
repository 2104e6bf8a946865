"""Each fault of bench/faults.py injected once: survived, and (where nothing may be lost) identical."""

from __future__ import annotations

import functools
import importlib.util
import random
import sys
from pathlib import Path

import pytest
import torch

from unmask.errors import UserError
from unmask.models.tiny import tiny
from unmask.recipe import validate_recipe
from unmask.rl.trainer import Trainer

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_faults():
    sys.path.insert(0, str(BENCH))  # reward workers import fault_reward by module name
    spec = importlib.util.spec_from_file_location("faults", BENCH / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module
    spec.loader.exec_module(module)
    return module


faults = load_faults()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted 4-step ``unmask train`` run every resumed run must reproduce."""
    return faults.reference_run(tmp_path_factory.mktemp("reference"))


def check(outcome, identical: bool | None = True) -> None:
    assert outcome.survived, outcome.note
    assert outcome.identical is identical, outcome.note


@pytest.mark.slow  # three `unmask train` processes: ~2 min on a busy 2-core machine
def test_sigkill_at_a_random_point_then_resume_is_identical(reference, tmp_path):
    check(faults.sigkill_at_random_point(tmp_path, reference, random.Random(1)))


@pytest.mark.slow
def test_sigkill_mid_checkpoint_write_then_resume_is_identical(reference, tmp_path):
    outcome = faults.sigkill_mid_checkpoint(tmp_path, reference, random.Random(2))
    check(outcome)
    assert "left ['.checkpoint-" in outcome.note  # the kill really landed inside a write


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resumes_identically(reference, tmp_path):
    check(faults.sigterm(tmp_path, reference, random.Random(3)))


@pytest.mark.slow  # a local Ray session and an actor restart
def test_rollout_actor_killed_mid_batch_is_replaced_and_its_rows_rerun(tmp_path):
    check(faults.actor_killed_mid_batch(tmp_path, tmp_path, random.Random(4)))


@pytest.mark.parametrize("kind", ["kill", "hang"])
def test_a_killed_or_hung_reward_worker_costs_one_answer_and_is_counted(tmp_path, kind):
    check(faults.reward_worker_fault(tmp_path, tmp_path, random.Random(5), kind), identical=None)


def test_a_nan_loss_at_one_step_skips_only_that_step(tmp_path):
    check(faults.nan_loss_at_one_step(tmp_path, tmp_path, random.Random(6)), identical=None)


@pytest.mark.slow  # `unmask train` processes
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_checkpoint_is_refused_by_the_cli_in_one_line(reference, tmp_path, damage):
    check(faults.damaged_checkpoint(tmp_path, reference, random.Random(7), damage), identical=None)


TINY = {"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}
make = functools.partial(tiny, TINY, seed=0)
ROWS = [{"prompt": f"p {i}"} for i in range(4)]


def tiny_recipe(out: Path, **checkpoint) -> object:
    return validate_recipe({
        "seed": 0, "output_dir": str(out), "lora": {"r": 4, "alpha": 8}, "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8, "steps": 4,
                    "block_length": 8},
        "rewards": {"functions": [{"name": "test_trainer:digit_reward"}], "num_workers": 0},
        "optim": {"max_steps": 1}, "checkpoint": checkpoint, "logging": {"progress": False},
    }, "test")


@pytest.mark.parametrize(("damage", "name"), [
    ("flip", "adapter_model.safetensors"), ("truncate", "optim.pt"), ("truncate", "adapter_model.safetensors"),
    ("flip", "trainer_state.json"),
])
def test_a_damaged_checkpoint_is_refused_before_loading(tmp_path, damage, name):
    list(Trainer(tiny_recipe(tmp_path / "saved"), model_factory=make, rows=ROWS).steps())
    checkpoint = tmp_path / "saved" / "checkpoint-1"
    data = bytearray((checkpoint / name).read_bytes())
    if damage == "flip":
        data[len(data) * 3 // 4] ^= 0x20
    else:
        del data[len(data) // 2:]
    (checkpoint / name).write_bytes(bytes(data))
    trainer = Trainer(tiny_recipe(tmp_path / "resumed", resume_from=str(checkpoint)), model_factory=make, rows=ROWS)
    before = {k: v.clone() for k, v in trainer.unwrapped.named_parameters() if v.requires_grad}
    with pytest.raises(UserError, match="corrupt") as error:
        list(trainer.steps())
    assert "\n" not in str(error.value) and "earlier checkpoint" in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in trainer.unwrapped.named_parameters() if v.requires_grad)


def test_sigterm_in_process_saves_the_finished_step_and_stops(tmp_path):
    import os
    import signal

    from unmask.rl.logging import read_metrics

    def terminate_at_two(model, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step, like a scheduler's
        return {}

    recipe = tiny_recipe(tmp_path / "run").model_copy(deep=True)
    recipe.optim.max_steps, recipe.eval.every = 5, 1
    trainer = Trainer(recipe, eval_fn=terminate_at_two, model_factory=make, rows=ROWS)
    handler_before = signal.getsignal(signal.SIGTERM)  # Ray installs its own once any test started it
    steps = list(trainer.steps())
    assert trainer.preempted and len(steps) == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the run's handler is gone after it
