"""Overlapped RL steps (issue 22, point 3): the actors roll out step k+1 with step k's adapter.

Checked against the real thing: a local Ray actor, and in-process ``generate``
with saved adapters as the oracle for which policy sampled each step.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer import ROWS, make_model, recipe

from unmask.errors import UserError
from unmask.rl.checkpoint import trainable_state
from unmask.rl.trainer import Trainer, lora_replica
from unmask.rollouts.generate import generate
from unmask.rollouts.pool import load_adapter

OVERLAP = {"overlap": True, "temperature": 1.0}


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors (``trainable_state`` may share storage with the live parameters)."""
    return {name: value.clone() for name, value in trainable_state(trainer.unwrapped).items()}


def test_overlap_needs_ray_actors(tmp_path) -> None:
    with pytest.raises(UserError, match="rollout.overlap"):
        Trainer(recipe(tmp_path, "diffu_grpo", rollout=OVERLAP), model_factory=make_model, rows=ROWS)


def test_each_step_is_sampled_by_the_adapter_one_update_behind(tmp_path, ray_pool) -> None:
    r = recipe(tmp_path, "diffu_grpo", rollout=OVERLAP, ray={"address": "local", "num_workers": 1}, optim={"max_steps": 4})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS, pool=ray_pool)
    adapters, rollouts = [], []
    sample = trainer._sample

    def recorded():
        adapters.append(snapshot(trainer))  # θ_k: the policy before step k's update
        rows, traj, seed = sample()
        rollouts.append((traj.tokens.clone(), seed, trainer._behaviour))
        return rows, traj, seed

    trainer._sample = recorded
    metrics = list(trainer.steps())
    assert len(metrics) == 4 and all(m["skipped"] == 0.0 for m in metrics)

    replica = lora_replica(make_model, r=4, alpha=8).eval()
    stale = 0
    for step, (tokens, seed, behaviour) in enumerate(rollouts):
        sampler = adapters[max(step - 1, 0)]  # step k's rollout was submitted before step k-1's update
        assert all(torch.equal(behaviour[name], sampler[name]) for name in sampler)  # θ_old = the sampling policy
        _, prompt_ids, attention, expected_seed = trainer._rollout_inputs(step)
        assert seed == expected_seed
        kwargs = trainer.rollouts.sample_kwargs(prompt_ids, attention, None, seed)
        load_adapter(replica, sampler)
        assert torch.equal(generate(replica, **kwargs).tokens, tokens)
        load_adapter(replica, adapters[step])
        stale += not torch.equal(generate(replica, **kwargs).tokens, tokens)
    assert stale > 0  # the current policy would have sampled differently: the test can tell them apart


def test_old_scores_use_the_sampling_adapter_and_restore_the_policy(tmp_path, ray_pool) -> None:
    r = recipe(tmp_path, "diffu_grpo", rollout=OVERLAP, ray={"address": "local", "num_workers": 1})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS, pool=ray_pool)
    next(iter(trainer.steps()))
    current = snapshot(trainer)
    trainer._behaviour = {name: torch.randn_like(value) for name, value in current.items()}
    with trainer._rollout_policy():
        inside = snapshot(trainer)
    assert all(torch.equal(inside[name], trainer._behaviour[name]) for name in current)
    after = snapshot(trainer)
    assert all(torch.equal(after[name], current[name]) for name in current)
