"""θ_old across optimizer steps, shuffled micro-batches and one optimizer step per rollout."""

from __future__ import annotations

import pytest
import torch
from test_trainer import ROWS, make_model, recipe

from unmask.errors import RecipeError
from unmask.rl.checkpoint import trainable_state
from unmask.rl.losses import clipped_surrogate, masked_mean
from unmask.rl.trainer import Trainer
from unmask.rl.update import derive_seed, optimizer_windows


def spy(trainer: Trainer) -> list[dict]:
    """Record what every ``objective.loss`` call saw; the real loss still runs."""
    calls: list[dict] = []
    real = trainer.objective.loss

    def loss(batch, scores, old, ref):
        value, metrics = real(batch, scores, old, ref)
        calls.append({"batch": batch, "scores": scores, "old": old, "metrics": metrics})
        return value, metrics

    trainer.objective.loss = loss
    return calls


@pytest.mark.parametrize("name", ["diffu_grpo", "mdpo", "igpo"])
def test_second_optimizer_step_on_one_batch_sees_ratios_and_clipping(tmp_path, name):
    # 2 prompts x 2 answers in micro-batches of 2 (MDPO: x 2 steps): several optimizer steps per rollout
    graded = {"step_reward": "reward"} if name == "mdpo" else {}  # the digit reward's shades, not 0/1
    r = recipe(tmp_path, name, algorithm={"num_iterations": 1, "epsilon": 1e-3, **graded},
               optim={"gradient_accumulation_steps": 1})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    before = {k: v.clone() for k, v in trainable_state(trainer.unwrapped).items()}
    calls = spy(trainer)
    metrics = trainer.train_step()
    assert metrics["skipped"] == 0.0
    assert len(calls) >= 2
    # every call after the first is a later optimizer step; take the last one with a learning signal
    index = max(i for i, call in enumerate(calls) if i > 0 and call["batch"].advantages.abs().sum() > 0)
    first, second = calls[0], calls[index]
    assert first["old"] is None  # the first step is on-policy: θ_old = θ, no extra pass
    assert second["old"] is not None  # before the fix: None, so every ratio was 1
    objective = trainer.objective
    mask = objective.loss_mask(second["batch"], second["scores"]) if name != "mdpo" else second["scores"].mask
    log_ratio = second["scores"].logprobs.detach() - second["old"].logprobs
    assert log_ratio[mask].abs().max() > 1e-4  # the first step moved θ away from θ_old
    _, clipped = clipped_surrogate(log_ratio, second["batch"].advantages[:, None].to(log_ratio), 1e-3)
    expected_clip = masked_mean(clipped.float(), mask).item()
    assert expected_clip > 0  # ε binds on the off-policy step
    assert second["metrics"]["clip_fraction"] == pytest.approx(expected_clip)
    # θ_old is the policy before the first step, on the same estimator key
    trained = trainable_state(trainer.unwrapped)
    trainer.unwrapped.load_state_dict(before, strict=False)
    key = trainer.objective.key(second["batch"], derive_seed(r.seed, 0, 0, index))
    with torch.no_grad():
        expected = trainer.objective.estimator.token_logprobs(trainer.model, second["batch"].traj, key)
    assert torch.allclose(second["old"].logprobs, expected.logprobs, atol=1e-6)
    trainer.unwrapped.load_state_dict(trained, strict=False)


def test_one_optimizer_step_per_rollout_needs_no_old_pass(tmp_path):
    r = recipe(tmp_path, "mdpo", algorithm={"num_iterations": 1},
               optim={"gradient_accumulation_steps": 1, "optimizer_steps_per_rollout": 1})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    calls = spy(trainer)
    steps = []
    real_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: steps.append(1) or real_step(*a, **k)
    assert trainer.train_step()["optimizer_steps"] == 1.0
    assert len(calls) == 4 and len(steps) == 1  # 4 (answer, step) items of 2: 2 micro-batches, one step
    assert all(call["old"] is None for call in calls)


def test_optimizer_steps_per_rollout_splits_each_pass_evenly(tmp_path):
    r = recipe(tmp_path, "diffu_grpo", optim={"gradient_accumulation_steps": 1, "optimizer_steps_per_rollout": 2})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    o = trainer.recipe.optim
    assert optimizer_windows(5, o.gradient_accumulation_steps, o.optimizer_steps_per_rollout) == [[0, 1, 2], [3, 4]]
    assert optimizer_windows(1, o.gradient_accumulation_steps, o.optimizer_steps_per_rollout) == [[0]]  # never more steps than micro-batches
    with pytest.raises(RecipeError, match="not both"):
        recipe(tmp_path, "diffu_grpo", optim={"gradient_accumulation_steps": 2, "optimizer_steps_per_rollout": 1})


def test_micro_batches_mix_prompts_and_follow_the_step_seed(tmp_path):
    r = recipe(tmp_path, "mdpo", rollout={"prompts_per_step": 4, "num_generations": 2},
               optim={"per_device_train_batch_size": 4})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    rollout, _ = trainer.rollout()
    batch = trainer.objective.prepare(rollout, trainer.rollouts)
    # tag each item with its prompt through its advantage slot, then cut
    batch.advantages = torch.arange(len(batch), dtype=torch.float)
    prompt_of = (torch.arange(len(batch)) // (len(batch) // 4)).tolist()  # items are laid out prompt by prompt
    cut = [mb.advantages.long().tolist() for mb in trainer._cut(batch).select(batch, "cpu")]
    assert sorted(i for mb in cut for i in mb) == list(range(len(batch)))  # a permutation, nothing lost
    assert any(len({prompt_of[i] for i in mb}) > 1 for mb in cut)
    assert cut == [mb.advantages.long().tolist() for mb in trainer._cut(batch).select(batch, "cpu")]  # same step, same order
    trainer.step = 1
    assert cut != [mb.advantages.long().tolist() for mb in trainer._cut(batch).select(batch, "cpu")]
