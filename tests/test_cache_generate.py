"""Fast rollouts in the sampler: cache modes, partial LM head, early exit, FLOP accounting."""

from __future__ import annotations

import pytest
import torch
from reference_sampler import random_tiny, reference_generate

from unmask.errors import UserError
from unmask.rollouts.generate import generate

SETTINGS = {"gen_length": 24, "steps": 24, "block_length": 8}


@pytest.fixture(scope="module")
def model():
    return random_tiny(seed=0, scale=0.2)  # varied predictions, yet a mild cache approximation


@pytest.fixture(scope="module")
def prompts():
    return torch.randint(5, 100, (4, 10), generator=torch.Generator().manual_seed(1))


def block_inputs(model) -> list[int]:
    """Columns entering the first block at each forward (a real hook, not an estimate)."""
    seen: list[int] = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0] * args[0].shape[1]))
    return seen


@pytest.mark.parametrize("partial_head", [True, False])
def test_cache_off_is_the_reference(model, prompts, partial_head) -> None:
    ours = generate(model, prompts, cache="none", partial_head=partial_head, **SETTINGS)
    assert torch.equal(ours.tokens, reference_generate(model, prompts, **SETTINGS))
    assert ours.flops is not None and (ours.flops > 0).all()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_mostly_agrees_and_is_really_used(prompts, cache) -> None:
    model = random_tiny(seed=0, scale=0.2)
    seen = block_inputs(model)
    ref = generate(model, prompts, **SETTINGS)
    full = sum(seen)
    seen.clear()
    ours = generate(model, prompts, cache=cache, record=True, **SETTINGS)
    match = (ours.answer_ids == ref.answer_ids).double().mean().item()
    assert match >= 0.9
    canvas, block, batch = prompts.shape[1] + 24, 8, prompts.shape[0]
    # per block: one full forward, then 7 forwards of the block (+ suffix for prefix)
    suffixes = [24 - 8 * k for k in range(3)] if cache == "prefix" else [block] * 3
    assert sum(seen) == batch * sum(canvas + 7 * cols for cols in suffixes)
    assert sum(seen) < full * (0.6 if cache == "prefix" else 0.35)
    assert (ours.flops < ref.flops).all()
    first_steps = torch.zeros(24, dtype=torch.bool)
    first_steps[::8] = True
    assert torch.equal(ours.step_cached, ~first_steps[:, None].expand(24, batch))
    assert ref.step_cached is None  # only recorded with record=True


@pytest.mark.parametrize(
    "strategy",
    [
        {"remasking": "margin"},
        {"remasking": "entropy"},
        {"remasking": "rcr"},
        {"threshold": 0.3},
        {"cfg_scale": 1.0},
    ],
    ids=["margin", "entropy", "rcr", "threshold", "cfg"],
)
def test_strategies_and_inpainting_run_with_dual_cache(model, prompts, strategy) -> None:
    hints = torch.full((4, 24), -1)
    hints[:, [2, 9]] = 7
    ours = generate(model, prompts, cache="dual", hints=hints, seed=3, record=True, **SETTINGS, **strategy)
    assert (ours.answer_ids != model.mask_token_id).all()
    assert (ours.answer_ids[:, [2, 9]] == 7).all()
    ref = generate(model, prompts, hints=hints, seed=3, **SETTINGS, **strategy)
    assert (ours.answer_ids == ref.answer_ids).double().mean() >= 0.8
    assert ours.step_cached.any()


def test_left_padded_row_keeps_its_answer_under_dual_cache(model, prompts) -> None:
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompts[:1]], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    alone = generate(model, prompts[:1], cache="dual", **SETTINGS)
    left = generate(model, padded, attention_mask=mask, cache="dual", **SETTINGS)
    assert torch.equal(left.answer_ids, alone.answer_ids)


