"""Block-diffusion rollouts: the global block grid, the exact block cache, RCR inside the block."""

from __future__ import annotations

import pytest
import torch

from unmask.errors import UserError
from unmask.models.sdar import tiny_sdar
from unmask.models.tiny import tiny
from unmask.rollouts.generate import generate

STRATEGIES = [
    {"temperature": 0.0},
    {"temperature": 1.0},
    {"temperature": 1.0, "remasking": "random"},
    {"temperature": 0.7, "remasking": "margin"},
    {"temperature": 0.7, "remasking": "entropy"},
    {"temperature": 1.0, "remasking": "rcr"},
    {"temperature": 0.7, "threshold": 0.3},
    {"temperature": 1.0, "schedule": "cosine"},
    {"temperature": 1.0, "early_exit": True},
    {"temperature": 1.0, "dynamic_threshold": 0.2},
]


@pytest.fixture(scope="module")
def model():
    return tiny_sdar(seed=1)


def prompts(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts with the given real lengths."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 60, (len(lengths), width), generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    return ids, mask


@pytest.mark.parametrize("lengths", [[8, 4, 8], [7, 5, 2]], ids=["P%B=0", "P%B!=0"])
@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_block_cache_gives_the_uncached_tokens(model, lengths, settings):
    ids, mask = prompts(lengths, 8)
    common = {"attention_mask": mask, "gen_length": 12, "steps": 9, "block_length": 4, "seed": 5, **settings}
    full = generate(model, ids, **common)
    cached = generate(model, ids, cache="block", **common)
    assert torch.equal(cached.tokens, full.tokens)
    assert torch.equal(cached.commit_step, full.commit_step)
    assert (cached.flops < full.flops).all()  # one block per step instead of the whole canvas


def test_rounds_follow_the_global_grid_of_compact_positions(model):
    """A 7-token prompt fills 3 of block 1's places: the first round decodes one answer token."""
    ids, mask = prompts([7], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=8, steps=4, block_length=4, seed=0, record=True)
    rounds = (7 + torch.arange(8)) // 4 - 7 // 4
    assert rounds.tolist() == [0, 1, 1, 1, 1, 2, 2, 2]
    steps_per_round = 4 // 2
    for position, round_index in enumerate(rounds.tolist()):
        committed = int(traj.commit_step[0, position])
        assert round_index * steps_per_round <= committed < (round_index + 1) * steps_per_round
    assert traj.step_masked[:steps_per_round, 0, 1:].all()  # later blocks wait for the first


def test_rcr_never_remasks_an_earlier_block(model):
    ids, mask = prompts([8, 6], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=12, steps=12, block_length=4, seed=2,
                    temperature=1.0, remasking="rcr", record=True)
    plen = mask.sum(1)
    rounds = (plen[:, None] + torch.arange(12)) // 4 - (plen // 4)[:, None]
    per_round = 12 // 3
    for t in range(traj.num_steps):
        current = t // per_round
        earlier = rounds < current
        assert not (traj.step_masked[t] & earlier).any(), f"step {t} re-masked an earlier block"


def test_block_length_must_be_the_family_block_size(model):
    ids, mask = prompts([8], 8)
    with pytest.raises(UserError, match="block size"):
        generate(model, ids, attention_mask=mask, gen_length=16, steps=4, block_length=8)


def test_approximate_caches_are_refused_for_block_families_and_block_for_full_attention(model):
    ids, mask = prompts([8], 8)
    with pytest.raises(UserError, match="cache='block'"):
        generate(model, ids, attention_mask=mask, gen_length=8, steps=4, block_length=4, cache="dual")
    full = tiny({"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}, seed=0)
    with pytest.raises(UserError, match="block-diffusion family"):
        generate(full, ids, gen_length=8, steps=4, block_length=4, cache="block")


def test_cached_block_logits_equal_the_full_forward_at_every_step(model):
    """The sampler's recorded log-probs are the same with and without the cache (greedy, record)."""
    ids, mask = prompts([6, 8], 8)
    common = {"attention_mask": mask, "gen_length": 8, "steps": 8, "block_length": 4, "seed": 0, "record": True}
    full, cached = generate(model, ids, **common), generate(model, ids, cache="block", **common)
    chosen = full.step_masked & (cached.step_pred != model.mask_token_id)
    torch.testing.assert_close(cached.step_logprob[chosen], full.step_logprob[chosen], rtol=1e-5, atol=1e-5)


def test_dynamic_threshold_tops_up_the_schedule(model):
    """SDAR's dynamic rule: every position above the threshold, and at least the schedule's count."""
    ids, mask = prompts([8, 8], 8)
    common = {"attention_mask": mask, "gen_length": 12, "steps": 12, "block_length": 4, "seed": 1, "temperature": 0.0}
    plain = generate(model, ids, **common)
    never = generate(model, ids, dynamic_threshold=1.0, **common)  # no probability exceeds 1: the schedule alone
    assert torch.equal(never.tokens, plain.tokens) and torch.equal(never.nfe, plain.nfe)
    eager = generate(model, ids, dynamic_threshold=1e-9, record=True, **common)  # everything clears it
    assert eager.nfe.tolist() == [3, 3]  # one step per block
    assert (eager.tokens[:, 8:] != model.mask_token_id).all()
    with pytest.raises(UserError, match="dynamic_threshold"):
        generate(model, ids, dynamic_threshold=0.5, remasking="rcr", **common)
