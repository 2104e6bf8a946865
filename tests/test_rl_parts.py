"""The part registries: one-line refusals of incompatible pairs, composed presets, the hand-checkable
aggregations, and the algorithm list written once (recipe union, error lines, TRL choices)."""

from __future__ import annotations

import typing

import pytest
import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import RecipeError
from unmask.recipe import ALGORITHMS, CJGRPOConfig, Recipe, validate_recipe
from unmask.rl.aggregation import AGGREGATIONS
from unmask.rl.estimators import Scores
from unmask.rl.likelihoods import ESTIMATORS
from unmask.rl.objective import build_objective
from unmask.rl.policy_losses import POLICY_LOSSES, LossInputs
from unmask.rollouts.trajectory import Trajectory


def trajectory(rows: int = 2, length: int = 4) -> Trajectory:
    return Trajectory(
        tokens=torch.zeros(rows, 2 + length, dtype=torch.long), attention_mask=torch.ones(rows, 2 + length, dtype=torch.bool),
        prompt_length=2, answer_mask=torch.ones(rows, length, dtype=torch.bool),
        commit_step=torch.zeros(rows, length, dtype=torch.long), hint_mask=torch.zeros(rows, length, dtype=torch.bool),
        nfe=torch.ones(rows),
    )


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ({"name": "diffu_grpo", "policy_loss": "ppo"}, "algorithm.policy_loss: unknown policy loss 'ppo'; choose one of"),
        ({"name": "diffu_grpo", "policy_loss": "dual_clip"}, "dual_clip reads dual_clip, which diffu_grpo has no field"),
        ({"name": "espo", "estimator": "one_step"}, "one_step reads p_mask"),
        ({"name": "diffu_grpo", "policy_loss": "bound"}, "bound reads length_normalized, which diffu_grpo"),
        ({"name": "wd1", "aggregation": "token_mean"}, "token_mean reduces token terms and likelihood gives sequence"),
        ({"name": "diffu_grpo", "kl": "k2_sequence"}, "k2_sequence penalises a sequence value and clip has none"),
        ({"name": "bgpo", "estimator": "step"}, "bound needs an estimator with the elbo trait"),
        ({"name": "diffu_grpo", "estimator": "step"}, "step is keyed by step and the rows batch builder's items carry no"),
        ({"name": "justgrpo", "batch": "rows"}, "trajectory_chunk is keyed by chunk and the rows batch builder"),
        ({"name": "mdpo", "advantage": "group"}, "group and the steps batch builder disagree on per-step items"),
    ],
)
def test_incompatible_parts_are_one_line_errors(algorithm, message):
    with pytest.raises(RecipeError, match="^recipe.yaml: algorithm") as error:
        validate_recipe({"algorithm": algorithm}, "recipe.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_recipe_composes_parts_across_presets():
    """BGPO's bound on leave-one-out advantages: the advantages are ESPO's, the loss BGPO's."""
    config = validate_recipe({"algorithm": {"name": "bgpo", "advantage": "leave_one_out", "mc_samples": 1}}, "r").algorithm
    objective = build_objective(config, process=AbsorbingMask(0), temperature=1.0, gen_length=4)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(objective.advantages(rewards, 4), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    assert objective.needs_old and objective.policy.__name__ == "bound"


def test_dr_grpo_and_valid_answer_normalisers_by_hand():
    """Two rows of four tokens, three selected in row 0 and two in row 1; advantages (1, 0)."""
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    x = LossInputs(trajectory(), torch.tensor([1.0, 0.0]), None, None, mask, None)
    assert float(AGGREGATIONS["token_mean"](values, x)) == pytest.approx(15 / 5)
    assert float(AGGREGATIONS["sequence_mean"](values, x)) == pytest.approx((6 / 3 + 9 / 2) / 2)
    assert float(AGGREGATIONS["constant"](values, x)) == pytest.approx(15 / (2 * 4))  # Σ / (B·L)
    # Σ / (L·n_v), each answer counted by the share of its L positions it scores: n_v = 3/4
    assert float(AGGREGATIONS["valid_answers"](values, x)) == pytest.approx(15 / (4 * 3 / 4))
    whole = LossInputs(trajectory(), torch.tensor([1.0, 0.0]), None, None, torch.ones(2, 4, dtype=torch.bool), None)
    assert float(AGGREGATIONS["valid_answers"](values, whole)) == pytest.approx(float(values.sum()) / (4 * 1))
    none_valid = LossInputs(trajectory(), torch.zeros(2), None, None, mask, None)
    assert float(AGGREGATIONS["valid_answers"](torch.zeros(2, 4), none_valid)) == 0.0  # guarded, no NaN


def test_dual_clip_floors_negative_advantage_terms_at_c_times_a():
    """A = −1, ε 0.2, c 3: ρ = 5 gives min(−5, −1.2) = −5, floored at −3 (no gradient there); ρ = 2 gives
    −2, above the floor, and keeps PPO's gradient ``−A·ρ = 2`` on ``log ρ``."""
    config = CJGRPOConfig(epsilon=0.2, dual_clip=3.0)
    lp = torch.log(torch.tensor([[5.0, 2.0]])).requires_grad_()
    scores = Scores(lp, torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2))
    old = Scores(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2))
    terms = POLICY_LOSSES["dual_clip"](LossInputs(trajectory(1, 2), torch.tensor([-1.0]), scores, old, scores.mask, config))
    assert terms.values.tolist()[0] == pytest.approx([3.0, 2.0])  # the loss is −gain
    terms.values.sum().backward()
    assert lp.grad.tolist()[0] == pytest.approx([0.0, 2.0])
    assert terms.clipped.tolist() == [[True, False]]


