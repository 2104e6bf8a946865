"""The update engine both front ends call (rl/update.py): the cut of a rollout batch and its loss
scales by hand, a cut that leaves the gradient unchanged, TRL's and unmask's trainer's equal losses and
gradients on one batch, and the critic hook."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from test_rl_block_family import ROWS, tiny_block_model
from test_rollouts_block import prompts
from test_trl import MIXED_REWARDS, MODEL, config, countdown_rows
from torch import nn

from unmask.diffusion.block import BlockAbsorbingMask
from unmask.integrations.trl import DiffusionGRPOTrainer
from unmask.models import load_model
from unmask.models.sdar import tiny_sdar
from unmask.recipe import TraceRLConfig, WD1Config, validate_recipe
from unmask.rl.checkpoint import trainable_state
from unmask.rl.objective import TrainBatch, build_objective
from unmask.rl.trainer import Trainer
from unmask.rl.update import cut_batch, estimator_keys, micro_batch_loss
from unmask.rollouts.generate import generate


def test_cut_windows_and_loss_scales_by_hand():
    """10 items, micro-batches of 4, two per optimizer step: sizes 4, 4, 2 in steps [0, 1] and [2]; each
    loss is scaled by its share of its step's items (4/8, 4/8, 2/2); a padding copy weighs 0."""
    cut = cut_batch(10, seed=0, step=0, size=4, accumulate=2)
    assert [len(rows) for rows in cut.indices] == [4, 4, 2] and cut.windows == [[0, 1], [2]]
    assert sorted(torch.cat(cut.indices).tolist()) == list(range(10))
    one = torch.tensor(1.0)
    assert [float(cut.scaled(j, one)) for j in range(3)] == [0.5, 0.5, 1.0]
    padded = cut.padded(4)
    assert padded.windows == [[0, 1], [2, 3]] and float(padded.scaled(3, one)) == 0.0
    assert float(padded.scaled(2, one)) == 1.0
    by_count = cut_batch(10, seed=0, step=0, count=3)
    assert [len(rows) for rows in by_count.indices] == [4, 3, 3]
    assert torch.equal(torch.cat(by_count.indices), torch.cat(cut.indices))  # one shuffle, two cuts
    full = cut_batch(8, seed=5, step=2, size=4), cut_batch(8, seed=5, step=2, count=2)
    assert all(torch.equal(a, b) for a, b in zip(full[0].indices, full[1].indices, strict=True))
    with pytest.raises(ValueError, match="not both"):
        cut_batch(8, seed=0, step=0, size=4, count=2)


@pytest.fixture(scope="module")
def replayed():
    """A tiny block model, six recorded block rollouts and TraceRL's objective (Σ/(B·L): an item mean)."""
    model = tiny_sdar(seed=3)
    ids, mask = prompts([8, 7, 5, 8, 6, 8], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=8, steps=8, block_length=4, seed=4,
                    temperature=1.0, record=True)
    objective = build_objective(TraceRLConfig(), process=model.process, temperature=1.0, gen_length=8)
    batch = TrainBatch(traj, torch.tensor([1.0, -0.5, 0.25, -1.0, 2.0, -0.75]))
    return model, objective, batch


def accumulated_gradient(model, objective, batch, size: int) -> dict[str, torch.Tensor]:
    """One optimizer step's gradient over the whole batch cut into micro-batches of ``size`` items."""
    cut = cut_batch(len(batch), seed=0, step=0, size=size, accumulate=len(batch))
    micro = cut.select(batch, "cpu")
    keys = estimator_keys(objective, micro, seed=0, step=0, iterations=1, process_index=0)
    model.zero_grad()
    for j, mb in enumerate(micro):
        loss, _ = micro_batch_loss(objective, model, mb, keys[0][j], None, None)
        cut.scaled(j, loss).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_the_cut_leaves_the_gradient_unchanged(replayed):
    """Six items as one micro-batch, or cut in 4 + 2, 3 + 3 or six singles: the same step gradient."""
    model, objective, batch = replayed
    whole = accumulated_gradient(model, objective, batch, 6)
    assert any(g.abs().sum() > 0 for g in whole.values())
    for size in (4, 3, 1):
        cut = accumulated_gradient(model, objective, batch, size)
        for name, grad in whole.items():
            torch.testing.assert_close(cut[name], grad, rtol=1e-5, atol=1e-7, msg=f"size {size}: {name}")


