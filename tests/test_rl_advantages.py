"""Advantages, KL estimators, clipping and IGPO hint pieces on worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.rl.advantages import (
    all_wrong_groups,
    group_advantages,
    mdpo_advantages,
    mdpo_step_values,
    top_steps,
    wd1_weights,
)
from unmask.rl.hints import entropy_filter, hint_row, reasoning_only
from unmask.rl.losses import clipped_surrogate, kl_k2, kl_k3, masked_mean, sequence_log_ratio


def test_group_advantages_mean_and_std_scaling():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(group_advantages(rewards, 3), torch.tensor([2 / 3, -1 / 3, -1 / 3, -4 / 3, 2 / 3, 2 / 3]))
    scaled = group_advantages(rewards, 3, "group")
    std = torch.tensor([1.0, 0.0, 0.0]).std()
    torch.testing.assert_close(scaled[:3], torch.tensor([2 / 3, -1 / 3, -1 / 3]) / (std + 1e-4))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, 4)


def test_mdpo_worked_example():
    # G = 2 answers, T = 3 steps. Rewards of the intermediate predictions:
    #   answer 1: R = [0, 1, 1]   answer 2: R = [1, 0, 0]
    # Ã_t = 1 + (R_t − R_{t−1}) + m_t,  R_{−1} = 0, m_t = mean(R_{t'>t}), m_2 = R_2
    #   answer 1: t0: 1 + 0 + 1 = 2   t1: 1 + 1 + 1 = 3   t2: 1 + 0 + 1 = 2
    #   answer 2: t0: 1 + 1 + 0 = 2   t1: 1 − 1 + 0 = 0   t2: 1 + 0 + 0 = 1
    rewards = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(mdpo_step_values(rewards), torch.tensor([[2.0, 3.0, 2.0], [2.0, 0.0, 1.0]]))
    # per-step group normalisation (unbiased std, + 1e-4):
    #   t0: equal values -> 0;  t1: (3 − 1.5) / (√4.5 + 1e-4);  t2: (2 − 1.5) / (√0.5 + 1e-4)
    a1 = 1.5 / (math.sqrt(4.5) + 1e-4)
    a2 = 0.5 / (math.sqrt(0.5) + 1e-4)
    expected = torch.tensor([[0.0, a1, a2], [0.0, -a1, -a2]])
    advantages = mdpo_advantages(rewards, 2)
    torch.testing.assert_close(advantages, expected)
    # the two informative steps are chosen, for both answers
    assert top_steps(advantages, 2).tolist() == [[1, 2], [1, 2]]
    assert top_steps(advantages, 1).tolist() == [[1], [1]]


def test_top_steps_are_chosen_per_answer_not_per_group():
    # answer 0 is informative at step 0, answer 1 at step 2; the group sum would favour step 2 for both
    advantages = torch.tensor([[0.9, 0.1, -0.2], [-0.05, 0.3, 1.5]])
    assert top_steps(advantages, 1).tolist() == [[0], [2]]
    assert top_steps(advantages, 2).tolist() == [[0, 2], [1, 2]]


def test_wd1_weights_and_all_wrong_groups():
    weights = wd1_weights(torch.tensor([0.5, -0.5]), 2, psi=1.0)
    up = math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5))
    torch.testing.assert_close(weights, torch.tensor([2 * up - 1, 1 - 2 * up]))
    correct = torch.tensor([False, False, True, False])
    assert all_wrong_groups(correct, 2).tolist() == [True, False]


def test_clipping_engages_outside_the_interval():
    log_ratio = torch.log(torch.tensor([0.5, 1.0, 2.0, 0.5, 2.0])).requires_grad_()
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0])
    gain, clipped = clipped_surrogate(log_ratio, adv, epsilon=0.2, epsilon_high=0.28)
    torch.testing.assert_close(gain.detach(), torch.tensor([0.5, 1.0, 1.28, -0.8, -2.0]))
    assert clipped.tolist() == [False, False, True, True, False]
    gain.sum().backward()
    assert log_ratio.grad[clipped].abs().sum() == 0 and (log_ratio.grad[~clipped] != 0).all()


def test_kl_estimators_and_masked_means():
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    torch.testing.assert_close(kl_k2(lp, ref), torch.tensor([0.125, 0.0]))
    torch.testing.assert_close(kl_k3(lp, ref), torch.tensor([math.exp(-0.5) + 0.5 - 1, 0.0]))
    values, mask = torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[True, False], [False, False]])
    assert masked_mean(values, mask) == 1.0
    assert masked_mean(values, mask, dim=1).tolist() == [1.0, 0.0]
    seq = sequence_log_ratio(torch.tensor([[0.2, 0.4, 9.0]]), torch.zeros(1, 3), torch.tensor([[1, 1, 0]]).bool())
    torch.testing.assert_close(seq, torch.full((1, 3), 0.3))


def test_hints_come_from_the_reasoning_only_and_leave_the_tail_free():
    trace = "first add 3 and 4 to get 7 then times 2 #### 14"
    assert reasoning_only(trace) == "first add 3 and 4 to get 7 then times 2"
    assert reasoning_only("so we get \\boxed{14}") == "so we get"
    ids = list(range(100, 140))
    for seed in range(20):
        row = hint_row(ids, 48, ratio_range=(0.2, 0.6), chunk_range=(5, 10), free_tail=30,
                       gen=torch.Generator().manual_seed(seed))
        shown = row >= 0
        assert not shown[18:].any()  # last 30 of 48 positions free
        assert torch.equal(row[shown], torch.tensor(ids[:18])[shown[:18]])  # tokens at their own offsets
        assert shown.any()


def test_entropy_filter_keeps_the_stated_fraction():
    entropy = torch.arange(20, dtype=torch.float).flip(0)[None].repeat(2, 1)
    hint = torch.zeros(2, 20, dtype=torch.bool)
    hint[0, :10] = True
    hint[1, 5:15] = True
    kept = entropy_filter(entropy, hint, 0.2)
    assert kept.sum(1).tolist() == [2, 2]
    assert kept[0].nonzero().flatten().tolist() == [0, 1]  # the highest entropies among hints
    assert kept[1].nonzero().flatten().tolist() == [5, 6]
    assert not (kept & ~hint).any()
    assert entropy_filter(entropy, hint, 1.0).equal(hint)