def test_surrogate_is_the_unclipped_importance_weighted_advantage():
    """ρ = 5, A = −1 and ρ = 2, A = −1: −ρA = 5 and 2, no clip anywhere, gradient −ρA on log ρ."""
    config = CJGRPOConfig()
    lp = torch.log(torch.tensor([[5.0, 2.0]])).requires_grad_()
    scores = Scores(lp, torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2))
    old = Scores(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2))
    terms = POLICY_LOSSES["surrogate"](LossInputs(trajectory(1, 2), torch.tensor([-1.0]), scores, old, scores.mask, config))
    assert terms.values.tolist()[0] == pytest.approx([5.0, 2.0]) and not terms.clipped.any()
    terms.values.sum().backward()
    assert lp.grad.tolist()[0] == pytest.approx([5.0, 2.0])


def test_the_algorithm_list_is_written_once():
    union = typing.get_args(Recipe.model_fields["algorithm"].annotation)
    assert {cls.model_fields["name"].default for cls in union} == set(ALGORITHMS)
    with pytest.raises(RecipeError, match=f"choose one of {', '.join(ALGORITHMS)}"):
        validate_recipe({"algorithm": {"name": "ppo"}}, "r")
    from transformers import HfArgumentParser

    from unmask.integrations.trl import DiffusionGRPOConfig

    fields = DiffusionGRPOConfig.__dataclass_fields__
    assert fields["algorithm"].metadata["choices"] == list(ALGORITHMS)
    assert fields["estimator"].metadata["choices"] == list(ESTIMATORS)
    parser = HfArgumentParser(DiffusionGRPOConfig)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", "x", "--algorithm", "ppo"])
    for name in ALGORITHMS:  # every preset's TRL recipe validates (its own estimator unless one is named)
        left_to_right = {"block_length": 1, "steps": 64} if name == "justgrpo" else {}  # its rollout rule
        recipe = DiffusionGRPOConfig(
            "x", algorithm=name, use_cpu=True, bf16=False, beta=0.0, max_completion_length=64, **left_to_right
        ).recipe()
        assert recipe.algorithm.estimator == ALGORITHMS[name].model_fields["estimator"].default


def test_a_resolved_recipe_names_every_part_and_round_trips():
    recipe = validate_recipe({"algorithm": {"name": "bgpo"}}, "r")
    dumped = recipe.model_dump(mode="json")["algorithm"]
    assert (dumped["policy_loss"], dumped["batch"], dumped["estimator"]) == ("bound", "samples", "elbo_sample")
    assert validate_recipe({"algorithm": dumped}, "r").algorithm == recipe.algorithm