class ToyCritic(nn.Module):
    """One learned value for every token: ``A_j = R − V`` (TraceRL's with γ = λ = 1), loss ``½(V − R)²``."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(0.3))
        self.keys: list[object] = []

    def advantages(self, batch: TrainBatch, key: object) -> torch.Tensor:
        self.keys.append(key)
        return (batch.advantages[:, None] - self.value).expand(len(batch), batch.traj.gen_length)

    def loss(self, batch: TrainBatch, key: object) -> torch.Tensor:
        return 0.5 * ((self.value - batch.advantages) ** 2).mean()


@pytest.mark.parametrize("with_critic", [False, True], ids=["policy", "with_critic"])
def test_trl_and_unmasks_trainer_give_one_loss_and_gradient(tmp_path: Path, with_critic: bool):
    """One prepared batch of 8 answers, micro-batches of 4, two accumulated into one optimizer step, the
    same adapter (and a toy critic on both sides, or none): the TRL front end's scaled micro-batch losses
    sum to unmask's step loss, and its gradients are the ones unmask's trainer steps with."""
    rows = countdown_rows(MIXED_REWARDS)
    recipe = validate_recipe({
        "seed": 3, "output_dir": str(tmp_path / "unmask"), "model": {"name_or_path": MODEL},
        "lora": {"r": 4, "alpha": 8}, "data": {"chat_template": False},
        "rollout": {"num_generations": 4, "prompts_per_step": 2, "max_completion_length": 16, "steps": 16,
                    "block_length": 16, "temperature": 1.0},
        "algorithm": {"name": "diffu_grpo", "beta": 0.04, "epsilon": 0.5, "p_mask": 0.3},
        "rewards": {"functions": [{"name": "countdown"}], "num_workers": 0},
        "optim": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "max_grad_norm": 0.0,
                  "max_steps": 1},
        "logging": {"progress": False, "report_to": []}, "ray": {"address": None},
    }, "test")
    critics = (ToyCritic(), ToyCritic()) if with_critic else (None, None)
    native = Trainer(recipe, rows=rows, critic=critics[0])
    with torch.no_grad():  # a trained-looking adapter: policy and reference differ
        for name, param in native.unwrapped.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    state = {k: v.clone() for k, v in trainable_state(native.unwrapped).items()}
    rollout, _ = native.rollout()
    batch = native.objective.prepare(rollout, native.rollouts)
    assert len(batch) == 8 and batch.advantages.abs().sum() > 0
    stepped: dict[str, torch.Tensor] = {}
    named = [(name, p) for name, p in native.unwrapped.named_parameters() if p.requires_grad]
    native.optimizer.optimizer.register_step_pre_hook(
        lambda *_: stepped.update({name: p.grad.clone() for name, p in named}))
    native_loss = native.update(batch)["loss"]

    args = config(tmp_path, seed=3, beta=0.04, epsilon=0.5, p_mask=0.3, scale_rewards="none", max_steps=1,
                  num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trl = DiffusionGRPOTrainer(load_model(MODEL), reward_funcs=lambda prompts, completions, **_: [0.0] * len(prompts),
                               args=args, train_dataset=Dataset.from_list(rows), peft_config=LoraConfig(r=4, lora_alpha=8),
                               critic=critics[1])
    assert not trl.model.load_state_dict(state, strict=False).unexpected_keys
    trl._batch = batch
    trl._plan_update()
    trl.model.train()
    total = 0.0
    for j, inputs in enumerate(trl._buffered_inputs):
        trl._step = j
        loss = trl.compute_loss(trl.model, inputs)
        loss.backward()  # what transformers does with it: loss_is_scaled_for_ga
        total += float(loss.detach())
    assert DiffusionGRPOTrainer.loss_is_scaled_for_ga and len(trl._buffered_inputs) == 2
    assert total == pytest.approx(native_loss, rel=1e-6)
    grads = {name: p.grad for name, p in trl.model.named_parameters() if p.requires_grad}
    assert stepped.keys() == grads.keys() and any(g.abs().sum() > 0 for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, stepped[name], rtol=1e-5, atol=1e-8, msg=name)
    if with_critic:
        assert len(critics[0].keys) == len(critics[1].keys) == 2
        torch.testing.assert_close(critics[1].value.grad, critics[0].value.grad)


def test_a_critic_gives_token_advantages_and_adds_its_value_loss(replayed):
    model, objective, batch = replayed
    critic = ToyCritic()
    loss, metrics = micro_batch_loss(objective, model, batch, 7, None, None, critic)
    assert critic.keys == [7]  # called with the policy pass's key
    scores = objective.estimator.token_logprobs(model, batch.traj, 7)
    token_advantages = (batch.advantages[:, None] - 0.3).expand(len(batch), 8)
    policy, _ = objective.loss(replace(batch, advantages=token_advantages), scores, None, None)
    value_loss = 0.5 * float(((0.3 - batch.advantages) ** 2).mean())
    assert float(loss.detach()) == pytest.approx(float(policy.detach()) + value_loss, rel=1e-6)
    assert metrics["value_loss"] == pytest.approx(value_loss, rel=1e-6)
    loss.backward()  # the advantages are targets: only the value loss reaches the critic
    assert float(critic.value.grad) == pytest.approx(float((0.3 - batch.advantages).mean()), rel=1e-6)
    model.zero_grad()
    wd1 = build_objective(WD1Config(), process=BlockAbsorbingMask(0), temperature=1.0, gen_length=8)
    with pytest.raises(ValueError, match="token-level policy loss"):
        micro_batch_loss(wd1, model, batch, 7, None, None, critic)


def test_unmasks_trainer_calls_the_critic_on_every_micro_batch(tmp_path):
    recipe = validate_recipe({
        "seed": 0, "output_dir": str(tmp_path), "lora": {"r": 4, "alpha": 8}, "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8, "steps": 4,
                    "block_length": 4, "temperature": 1.0},
        "algorithm": {"name": "tracerl", "group_filter": "none", "truncated_wrong_margin": None},
        "rewards": {"functions": [{"name": "test_rl_block_family:digit_reward"}], "num_workers": 0},
        "optim": {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2},
        "logging": {"progress": False, "report_to": []}, "eval": {"every": 0}, "checkpoint": {"save_final": False},
    }, "test")
    critic = ToyCritic()
    trainer = Trainer(recipe, model_factory=functools.partial(tiny_block_model, 0), rows=ROWS, critic=critic)
    metrics = trainer.train_step()
    assert len(critic.keys) == 2 and metrics["value_loss"] > 0 and critic.value.grad is not None