def test_early_exit_finishes_rows_at_their_eos(model, prompts) -> None:
    eos = model.eos_token_ids[0]
    hints = torch.full((4, 24), -1)
    hints[0, 3] = eos  # row 0 ends early: everything after position 3 is padding
    seen = block_inputs(model)
    plain = generate(model, prompts, hints=hints, record=True, **SETTINGS)
    before = len(seen)
    fast = generate(model, prompts, hints=hints, record=True, early_exit=True, **SETTINGS)
    # what rewards see (up to the first EOS) is unchanged; row 0's tail was filled with EOS
    assert torch.equal(fast.answer_mask, plain.answer_mask)
    assert torch.equal(fast.answer_ids[fast.answer_mask], plain.answer_ids[plain.answer_mask])
    assert torch.equal(fast.answer_ids[1:], plain.answer_ids[1:])
    assert (fast.answer_ids[0, 4:] == eos).sum() > (plain.answer_ids[0, 4:] == eos).sum()
    assert fast.nfe[0] < plain.nfe[0] and torch.equal(fast.nfe[1:], plain.nfe[1:])
    assert fast.flops[0] < plain.flops[0]
    assert sum(seen[before:]) < sum(seen[:before])  # the batch really shrank
    # the record still rebuilds the final canvas
    assert torch.equal(fast.canvas(fast.num_steps, model.process), fast.tokens)


def test_bad_speed_settings_are_named(model, prompts) -> None:
    with pytest.raises(UserError, match="unknown cache 'kv'"):
        generate(model, prompts, cache="kv", **SETTINGS)
    with pytest.raises(UserError, match="early_exit"):
        generate(model, prompts, remasking="rcr", early_exit=True, **SETTINGS)


def test_cache_refresh_recomputes_the_full_canvas_every_nth_step(prompts) -> None:
    model = random_tiny(seed=0, scale=0.2)
    ref = generate(model, prompts, **SETTINGS)
    every = generate(model, prompts, cache="dual", cache_refresh=1, **SETTINGS)
    assert torch.equal(every.tokens, ref.tokens)  # a full forward at every step is the reference
    seen = block_inputs(model)
    generate(model, prompts, cache="dual", cache_refresh=2, **SETTINGS)
    canvas, batch = prompts.shape[1] + 24, prompts.shape[0]
    assert sum(seen) == batch * 3 * 4 * (canvas + 8)  # per block: 4 × (full, then block only)
    with pytest.raises(UserError, match="cache_refresh"):
        generate(model, prompts, cache="dual", cache_refresh=-1, **SETTINGS)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_prefix_cache_is_exact_when_the_prompt_is_blind_to_the_answer(prompts, cache, threshold) -> None:
    from unmask.models import tiny

    model = tiny({"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64, "prompt_attends_answer": False})
    model.init_weights(0, std=0.2)
    one_block = {**SETTINGS, "block_length": 24, "threshold": threshold}
    ref = generate(model, prompts, **one_block)
    seen = block_inputs(model)
    ours = generate(model, prompts, cache=cache, **one_block)
    assert torch.equal(ours.tokens, ref.tokens)
    canvas, batch = prompts.shape[1] + 24, prompts.shape[0]
    assert seen[0] == batch * canvas and all(width <= batch * 24 for width in seen[1:])


def test_delayed_cache_runs_each_committed_column_once_more_then_reads_it() -> None:
    model = random_tiny(seed=0, scale=0.2)
    prompts = torch.randint(5, 100, (1, 10), generator=torch.Generator().manual_seed(1))
    seen = block_inputs(model)
    ours = generate(model, prompts, cache="delayed", **SETTINGS)
    canvas = prompts.shape[1] + 24
    # one token per step: step i > 0 of a block runs its 8 - i masked columns plus the one just committed
    assert seen == [canvas, *(9 - i for i in range(1, 8))] * 3
    ref = generate(model, prompts, **SETTINGS)
    assert (ours.answer_ids == ref.answer_ids).double().mean().item() >= 0.8
