"""The RL trainer end to end on the tiny family: every algorithm, resume, reference, NaN guard."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from unmask.cli import main
from unmask.errors import UserError
from unmask.models import load_model
from unmask.models.tiny import tiny
from unmask.recipe import validate_recipe
from unmask.rl.logging import read_metrics
from unmask.rl.trainer import Trainer, TrainingDiverged, train

TINY = {"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}
make_model = functools.partial(tiny, TINY, seed=0)
ROWS = [{"prompt": f"write digits {i}", "reasoning": "aaaaaaaaaaaa #### bbbbb", "answer": "bbbbb"} for i in range(8)]


def digit_reward(prompts, completions, **columns):
    """Fraction of digits: varies between random answers, so advantages are non-zero."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def inf_reward(prompts, completions, **columns):
    """Infinite rewards make every advantage NaN (inf − inf)."""
    return [float("inf")] * len(completions)


def recipe(tmp_path, name: str, **sections):
    raw = {
        "seed": 0,
        "output_dir": str(tmp_path / name),
        "lora": {"r": 4, "alpha": 8},
        "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8,
                    "steps": 4, "block_length": 8, "temperature": 1.0,
                    "remasking": "rcr" if name == "mdpo" else "low_confidence"},
        "algorithm": {"name": name, "num_iterations": 2, "correct_threshold": 0.3,
                      **({"sample_train_steps": 2} if name == "mdpo" else {})},
        "rewards": {"functions": [{"name": "test_trainer:digit_reward"}], "num_workers": 0},
        "optim": {"max_steps": 3, "learning_rate": 1e-2, "per_device_train_batch_size": 2,
                  "gradient_accumulation_steps": 2},
        "logging": {"progress": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_recipe(raw, "test")


def comparable(record):
    return {k: v for k, v in record.items() if not k.startswith("time/") and k != "tokens_per_second"}


TRACE = {"estimator": "trajectory", "trajectory_steps": 2}  # diffu-GRPO on replayed commit steps
# digit_reward is graded, never 'correct': MDPO's default correctness-only step rewards would all be 0
MDPO_SHAPED = {"step_reward": "reward"}


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [("diffu_grpo", {}), ("diffu_grpo", TRACE), ("mdpo", MDPO_SHAPED), ("igpo", {}), ("wd1", {}),
     ("spg", {"mask_block_length": 4}), ("espo", {}), ("bgpo", {"mc_samples": 2})],
    ids=["diffu_grpo", "diffu_grpo-trajectory", "mdpo", "igpo", "wd1", "spg", "espo", "bgpo"],
)
def test_three_steps_of_each_algorithm_through_the_ray_pool(tmp_path, algorithm, options, ray_pool):
    r = recipe(tmp_path, algorithm, ray={"address": "local", "num_workers": 1}, algorithm=options)
    trainer = Trainer(r, model_factory=make_model, rows=ROWS, pool=ray_pool)
    before = {k: v.clone() for k, v in trainer.unwrapped.named_parameters() if v.requires_grad}
    last = list(trainer.steps())[-1]
    records = read_metrics(tmp_path / algorithm / "metrics.jsonl")
    assert [rec["step"] for rec in records] == [1, 2, 3]
    for key in ("reward", "accuracy", "entropy", "all_wrong_fraction", "forward_passes", "tokens_per_second",
                "time/rollout", "time/reward", "time/update", "rewards/test_trainer:digit_reward/mean"):
        assert key in last and math.isfinite(last[key]), key
    assert last["skipped"] == 0.0 and last["forward_passes"] > 0
    assert ray_pool.num_workers == 1 and ray_pool.version == 3  # adapter pushed after every update
    after = dict(trainer.unwrapped.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapter learned something
    assert (tmp_path / algorithm / "checkpoint-3" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_warmup_steps_ramp_the_learning_rate_for_every_schedule(tmp_path, schedule):
    r = recipe(tmp_path, "diffu_grpo", optim={"max_steps": 4, "warmup_steps": 2, "lr_scheduler_type": schedule})
    lrs = [metrics["lr"] for metrics in Trainer(r, model_factory=make_model, rows=ROWS).steps()]
    assert lrs[0] < lrs[1] == pytest.approx(1e-2), lrs  # ramps to the peak, then holds or decays
    assert lrs[3] == pytest.approx(1e-2) if schedule == "constant" else lrs[3] < lrs[2]


def test_lora_checkpoint_is_a_peft_adapter_that_export_merges(tmp_path):
    """``unmask export --adapter runs/x/checkpoint-N`` gives the trained policy's logits."""
    trainer = Trainer(recipe(tmp_path, "diffu_grpo"), model_factory=make_model, rows=ROWS)
    list(trainer.steps())
    make_model().save_pretrained(tmp_path / "base")
    checkpoint = tmp_path / "diffu_grpo" / "checkpoint-3"
    assert main(["export", "--model", str(tmp_path / "base"), "--adapter", str(checkpoint),
                 "--out", str(tmp_path / "merged")]) == 0
    ids = torch.randint(0, 50, (2, 12))
    trainer.unwrapped.eval()
    with torch.no_grad():
        expected = trainer.unwrapped(ids)
        assert torch.allclose(load_model(tmp_path / "merged").logits(ids), expected, atol=1e-5)
        assert not torch.allclose(make_model().logits(ids), expected, atol=1e-4)  # training moved it


def test_resume_after_a_kill_gives_identical_metrics(tmp_path):
    full = recipe(tmp_path / "full", "diffu_grpo", optim={"max_steps": 4}, checkpoint={"save_steps": 2})
    train(full, model_factory=make_model, rows=ROWS)
    killed = recipe(tmp_path / "killed", "diffu_grpo", optim={"max_steps": 4},
                    checkpoint={"save_steps": 2}, eval={"every": 1})

    def kill_at_three(model, step):
        if step == 3:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(killed, eval_fn=kill_at_three, model_factory=make_model, rows=ROWS)
    out = tmp_path / "killed" / "diffu_grpo"
    assert not (out / "checkpoint-4").exists() and (out / "checkpoint-2").is_dir()
    resumed = killed.model_copy(update={"checkpoint": killed.checkpoint.model_copy(
        update={"resume_from": str(out / "checkpoint-2")})})
    train(resumed, model_factory=make_model, rows=ROWS)
    expected = [comparable(r) for r in read_metrics(tmp_path / "full" / "diffu_grpo" / "metrics.jsonl")][2:]
    got = [comparable(r) for r in read_metrics(out / "metrics.jsonl")][-2:]
    assert [r["step"] for r in got] == [3, 4]
    assert got == expected


def test_reference_is_the_base_model_with_the_adapter_disabled(tmp_path):
    r = recipe(tmp_path, "diffu_grpo", optim={"max_steps": 2}, logging={"report_to": ["jsonl", "tensorboard"]})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    list(trainer.steps())
    assert list((tmp_path / "diffu_grpo" / "tensorboard").glob("events.out.tfevents.*"))
    ids = torch.randint(5, 60, (2, 12))
    base = make_model().eval()
    policy = trainer.unwrapped.eval()
    with torch.no_grad():
        with policy.disable_adapter():
            reference = policy(ids)
        adapted = policy(ids)
        expected = base(ids)
    torch.testing.assert_close(reference, expected)
    assert not torch.allclose(adapted, expected)


def test_nan_losses_skip_steps_then_stop_with_a_clear_error(tmp_path):
    r = recipe(tmp_path, "diffu_grpo", optim={"max_steps": 6},
               rewards={"functions": [{"name": "test_trainer:inf_reward"}]})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    before = {k: v.clone() for k, v in trainer.unwrapped.named_parameters() if v.requires_grad}
    with pytest.raises(TrainingDiverged, match="NaN/inf for 3 steps in a row"):
        list(trainer.steps())
    records = read_metrics(tmp_path / "diffu_grpo" / "metrics.jsonl")
    assert [rec["skipped"] for rec in records] == [1.0, 1.0, 1.0]
    assert all(torch.equal(before[k], v) for k, v in trainer.unwrapped.named_parameters() if v.requires_grad)


def test_full_fine_tuning_keeps_a_frozen_reference_copy(tmp_path):
    trainer = Trainer(recipe(tmp_path, "mdpo", lora={"enabled": False}, optim={"max_steps": 2}, algorithm=MDPO_SHAPED),
                      model_factory=make_model, rows=ROWS)
    last = list(trainer.steps())[-1]
    assert last["skipped"] == 0.0 and math.isfinite(last["kl"])
    ids = torch.randint(5, 60, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(trainer.reference(ids), make_model()(ids))
        assert not torch.allclose(trainer.unwrapped(ids), trainer.reference(ids))


def test_pool_needs_lora(tmp_path):
    r = recipe(tmp_path, "diffu_grpo", lora={"enabled": False}, ray={"address": "local", "num_workers": 1})
    with pytest.raises(UserError, match="lora.enabled: true"):
        Trainer(r, model_factory=make_model, rows=ROWS)


def count_runs(module: torch.nn.Module) -> list[int]:
    """A list that grows by one per run of ``module.forward`` (checkpoint recomputation skips hooks)."""
    calls: list[int] = []
    forward = module.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    module.forward = counted
    return calls


@pytest.mark.parametrize("lora", [True, False])
def test_gradient_checkpointing_recomputes_blocks_with_unchanged_updates(tmp_path, lora):
    """``model.gradient_checkpointing`` re-runs the blocks in backward; the step's update is the same."""
    results = {}
    for checkpointing in (False, True):
        r = recipe(tmp_path / str(checkpointing), "diffu_grpo", lora={"enabled": lora},
                   model={"gradient_checkpointing": checkpointing})
        trainer = Trainer(r, model_factory=make_model, rows=ROWS)
        calls = count_runs(trainer.base_model.blocks[0])
        metrics = trainer.train_step()
        params = {k: v.detach().clone() for k, v in trainer.unwrapped.named_parameters() if v.requires_grad}
        results[checkpointing] = (len(calls), metrics, params)
        trainer.runner.close()
    (plain_calls, plain, plain_params), (ckpt_calls, ckpt, ckpt_params) = results[False], results[True]
    assert ckpt_calls > plain_calls  # the recomputation in backward
    assert comparable(ckpt) == pytest.approx(comparable(plain), rel=1e-5) and plain["skipped"] == 0.0
    for name, value in plain_params.items():
        torch.testing.assert_close(ckpt_params[name], value, msg=name)


def test_non_finite_loss_in_a_later_inner_iteration_undoes_the_whole_update(tmp_path):
    """Iteration 1 diverges after iteration 0 stepped: parameters and Adam state are as before the step."""
    trainer = Trainer(recipe(tmp_path, "diffu_grpo"), model_factory=make_model, rows=ROWS)
    assert trainer.train_step()["skipped"] == 0.0  # Adam has moments to corrupt now
    trainer.step += 1
    params = {k: v.detach().clone() for k, v in trainer.unwrapped.named_parameters() if v.requires_grad}
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e36  # the first inner step overflows the adapter, the next loss is NaN
    state = copy.deepcopy(trainer.optimizer.state_dict())
    taken = []
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: taken.append(1))
    metrics = trainer.train_step()
    assert taken and metrics["skipped"] == 1.0 and not math.isfinite(metrics["loss"])
    for name, param in trainer.unwrapped.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, params[name]), name
            assert param.grad is None
    restored = trainer.optimizer.state_dict()
    assert restored["param_groups"] == state["param_groups"]
    for index, moments in state["state"].items():
        for key, value in moments.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)


@pytest.mark.parametrize(("change", "message"), [
    ({"lora": {"enabled": False}}, "missing trainable.safetensors"),
    ({"lora": {"r": 8, "alpha": 16}}, "other shapes"),
])
def test_resume_into_other_lora_settings_names_the_setting(tmp_path, change, message):
    saved = recipe(tmp_path / "saved", "diffu_grpo", optim={"max_steps": 2}, checkpoint={"save_steps": 2})
    train(saved, model_factory=make_model, rows=ROWS)
    other = recipe(tmp_path / "other", "diffu_grpo", checkpoint={
        "resume_from": str(tmp_path / "saved" / "diffu_grpo" / "checkpoint-2")}, **change)
    with pytest.raises(UserError, match=message):
        train(other, model_factory=make_model, rows=ROWS)
