"""Each objective's loss against its published formula, written out in each test, on hand-set scores."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.recipe import ALGORITHMS, DiffuGRPOConfig, IGPOConfig, MDPOConfig, WD1Config
from unmask.rl.estimators import Scores
from unmask.rl.losses import masked_mean
from unmask.rl.mdpo import over_denoised
from unmask.rl.objective import TrainBatch, build_objective
from unmask.rollouts.trajectory import Trajectory

LP = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
OLD = torch.tensor([[-1.0, -2.7, -0.5, -3.0]])  # token 1: ratio e^0.7 ≈ 2.01, outside [0.5, 1.5]
REF = torch.tensor([[-1.2, -2.0, -0.4, -3.0]])
ANSWER = torch.tensor([[True, True, True, False]])  # last position is after EOS


def trajectory(hint=None, steps=False):
    extra = {}
    if steps:
        extra = {"step_masked": torch.tensor([[[True, True, False, True]]]),
                 "step_pred": torch.zeros(1, 1, 4, dtype=torch.long),
                 "step_confidence": torch.tensor([[[0.5, 0.25, 1.0, 1.0]]]).half()}
    return Trajectory(
        tokens=torch.zeros(1, 6, dtype=torch.long), attention_mask=torch.ones(1, 6, dtype=torch.bool),
        prompt_length=2, answer_mask=ANSWER, commit_step=torch.zeros(1, 4, dtype=torch.long),
        hint_mask=torch.zeros(1, 4, dtype=torch.bool) if hint is None else hint, nfe=torch.ones(1), **extra,
    )


def scores(values, mask=None, entropy=None):
    mask = torch.ones(1, 4, dtype=torch.bool) if mask is None else mask
    entropy = torch.ones(1, 4) if entropy is None else entropy
    return Scores(values.clone().requires_grad_(), entropy, mask, torch.ones(1, 4))


def build(config):
    return build_objective(config, process=AbsorbingMask(0), temperature=1.0, gen_length=4)


def test_all_objectives_are_registered():
    build(WD1Config())
    assert set(ALGORITHMS) >= {"diffu_grpo", "mdpo", "igpo", "wd1", "spg", "espo", "bgpo"}


def test_diffu_grpo_loss_is_clipped_surrogate_plus_k3_over_answer_tokens():
    objective = build(DiffuGRPOConfig(epsilon=0.5, beta=0.04))
    batch = TrainBatch(trajectory(), torch.tensor([2.0]))
    loss, metrics = objective.loss(batch, scores(LP), scores(OLD), scores(REF))
    ratio = torch.exp(LP - OLD)[0, :3]
    surrogate = torch.minimum(ratio * 2, ratio.clamp(0.5, 1.5) * 2)
    delta = (REF - LP)[0, :3]
    k3 = torch.exp(delta) - delta - 1
    expected = (-surrogate + 0.04 * k3).mean()
    assert math.isclose(loss.item(), float(expected), rel_tol=1e-6)
    assert math.isclose(metrics["clip_fraction"], 1 / 3, rel_tol=1e-6)  # token 1 left the interval


def test_mdpo_loss_uses_confidence_and_length_weights_over_masked_positions():
    objective = build(MDPOConfig(beta=0.02, epsilon=0.2))
    batch = TrainBatch(trajectory(steps=True), torch.tensor([-1.0]), steps=torch.tensor([0]))
    masked = torch.tensor([[True, True, False, True]])
    loss, _ = objective.loss(batch, scores(LP * masked, masked), scores(OLD * masked, masked),
                             scores(REF * masked, masked))
    lam = 4 / 3  # L / |M|
    c = torch.tensor([0.5, 0.25, 1.0])
    lp, old, ref = (t[0, [0, 1, 3]] for t in (LP, OLD, REF))
    ratio = torch.exp(lp - old)
    surrogate = torch.minimum(-ratio, -ratio.clamp(0.8, 1.2))
    expected = (c * (-lam * surrogate + 0.02 * 0.5 * (ref - lp) ** 2)).mean()
    assert math.isclose(loss.item(), float(expected), rel_tol=1e-6)


def test_igpo_drops_low_entropy_hint_tokens_and_supports_sequence_ratios():
    hint = torch.tensor([[True, True, False, False]])
    entropy = torch.tensor([[0.1, 2.0, 1.0, 1.0]])
    objective = build(IGPOConfig(beta=0.0, epsilon=0.2, entropy_clip_ratio=0.5))
    batch = TrainBatch(trajectory(hint), torch.tensor([1.0]))
    loss, _ = objective.loss(batch, scores(LP, entropy=entropy), scores(LP), None)
    assert math.isclose(loss.item(), -1.0, rel_tol=1e-6)  # ratio 1: mean of −A over kept tokens
    kept = objective.loss_mask(batch, scores(LP, entropy=entropy))
    assert kept.tolist() == [[False, True, True, False]]  # hint 0 (low entropy) is dropped
    seq = build(IGPOConfig(beta=0.0, sequence_level_ratio=True, entropy_clip_ratio=1.0))
    loss, _ = seq.loss(TrainBatch(trajectory(), torch.tensor([1.0])), scores(LP), scores(OLD), None)
    seq_ratio = math.exp(float((LP - OLD)[0, :3].mean()))
    assert math.isclose(loss.item(), -min(seq_ratio, 1.2), rel_tol=1e-6)


def test_wd1_loss_weights_sequence_likelihoods():
    objective = build(WD1Config(psi=1.0))
    traj = trajectory()
    batch = TrainBatch(traj.select([0, 0]), torch.tensor([0.4, -0.4]))
    lp = torch.cat([LP, LP - 1])
    loss, _ = objective.loss(batch, Scores(lp.requires_grad_(), torch.ones(2, 4), torch.ones(2, 4).bool(),
                                           torch.ones(2, 4)), None, None)
    per_sequence = lp.detach()[:, :3].mean(1)
    expected = -(torch.tensor([0.4, -0.4]) * per_sequence).mean()
    assert math.isclose(loss.item(), float(expected), rel_tol=1e-6)
    assert not objective.needs_old


def test_mdpo_over_denoising_finds_answers_that_were_right_earlier():
    objective = build(MDPOConfig(over_denoising_filter=True))
    assert objective.config.over_denoising_filter == "rollout"  # true keeps meaning the in-rollout filter
    step_rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    correct = torch.tensor([False, False, True, True])
    # answer 0 was correct at step 1 but wrong at the end; answers 2 and 3 were right at the end
    assert over_denoised(objective.config, step_rewards, correct).tolist() == [True, False, False, False]


ON_POLICY_CASES = {
    "diffu_grpo": (DiffuGRPOConfig(beta=0.04), False),
    "mdpo": (MDPOConfig(beta=0.02), True),
    "igpo": (IGPOConfig(beta=0.01, entropy_clip_ratio=1.0), False),
    "igpo-sequence": (IGPOConfig(beta=0.01, entropy_clip_ratio=1.0, sequence_level_ratio=True), False),
    "wd1": (WD1Config(beta=0.04), False),
}


def on_policy_form(name: str, objective, batch: TrainBatch, lp: torch.Tensor) -> torch.Tensor:
    """Each loss written without a ratio: ``−A·ℓ`` (valued at ``−A``) plus the objective's KL."""
    a = batch.advantages[:, None]
    score = lp - lp.detach()  # value 0, gradient ∇ℓ: the policy-gradient form of ratio = 1
    if name == "mdpo":
        masked = torch.tensor([[True, True, False, True]])
        weight = batch.traj.step_confidence[0, 0].float()[None]
        k2 = 0.5 * (REF - lp) ** 2
        return masked_mean(weight * ((4 / 3) * -a * (1 + score) + 0.02 * k2), masked, dim=1).mean()
    if name == "wd1":
        return -(a * masked_mean(lp, ANSWER, dim=1)).mean() + 0.04 * masked_mean(
            torch.exp(REF - lp) - (REF - lp) - 1, ANSWER)
    if name == "igpo-sequence":
        score = masked_mean(score, ANSWER, dim=1)[:, None].expand_as(lp)
    delta = REF - lp
    return masked_mean(-a * (1 + score) + objective.config.beta * (torch.exp(delta) - delta - 1), ANSWER)


