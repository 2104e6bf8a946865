"""ESPO: exact-count coupled ELBO and the sequence-level clipped ratio with k2 (objectives-2026.md, ESPO (g))."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl_estimators import TINY
from test_rl_old_policy import spy
from test_trainer import ROWS, make_model, recipe

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.models.tiny import tiny
from unmask.recipe import ESPOConfig
from unmask.rl.advantages import leave_one_out_advantages
from unmask.rl.estimators import Scores, sequence_elbo
from unmask.rl.mc_estimators import ExactCountEstimator, Sample, pool
from unmask.rl.objective import TrainBatch, build_objective
from unmask.rl.trainer import Trainer
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory


@pytest.fixture(scope="module")
def model():
    return tiny(TINY, seed=0).eval()


def answer_logprobs(model, ids, traj):
    with torch.no_grad():
        logits = model.logits(ids, attention_mask=traj.attention_mask)[:, traj.prompt_length:]
    return torch.log_softmax(logits.float(), -1).gather(-1, traj.answer_ids[..., None])[..., 0]


def test_one_token_answer_gives_the_exact_conditional_for_every_draw(model):
    """(g1): L = 1 ⇒ x ∈ {0, 1}, weight 2, ½: E = ℓ(o₁ | prompt ⊕ [MASK]) exactly."""
    traj = generate(model, torch.randint(5, 60, (3, 5)), gen_length=1, steps=1, block_length=1, seed=0)
    ids = traj.tokens.clone()
    ids[:, -1] = model.mask_token_id
    exact = answer_logprobs(model, ids, traj)[:, 0]
    est = ExactCountEstimator(model.process, samples=2)
    for key in range(4):
        with torch.no_grad():
            torch.testing.assert_close(sequence_elbo(est.token_logprobs(model, traj, key)), exact)


def test_coupled_pair_with_two_of_four_masked_is_minus_seven_and_a_half():
    """(g2): L = 4, x = 2, ℓ = (−1, −1) then (−2, −2): weights 5/2, E = ½(−5 − 10) = −7.5."""
    first = torch.tensor([[True, True, False, False]])
    lp = torch.tensor([[-1.0, -1.0, -2.0, -2.0]])
    weight = (4 + 1) / (2 * 1 * torch.tensor([[2.0]]))  # the estimator's (L+1)/(2·m·x), m = 1
    scores = pool([Sample(lp, lp, first, weight), Sample(lp, lp, ~first, weight)])
    assert sequence_elbo(scores).item() == pytest.approx(-7.5)


def test_estimator_is_the_average_of_coupled_exact_count_pairs(model):
    """Σ weight·logprob = (1/m) Σ_c ½((L+1)/x Σ_M ℓ + (L+1)/(L−x) Σ_{M^c} ℓ), from direct forwards."""
    traj = generate(model, torch.randint(5, 60, (5, 4)), gen_length=6, steps=6, block_length=6, seed=1)
    est = ExactCountEstimator(model.process, samples=2)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, 11)
    counts, masks = est.draw(traj, 11)
    expected = torch.zeros(5)
    for x, mask in zip(counts, masks, strict=True):
        assert torch.equal(mask.sum(1), x)  # exactly x masked
        for chosen, size in ((mask, x), (~mask, 6 - x)):
            ids = traj.tokens.clone()
            ids[:, 4:][chosen] = model.mask_token_id
            part = (answer_logprobs(model, ids, traj) * chosen).sum(1)
            expected += torch.where(size > 0, 7 / size.clamp(min=1) * part, 0.0) / 4
    assert scores.mask.all()  # all L positions count, the EOS fill too
    torch.testing.assert_close(sequence_elbo(scores), expected)
    # counts are stratified over the micro-batch: consecutive rows (L+1)/b = 1.4 apart, mod L+1
    for x in counts:
        start = x[0].item()
        assert x.tolist() == [round(start + i * 1.4) % 7 for i in range(5)]


def row_scores(elbo: float, length: int = 256) -> Scores:
    """Scores whose sequence ELBO is ``elbo`` (all on the first position), grad-enabled."""
    lp = torch.zeros(1, length)
    lp[0, 0] = elbo
    return Scores(lp.requires_grad_(), torch.zeros(1, length), torch.ones(1, length, dtype=torch.bool),
                  torch.ones(1, length))


def long_trajectory(length: int = 256) -> Trajectory:
    return Trajectory(
        tokens=torch.zeros(1, 2 + length, dtype=torch.long), attention_mask=torch.ones(1, 2 + length, dtype=torch.bool),
        prompt_length=2, answer_mask=torch.ones(1, length, dtype=torch.bool),
        commit_step=torch.zeros(1, length, dtype=torch.long), hint_mask=torch.zeros(1, length, dtype=torch.bool),
        nfe=torch.ones(1),
    )


def espo(**config):
    return build_objective(ESPOConfig(**config), process=AbsorbingMask(0), temperature=1.0, gen_length=256)


@pytest.mark.parametrize(
    ("delta", "advantage", "value", "has_grad"),
    [(25.6, 1.0, math.exp(0.1), True), (76.8, 1.0, 1.2, False), (-76.8, -1.0, -0.8, False), (-25.6, -1.0, -math.exp(-0.1), True)],
)
def test_length_normalised_ratio_and_its_clip(delta, advantage, value, has_grad):
    """(g3): L = 256, ε = 0.2: ΔE = 25.6 ⇒ ρ = 1.10517; ΔE = ±76.8 with A = ±1 clip to 1.2 / −0.8, no gradient."""
    objective = espo(beta=0.0)
    scores = row_scores(-100.0 + delta)
    loss, metrics = objective.loss(TrainBatch(long_trajectory(), torch.tensor([advantage])), scores, row_scores(-100.0), None)
    assert loss.item() == pytest.approx(-value, rel=1e-5)
    loss.backward()
    assert (scores.logprobs.grad.abs().sum() > 0) == has_grad
    assert metrics["clip_fraction"] == (0.0 if has_grad else 1.0)


def test_sequence_k2_is_half_the_squared_elbo_difference_over_length():
    """(g4): E_θ − E_ref = 16, β = 1e-3 ⇒ KL term ½·16²/256·1e-3 = 5e-4."""
    objective = espo(beta=1e-3)
    batch = TrainBatch(long_trajectory(), torch.tensor([0.0]))
    loss, metrics = objective.loss(batch, row_scores(-84.0), None, row_scores(-100.0))
    assert loss.item() == pytest.approx(5e-4, rel=1e-6)
    assert metrics["kl"] == pytest.approx(0.5)


def test_first_inner_iteration_has_unit_ratio_and_the_plain_elbo_gradient():
    """(g5): θ_old scored with the same masks ⇒ ρ ≡ 1 and ∇loss = −(A/L)∇E_θ + β∇k2 (mean over rows)."""
    model = tiny(TINY, seed=5).train()
    traj = generate(model, torch.randint(5, 60, (4, 5)), gen_length=8, steps=8, block_length=8, seed=6)
    batch = TrainBatch(traj, torch.tensor([1.0, -0.5, 0.25, -0.75]))
    objective = build_objective(ESPOConfig(beta=0.01), process=model.process, temperature=1.0, gen_length=8)
    est = objective.estimator
    with torch.no_grad():
        old = est.token_logprobs(model, traj, 21)
        with_adapter_off = tiny(TINY, seed=6).eval()  # a different reference policy
        ref = est.token_logprobs(with_adapter_off, traj, 21)
    scores = est.token_logprobs(model, traj, 21)
    torch.testing.assert_close(sequence_elbo(scores).detach(), sequence_elbo(old), rtol=0, atol=0)  # ρ ≡ 1
    loss, _ = objective.loss(batch, scores, old, ref)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    scores = est.token_logprobs(model, traj, 21)
    elbo = sequence_elbo(scores)
    plain = (-batch.advantages * elbo / 8).mean() + 0.01 * (0.5 * (elbo - sequence_elbo(ref)) ** 2 / 8).mean()
    for got, want in zip(grads, torch.autograd.grad(plain, list(model.parameters())), strict=True):
        torch.testing.assert_close(got, want)


def test_leave_one_out_baseline():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    expected = torch.tensor([1 - 0.0, 0 - 1 / 2, 0 - 1 / 2, 0.0, 0.0, 0.0])  # r_i − mean of the other two
    torch.testing.assert_close(leave_one_out_advantages(rewards, 3), expected)


def test_later_inner_iterations_see_a_ratio_from_theta_old(tmp_path):
    """μ = 2 on one batch: θ_old and the reference are scored with the θ pass's masks; ρ moves off 1."""
    r = recipe(tmp_path, "espo", algorithm={"num_iterations": 2, "epsilon": 1e-4, "beta": 0.01})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    calls = spy(trainer)
    metrics = trainer.train_step()
    assert metrics["skipped"] == 0.0 and metrics["kl"] >= 0
    assert len(calls) == 4 and all(call["old"] is not None for call in calls)  # 2 iterations × 2 micro-batches
    first = [sequence_elbo(c["scores"]).detach() - sequence_elbo(c["old"]) for c in calls[:2]]
    assert all(d.abs().max() < 1e-4 for d in first)  # the first step: ρ = 1 on shared masks
    assert max(c["metrics"]["clip_fraction"] for c in calls[2:]) > 0  # ε = 1e-4 binds once θ moved
