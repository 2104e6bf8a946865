"""TraceRL's loss options, checked by hand (docs/objectives.md): the k3 KL against θ_old, the clamped
ratio, population z-scores, and the correct-fraction group filter with cut-off answers counted wrong."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import pytest
import torch
from test_rl_block_family import ROWS, tiny_block_model
from test_rl_parts import trajectory

from unmask.diffusion.block import BlockAbsorbingMask
from unmask.recipe import TraceRLConfig, validate_recipe
from unmask.rl.estimators import Scores
from unmask.rl.objective import Objective, Rollout, TrainBatch, build_objective
from unmask.rl.trainer import Trainer

LN2, LN11 = math.log(2.0), math.log(1.1)


def tracerl(**fields) -> Objective:
    return build_objective(TraceRLConfig(**fields), process=BlockAbsorbingMask(0), temperature=1.0, gen_length=4)


def scores(logprobs: list[list[float]], mask: list[list[bool]]) -> Scores:
    lp = torch.tensor(logprobs, requires_grad=True)
    return Scores(lp, torch.zeros_like(lp), torch.tensor(mask), torch.ones_like(lp))


def k3(delta: float) -> float:
    """``e^{ℓ_old−ℓ} − 1 + ℓ − ℓ_old`` for ``delta = ℓ − ℓ_old``."""
    return math.exp(-delta) - 1 + delta


def test_loss_is_the_clipped_gain_plus_k3_kl_against_theta_old_by_hand():
    """Two answers of L = 4, ε 0.2, β 0.01. Row 0 (A = 1) scores all four tokens with
    ``ℓ − ℓ_old = 0, ln 1.1, ln 2, −ln 2``: gains 1, 1.1, 1.2 (clipped), 0.5. Row 1 (A = −1) scores two:
    ``ln 2`` (gain −2) and 20, whose ratio is clamped to e^10 (gain −e^10) while its KL reads the raw 20.
    loss = mean_rows((1/L)·Σ(−gain + β·KL))."""
    objective = tracerl()
    old = scores([[-1.0, -1.0, -1.0, -1.0], [-3.0, -25.0, -1.0, -1.0]], [[True] * 4, [True, True, False, False]])
    deltas = [[0.0, LN11, LN2, -LN2], [LN2, 20.0, 0.0, 0.0]]
    new = scores((old.logprobs.detach() + torch.tensor(deltas)).tolist(), old.mask.tolist())
    batch = TrainBatch(trajectory(2, 4), torch.tensor([1.0, -1.0]))
    reference = replace(old, logprobs=old.logprobs.detach() - 7.0)  # a reference far away: never read
    loss, metrics = objective.loss(batch, new, old, reference)

    row0 = -(1 + 1.1 + 1.2 + 0.5) / 4 + 0.01 * (k3(0) + k3(LN11) + k3(LN2) + k3(-LN2)) / 4
    row1 = -(-2 - math.exp(10)) / 4 + 0.01 * (k3(LN2) + k3(20.0)) / 4
    assert float(loss.detach()) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    kl_mean = (k3(0) + k3(LN11) + k3(LN2) + k3(-LN2) + k3(LN2) + k3(20.0)) / 6
    assert metrics["kl"] == pytest.approx(kl_mean, rel=1e-6)
    assert objective.needs_old and not objective.needs_reference


def test_kl_can_target_the_reference_in_any_preset_and_theta_old_in_tracerl():
    """The same k3 form: against θ_old (TraceRL's default) or the reference (``kl_target: reference``)."""
    old = scores([[-1.0, -2.0, -1.0, -1.0]], [[True] * 4])
    new = scores([[-1.5, -2.0, -1.0, -0.5]], [[True] * 4])
    ref = scores([[-3.0, -3.0, -3.0, -3.0]], [[True] * 4])
    batch = TrainBatch(trajectory(1, 4), torch.tensor([0.0]))  # A = 0: the loss is β·KL alone
    by_target = {target: float(tracerl(kl_target=target).loss(batch, new, old, ref)[0].detach()) for target in ("old", "reference")}
    assert by_target["old"] == pytest.approx(0.01 * (k3(-0.5) + k3(0.5)) / 4, rel=1e-6)
    assert by_target["reference"] == pytest.approx(0.01 * (k3(1.5) + k3(1.0) + k3(2.0) + k3(2.5)) / 4, rel=1e-6)
    composed = validate_recipe({"algorithm": {"name": "diffu_grpo", "kl_target": "old"}}, "r").algorithm
    objective = build_objective(composed, process=BlockAbsorbingMask(0), temperature=1.0, gen_length=4)
    assert objective.needs_old and not objective.needs_reference


def test_on_the_first_step_theta_old_is_theta_so_the_kl_and_its_gradient_vanish():
    new = scores([[-1.5, -2.0, -1.0, -0.5]], [[True] * 4])
    batch = TrainBatch(trajectory(1, 4), torch.tensor([1.0]))
    grads = []
    for beta in (0.0, 0.01):
        loss, metrics = tracerl(beta=beta).loss(batch, new, None, None)
        grads.append(torch.autograd.grad(loss, new.logprobs)[0])
        assert metrics["kl"] == 0.0
    assert torch.equal(grads[0], grads[1])


def test_population_z_scores_and_all_equal_groups_get_zero():
    advantages = tracerl().advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    std = math.sqrt(0.25 * 0.75)  # population std of (1, 0, 0, 0)
    expected = [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0, 0.0, 0.0]
    assert advantages.tolist() == pytest.approx(expected)
    assert torch.equal(advantages[4:], torch.zeros(4))


def rollout(correct: list[int], rewards: list[float], lengths: list[int], group: int, gen_length: int = 16) -> Rollout:
    traj = trajectory(len(correct), gen_length)
    traj.answer_mask = torch.arange(gen_length)[None] < torch.tensor(lengths)[:, None]
    rows = [{"row": i} for i in range(len(correct))]
    return Rollout(traj, rows, torch.tensor(rewards), torch.tensor(correct, dtype=torch.bool), group)


def test_groups_outside_the_correct_fraction_band_are_dropped_and_counted():
    """Four prompts × 5 answers, correct shares 1, 0.8, 0.2 and 0: the first and last are dropped (the band
    [0.2, 0.8] is closed), and the two kept groups' advantages are theirs alone."""
    correct = [1, 1, 1, 1, 1] + [1, 1, 1, 1, 0] + [1, 0, 0, 0, 0] + [0, 0, 0, 0, 0]
    rewards = [float(c) for c in correct]
    batch = tracerl().prepare(rollout(correct, rewards, [6] * 20, 5), None)
    assert len(batch) == 10 and batch.metrics["groups_dropped"] == 2.0
    assert torch.equal(batch.advantages, tracerl().advantages(torch.tensor(rewards[5:15]), 5))
    kept, _ = tracerl().filter_groups(rollout(correct, rewards, [6] * 20, 5))
    assert [row["row"] for row in kept.rows] == list(range(5, 15))
    off = tracerl(group_filter="none", truncated_wrong_margin=None).prepare(rollout(correct, rewards, [6] * 20, 5), None)
    assert len(off) == 20 and "groups_dropped" not in off.metrics


def test_cut_off_answers_count_as_wrong_for_the_filter_and_the_advantage():
    """L = 16, margin 5: an answer of 11 tokens or more is wrong. Group 0: two right answers, one of them
    11 tokens long, so its share is 1/5 (kept) and its reward 0; group 1: its one right answer is cut off,
    share 0, dropped."""
    correct = [1, 1, 0, 0, 0] + [1, 0, 0, 0, 0]
    lengths = [10, 11, 4, 4, 4] + [16, 4, 4, 4, 4]
    batch = tracerl().prepare(rollout(correct, [float(c) for c in correct], lengths, 5), None)
    assert (batch.metrics["groups_dropped"], batch.metrics["truncated_wrong"]) == (1.0, 2.0)
    assert torch.equal(batch.advantages, tracerl().advantages(torch.tensor([1.0, 0, 0, 0, 0]), 5))


def test_the_trainer_logs_dropped_groups_and_skips_an_update_with_none_left(tmp_path):
    """A random tiny block model under a reward that is never 'correct': every group is dropped, the count
    reaches metrics.jsonl, and the update is skipped with no weight moved."""
    recipe = validate_recipe({
        "seed": 0, "output_dir": str(tmp_path), "lora": {"r": 4, "alpha": 8}, "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8, "steps": 4,
                    "block_length": 4, "temperature": 1.0},
        "algorithm": {"name": "tracerl"},
        "rewards": {"functions": [{"name": "test_rl_block_family:digit_reward"}], "num_workers": 0},
        "optim": {"max_steps": 1, "per_device_train_batch_size": 4}, "logging": {"progress": False, "report_to": ["jsonl"]},
        "eval": {"every": 0}, "checkpoint": {"save_final": False},
    }, "test")
    trainer = Trainer(recipe, model_factory=functools.partial(tiny_block_model, 0), rows=ROWS)
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    list(trainer.steps())
    (logged,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged["groups_dropped"] == 2.0 and logged["skipped"] == 1.0
    assert all(torch.equal(v, before[k]) for k, v in trainer.unwrapped.state_dict().items())