@pytest.mark.parametrize("name", list(ON_POLICY_CASES))
def test_loss_with_theta_equal_to_theta_old_is_the_on_policy_loss(name):
    """θ_old = θ (the trainer's first optimizer step) and θ_old scored separately give one loss and gradient."""
    config, steps = ON_POLICY_CASES[name]
    objective = build(config)
    batch = TrainBatch(trajectory(steps=steps), torch.tensor([1.5]), steps=torch.tensor([0]) if steps else None)
    mask = torch.tensor([[True, True, False, True]]) if steps else None
    values = LP * mask if steps else LP
    ref = scores(REF * mask if steps else REF, mask)
    results = []
    for old in (None, scores(values, mask).logprobs.detach()):
        current = scores(values, mask)
        loss, _ = objective.loss(batch, current, None if old is None else scores(old, mask), ref)
        loss.backward()
        results.append((loss.detach(), current.logprobs.grad))
    lp = values.clone().requires_grad_()
    expected = on_policy_form(name, objective, batch, lp)
    expected.backward()
    for loss, grad in results:
        assert torch.allclose(loss, expected.detach(), atol=1e-6), (loss, expected)
        assert torch.allclose(grad, lp.grad, atol=1e-6), (grad, lp.grad)


@pytest.mark.parametrize("name", ["espo", "bgpo"])
def test_elbo_objectives_give_the_on_policy_loss_when_theta_old_is_theta(name):
    """The ELBO-ratio objectives: θ_old scored separately (= θ) gives the loss and gradient of θ_old = θ."""
    from unmask.recipe import BGPOConfig, ESPOConfig

    config = {"espo": ESPOConfig(beta=0.0), "bgpo": BGPOConfig()}[name]  # spg, like wd1, has no θ_old
    from unmask.recipe import SPGConfig

    assert build(SPGConfig()).needs_old is False and build(WD1Config()).needs_old is False
    objective = build(config)
    batch = TrainBatch(trajectory(), torch.tensor([-0.5]))
    results = []
    for separate in (False, True):
        current = scores(LP)
        old = scores(LP.detach()) if separate else None
        loss, _ = objective.loss(batch, current, old, None)
        loss.backward()
        results.append((loss.detach(), current.logprobs.grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.allclose(loss_a, loss_b) and torch.allclose(grad_a, grad_b)
    assert grad_a.abs().sum() > 0
