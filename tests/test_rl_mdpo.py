"""MDPO as published: step choice, intermediate decoding, step rewards, rollout sampler, RCR confidence."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import torch
from test_trainer import make_model

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import UserError
from unmask.models.sdar import tiny_sdar
from unmask.models.tiny_tokenizer import build_tiny_tokenizer
from unmask.recipe import MDPOConfig, Recipe, RolloutConfig, load_recipe
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner
from unmask.rl.objective import Rollout, build_objective
from unmask.rl.rollout import Rollouts
from unmask.rollouts.trajectory import Trajectory
from unmask.run import eval_settings

ROOT = Path(__file__).resolve().parents[1] / "recipes"
COUNTDOWN_ROW = {"prompt": "Using the numbers [1, 2, 3], create an equation that equals 6.", "nums": [1, 2, 3],
                 "target": 6}


def rollouts(settings: RolloutConfig | None = None, model=None) -> Rollouts:
    tokenizer = build_tiny_tokenizer()
    runner = RewardRunner([RewardSpec("countdown")], num_workers=0)
    sample = None
    if model is not None:
        from unmask.rl.rollout import local_sampler

        sample = local_sampler(model)
    return Rollouts(sample, settings or RolloutConfig(), runner.score, tokenizer, process=AbsorbingMask(tokenizer.mask_token_id),
                    eos_ids=[tokenizer.eos_token_id], correct_threshold=1.0, record=True)


def one_step_trajectory(answer: list[int], mask_token_id: int) -> Trajectory:
    """One row whose single recorded step predicted ``answer`` at every (masked) position."""
    length = len(answer)
    return Trajectory(
        tokens=torch.tensor([[5, *answer]]), attention_mask=torch.ones(1, length + 1, dtype=torch.bool),
        prompt_length=1, answer_mask=torch.ones(1, length, dtype=torch.bool),
        commit_step=torch.zeros(1, length, dtype=torch.long), hint_mask=torch.zeros(1, length, dtype=torch.bool),
        nfe=torch.ones(1), step_masked=torch.ones(1, 1, length, dtype=torch.bool),
        step_pred=torch.tensor([[answer]]),
    )


def test_intermediate_predictions_are_decoded_whole_without_special_tokens():
    ctx = rollouts()
    tok = ctx.tokenizer
    ids = tok("<answer>1+2+3</answer>", add_special_tokens=False)["input_ids"]
    stray = [ids[0], tok.eos_token_id, *ids[1:], tok.eos_token_id]  # an EOS the canvas has not settled yet
    traj = one_step_trajectory(stray, tok.mask_token_id)
    assert ctx.score_steps(traj, [COUNTDOWN_ROW]).tolist() == [[1.0]]  # cut at the EOS it would score 0
    # the final answer is still read up to its first EOS (what follows it is padding)
    assert ctx.score(traj, [COUNTDOWN_ROW]).rewards.tolist() == [0.0]


class StepRewards:
    """A rollout context whose intermediate predictions got the given rewards."""

    def __init__(self, rewards: torch.Tensor) -> None:
        self.rewards = rewards

    def score_steps(self, traj, rows):
        return self.rewards


def prepared(step_reward: str, rewards: torch.Tensor, correct: torch.Tensor):
    objective = build_objective(MDPOConfig(step_reward=step_reward, sample_train_steps=3), process=AbsorbingMask(0),
                                temperature=1.0, gen_length=3)
    traj = one_step_trajectory([7, 8, 9], 0).select([0] * len(correct))
    rollout = Rollout(traj, [{}] * len(correct), correct.float(), correct, group_size=2)
    return objective.prepare(rollout, StepRewards(rewards))


def test_step_rewards_count_correctness_only_by_default():
    # a group with no correct answer: one answer well formed (0.1 at every step), one not
    shaped = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.0, 0.0]])
    wrong = torch.tensor([False, False])
    assert prepared("correctness", shaped, wrong).advantages.abs().max() == 0  # nothing to learn
    assert prepared("reward", shaped, wrong).advantages.abs().min() > 0.5  # the format credit became full-size
    # a correct intermediate prediction still counts
    right = torch.tensor([[0.1, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert prepared("correctness", right, torch.tensor([True, False])).advantages.abs().max() > 0.5


def test_training_rollouts_decode_like_the_evaluation_by_default():
    assert Recipe().algorithm.name == "mdpo" and Recipe().rollout.remasking == "low_confidence"
    for path in [*ROOT.glob("tiny/*mdpo*.yaml"), *ROOT.glob("*/math_mdpo.yaml")]:
        recipe = load_recipe(path)
        greedy = [s for name, s in eval_settings(recipe).items() if name.startswith("greedy")]
        assert {s.remasking for s in greedy} == {recipe.rollout.remasking}, path


def test_rcr_confidence_defaults_to_the_sampling_probability():
    settings = RolloutConfig(max_completion_length=8, steps=4, block_length=8, temperature=0.5, remasking="rcr")
    assert settings.rcr_confidence == "sampling_probability"
    ctx = rollouts(settings, make_model())
    traj = ctx.generate(torch.randint(5, 40, (2, 4)), torch.ones(2, 4, dtype=torch.bool))
    masked = traj.step_masked
    # the confidence buffer holds each prediction's probability under softmax(logits / τ)
    torch.testing.assert_close(traj.step_confidence[masked].float(), traj.step_logprob[masked].exp().float(),
                               atol=2e-3, rtol=2e-3)


SAMPLER_CHOICES = {name: typing.get_args(RolloutConfig.model_fields[name].annotation)
                   for name in ("remasking", "rcr_confidence", "schedule", "cache")}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in SAMPLER_CHOICES.items() for v in vs])
def test_every_sampler_value_the_recipe_accepts_generates(field, value):
    base = {"max_completion_length": 8, "steps": 4, "block_length": 8, "temperature": 0.7}
    if field == "rcr_confidence":
        base["remasking"] = "rcr"
    settings = RolloutConfig(**base, **{field: value})
    model = make_model()
    if (field, value) == ("cache", "prompt"):  # exact only for a prompt-blind model; others get a UserError
        model.config = dataclasses.replace(model.config, prompt_attends_answer=False)
    if (field, value) == ("cache", "block"):  # the exact cache of block-diffusion families
        model = tiny_sdar(vocab_size=model.config.vocab_size, mask_token_id=model.mask_token_id,
                          eos_token_id=model.eos_token_ids[0], block_size=8)
        model.tokenizer = build_tiny_tokenizer()
    traj = rollouts(settings, model).generate(torch.randint(5, 40, (2, 4)), torch.ones(2, 4, dtype=torch.bool))
    assert traj.answer_ids.shape == (2, 8) and (traj.answer_ids != build_tiny_tokenizer().mask_token_id).all()


def test_in_rollout_over_denoising_filter_keeps_whole_groups_that_showed_it():
    objective = build_objective(MDPOConfig(over_denoising_filter="rollout", sample_train_steps=1), process=AbsorbingMask(0),
                                temperature=1.0, gen_length=3)
    step_rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    correct = torch.tensor([False, False, True, True])
    traj = one_step_trajectory([7, 8, 9], 0).select([0, 0, 0, 0])
    batch = objective.prepare(Rollout(traj, [{}] * 4, correct.float(), correct, group_size=2), StepRewards(step_rewards))
    # group 0 (answer 0 right at step 1, wrong at the end) trains both its answers; group 1 is dropped
    assert len(batch) == 2 and batch.metrics["kept_fraction"] == 0.5


def differs_from_final(prompts, completions, final, **columns):
    """1 where a text differs from the row's greedy final answer: every intermediate prediction that
    differs is 'right' and the final answer itself 'wrong'; rows without ``final`` score 0."""
    return [float(f is not None and c != f) for c, f in zip(completions, final, strict=True)]


def test_greedy_pre_pass_keeps_the_over_denoised_training_prompts(tmp_path):
    """On the shipped model: rows whose greedy final answer is 'wrong' while an earlier prediction differs."""
    from unmask.rl.rollout import decode_answers, intermediate_answers
    from unmask.rl.trainer import Trainer
    from unmask.run import eval_rows, model_factory

    overrides = [f"output_dir={tmp_path}", "ray.address=null", "rewards.num_workers=0", "logging.progress=false",
                 "logging.report_to=[none]", "rollout.num_generations=2", "rollout.prompts_per_step=2",
                 "algorithm.sample_train_steps=2"]
    plain = load_recipe(ROOT / "tiny" / "countdown_mdpo.yaml", overrides)
    factory = model_factory(plain.model)
    rows = eval_rows(plain)[:8]
    trainer = Trainer(plain, model_factory=factory, rows=rows)
    traj = trainer.rollouts.generate(*trainer.encode(rows), temperature=0.0)
    finals = decode_answers(trainer.rollouts.tokenizer, traj.answer_ids, trainer.rollouts.eos_ids)
    marked = [{**row, "final": final if i % 2 == 0 else None} for i, (row, final) in enumerate(zip(rows, finals, strict=True))]
    greedy = load_recipe(ROOT / "tiny" / "countdown_mdpo.yaml", [
        *overrides, "algorithm.over_denoising_filter=greedy",
        "rewards.functions=[{name: 'test_rl_mdpo:differs_from_final'}]"])
    filtered = Trainer(greedy, model_factory=factory, rows=marked)
    steps = intermediate_answers(traj, trainer.rollouts.process)
    texts = [trainer.rollouts.tokenizer.batch_decode(step.tolist(), skip_special_tokens=True) for step in steps]
    moved = [any(step[i] != finals[i] for step in texts) for i in range(len(rows))]
    expected = [row for i, row in enumerate(marked) if i % 2 == 0 and moved[i]]
    assert 0 < len(expected) < len(rows) // 2 + 1
    assert filtered.stream.rows == expected  # right at some step, wrong at the end
    assert filtered.train_step()["skipped"] == 0.0
    with pytest.raises(UserError, match="none of the 8 training prompts"):
        Trainer(greedy, model_factory=factory, rows=[{**row, "final": None} for row in marked])
