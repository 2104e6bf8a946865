"""SPG: block-wise masks, the pooled ELBO, the log-space EUBO and the sandwich loss (objectives-2026.md, SPG (g))."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl_estimators import TINY

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import RecipeError
from unmask.models.tiny import tiny
from unmask.recipe import SPGConfig, validate_recipe
from unmask.rl.estimators import Scores, sequence_elbo
from unmask.rl.mc_estimators import BlockEstimator, Sample, eubo_tokens, pool
from unmask.rl.objective import TrainBatch, build_objective
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory

LN = math.log


@pytest.fixture(scope="module")
def model():
    return tiny(TINY, seed=0).eval()


def answer_trajectory(completion: int, length: int = 4) -> Trajectory:
    """One row, prompt of 2, an answer whose first ``completion`` positions are C."""
    answer = torch.zeros(1, length, dtype=torch.bool)
    answer[0, :completion] = True
    return Trajectory(
        tokens=torch.zeros(1, 2 + length, dtype=torch.long), attention_mask=torch.ones(1, 2 + length, dtype=torch.bool),
        prompt_length=2, answer_mask=answer, commit_step=torch.zeros(1, length, dtype=torch.long),
        hint_mask=torch.zeros(1, length, dtype=torch.bool), nfe=torch.ones(1),
    )


def spg(**config):
    return build_objective(SPGConfig(**config), process=AbsorbingMask(0), temperature=1.0, gen_length=4)


def hand_scores(logprobs: list[list[float]], scored: list[list[int]], ratio: list[float], beta: float) -> Scores:
    """Pooled scores of m samples over one row of 4 positions, with the EUBO term."""
    lp = torch.tensor(logprobs)[:, None, :]
    mask = torch.zeros(len(scored), 1, 4, dtype=torch.bool)
    for j, positions in enumerate(scored):
        mask[j, 0, positions] = True
    t = torch.tensor(ratio)[:, None]
    samples = [Sample(lp[j], torch.zeros(1, 4), mask[j], 1 / (len(scored) * t[j])[:, None]) for j in range(len(scored))]
    return pool(samples, eubo_tokens(lp, mask, t, beta))


def test_one_sample_elbo_is_the_inverse_ratio_sum():
    """(g1): |C| = 4, S = {1, 3} (t̂ = ½), ℓ = (−1, −2): |C|·ē = −6 = (1/t̂)·Σℓ."""
    scores = hand_scores([[-1.0, 0.0, -2.0, 0.0]], [[0, 2]], [0.5], beta=1.0)
    assert sequence_elbo(scores).item() == pytest.approx(-6.0)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_with_one_sample_the_eubo_is_the_elbo_shifted_by_a_constant(beta):
    """(g2): m = 1 ⇒ ū − ē = ln(1/t̂)/β."""
    scores = hand_scores([[-1.0, -0.3, -2.0, 0.0]], [[0, 1, 2]], [0.75], beta)
    elbo = sequence_elbo(scores).item() / 4
    upper = float(scores.upper[scores.mask].mean())
    assert upper - elbo == pytest.approx(LN(1 / 0.75) / beta, rel=1e-6)


def test_two_sample_sandwich_matches_the_hand_computation():
    """(g3): |C| = 4, β = 1, m = 2 ⇒ a = (0.5, 1.25), ū = −0.2350, ē = −0.8664; losses for A = ∓1 and ω."""
    scores = hand_scores([[LN(0.5), LN(0.25), 0, 0], [0, LN(0.5), 0, 0]], [[0, 1], [1]], [0.5, 0.25], beta=1.0)
    torch.testing.assert_close(scores.upper[0, :2].exp(), torch.tensor([0.5, 1.25]))
    assert sequence_elbo(scores).item() == pytest.approx(-3.4657, abs=1e-4)
    batch = TrainBatch(answer_trajectory(4), torch.tensor([-1.0]))
    values = {omega: spg(omega=omega).loss(batch, scores, None, None)[0].item() for omega in (1.0, 0.5, 0.0)}
    # one row with A = −1: loss = |C|·V/|C| = V
    assert values == pytest.approx({1.0: -0.2350, 0.5: -0.5507, 0.0: -0.8664}, abs=1e-4)
    assert values[1.0] >= values[0.0]  # ū ≥ ē
    positive = TrainBatch(answer_trajectory(4), torch.tensor([1.0]))
    for omega in (1.0, 0.0):  # positive answers always use the ELBO
        assert spg(omega=omega).loss(positive, scores, None, None)[0].item() == pytest.approx(0.8664, abs=1e-4)


def test_omega_zero_is_spg_with_elbo():
    """(g4): ω = 0 makes the loss −Σ A·|C|·ē / Σ|C| for every sign of A."""
    scores = hand_scores([[LN(0.5), LN(0.25), 0, 0], [0, LN(0.5), -3.0, 0]], [[0, 1], [1, 2]], [0.5, 0.5], beta=2.0)
    for advantage in (-0.7, 0.4):
        batch = TrainBatch(answer_trajectory(3), torch.tensor([advantage]))
        loss = spg(omega=0.0).loss(batch, scores, None, None)[0]
        assert loss.item() == pytest.approx(-advantage * sequence_elbo(scores).item() / 3, rel=1e-6)


def test_eubo_is_computed_in_log_space():
    """p^β of a −150-nat token underflows in float32; the log-space form keeps it in K."""
    lp = torch.tensor([[[-150.0, -1.0]], [[-150.0, -1.0]]])
    scored = torch.ones(2, 1, 2, dtype=torch.bool)
    upper = eubo_tokens(lp, scored, torch.tensor([[0.5], [0.5]]), beta=2.0)
    assert torch.exp(2.0 * lp[0, 0, 0]) == 0  # the naive p^β is gone
    torch.testing.assert_close(upper, torch.tensor([[-150.0 + LN(2) / 2, -1.0 + LN(2) / 2]]))


def test_block_masks_follow_the_spg_recipe(model):
    prompts = torch.randint(5, 60, (6, 5))
    prompts[0, :2] = model.pad_token_id
    traj = generate(model, prompts, gen_length=16, steps=16, block_length=16, temperature=1.0, seed=1)
    traj.answer_mask[:, 11:] = False  # completions of 11 tokens, then EOS fill
    traj.attention_mask[0, :2] = False
    est = BlockEstimator(model.process, samples=3, block_length=4, p_mask=0.3)
    drop, masked = est.draw(traj, 7)
    again, other = est.draw(traj, 7), est.draw(traj, 8)
    assert torch.equal(masked, again[1]) and torch.equal(drop, again[0]) and not torch.equal(masked, other[1])
    assert masked[..., 11:].all()  # post-EOS always masked
    assert not drop[:, 0, :2].any() and drop.any()  # left padding never dropped, the rest at p_mask
    # without the p_mask noise the cut block is the first one with a mask: k ≥ 1 there, all later blocks masked
    _, clean = BlockEstimator(model.process, samples=3, block_length=4, p_mask=0.0).draw(traj, 7)
    cuts = set()
    for j in range(3):
        for row in range(6):
            cut = int(clean[j, row].nonzero().min()) // 4
            assert cut < 3 and clean[j, row, 4 * (cut + 1):].all()
            cuts.add(cut)
    assert cuts == {0, 1, 2}  # every completion block gets cut somewhere, the EOS-only block never


def test_pooled_elbo_and_eubo_equal_the_per_sample_formulas(model):
    """Σ weight·logprob = (1/m) Σ_j (1/t̂_j) Σ_{S_j} ℓ_jk, and upper = (1/β) ln a_k, from direct forwards."""
    prompts = torch.randint(5, 60, (3, 5))
    traj = generate(model, prompts, gen_length=8, steps=8, block_length=8, temperature=1.0, seed=2)
    traj.answer_mask[1, 5:] = False
    est = BlockEstimator(model.process, samples=2, block_length=4, p_mask=0.15, beta=1.5)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, 3)
    drop, masked = est.draw(traj, 3)
    completion = traj.answer_mask.sum(1)
    elbo, a = torch.zeros(3), torch.zeros(3, 8, dtype=torch.float64)
    for j in range(2):
        ids = traj.tokens.clone()
        ids[:, :5][drop[j]] = model.mask_token_id
        ids[:, 5:][masked[j]] = model.mask_token_id
        lp = direct_logprobs_at(model, ids, traj, 5)
        scored = masked[j] & traj.answer_mask
        ratio = scored.sum(1) / completion
        elbo += (lp * scored).sum(1) / ratio / 2
        a += (scored * lp.double().mul(1.5).exp() / ratio[:, None]) / 2
    torch.testing.assert_close(sequence_elbo(scores), elbo)
    in_k = a > 0
    assert torch.equal(in_k, scores.mask)
    torch.testing.assert_close(scores.upper[in_k].double(), a[in_k].log() / 1.5, rtol=1e-5, atol=1e-5)


def direct_logprobs_at(model, ids, traj, prompt_length):
    """``direct_logprobs`` for a prompt of ``prompt_length`` (the helper assumes 4)."""
    with torch.no_grad():
        logits = model.logits(ids, attention_mask=traj.attention_mask)[:, prompt_length:]
    return torch.log_softmax(logits.float(), -1).gather(-1, traj.answer_ids[..., None])[..., 0]


def test_with_one_sample_the_eubo_loss_has_the_elbo_gradient():
    """(g2) on a real model: m = 1, A < 0, ω = 1 (EUBO) and ω = 0 (ELBO) give the same gradient."""
    model = tiny(TINY, seed=3).train()
    traj = generate(model, torch.randint(5, 60, (2, 4)), gen_length=8, steps=8, block_length=8, seed=4)
    batch = TrainBatch(traj, torch.tensor([-1.0, -0.5]))
    grads = []
    for omega in (1.0, 0.0):
        objective = spg(omega=omega)
        objective.estimator = BlockEstimator(model.process, samples=1, block_length=4, beta=2.0)
        model.zero_grad()
        objective.loss(batch, objective.estimator.token_logprobs(model, traj, 5), None, None)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_spg_recipe_refuses_a_kl_and_a_single_sample():
    base = {"algorithm": {"name": "spg"}}
    assert validate_recipe(base, "r.yaml").algorithm.mc_samples == 2
    with pytest.raises(RecipeError, match="algorithm.*beta must be 0.*eubo_beta"):
        validate_recipe({"algorithm": {"name": "spg", "beta": 0.04}}, "r.yaml")
    with pytest.raises(RecipeError, match="algorithm.mc_samples"):
        validate_recipe({"algorithm": {"name": "spg", "mc_samples": 1}}, "r.yaml")
