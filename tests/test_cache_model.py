"""Model side of fast rollouts: partial LM head, partial forward against a KV cache."""

from __future__ import annotations

import pytest
import torch

from unmask.models import Dream, DreamConfig, LLaDA, NativeLM, tiny
from unmask.models.llada import LLaDAConfig

VOCAB = 40
SMALL_TINY = {"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64}


def small_tiny() -> NativeLM:
    model = tiny(SMALL_TINY)
    model.init_weights(1, std=0.3)  # strong weights: columns visibly influence each other
    return model


def small_dream() -> NativeLM:
    config = DreamConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, mask_token_id=39, pad_token_id=38,
        bos_token_id=38, eos_token_id=38,
    )  # fmt: skip
    model = Dream(config)
    model.init_weights(1, std=0.3)
    return model.eval()


def small_llada() -> NativeLM:
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=48, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=39, eos_token_id=38, pad_token_id=38,
    )  # fmt: skip
    model = LLaDA(config)
    model.init_weights(1, std=0.3)
    return model.eval()


FAMILIES = [pytest.param(small_tiny, id="tiny"), pytest.param(small_dream, id="dream"), pytest.param(small_llada, id="llada")]


def canvas(model: NativeLM) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the second left-padded by three columns, 14 columns in all."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30, (2, 14), generator=gen)
    ids[:, 10:] = model.mask_token_id
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :3] = False
    ids[1, :3] = model.pad_token_id
    return ids, mask


def first_layer_keys(model: NativeLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    cache = model.new_cache()
    model.logits(ids, mask, cache=cache)
    return cache.keys[0].clone()


@pytest.mark.parametrize("make", FAMILIES)
def test_logits_at_equals_full_logits_at_those_columns(make) -> None:
    model = make()
    ids, mask = canvas(model)
    cols = torch.tensor([0, 3, 4, 11, 13])
    full = model.logits(ids, mask)
    torch.testing.assert_close(model.logits(ids, mask, logits_at=cols), full[:, cols])


@pytest.mark.parametrize("make", FAMILIES)
def test_partial_forward_on_fresh_cache_is_the_full_forward(make) -> None:
    model = make()
    ids, mask = canvas(model)
    full = model.logits(ids, mask)
    cache = model.new_cache()
    torch.testing.assert_close(model.logits(ids, mask, cache=cache), full)
    block = torch.arange(10, 12)
    out = model.logits(ids, mask, columns=block, cache=cache)
    torch.testing.assert_close(out, full[:, block], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", FAMILIES)
def test_partial_forward_runs_only_the_needed_columns(make) -> None:
    model = make()
    ids, mask = canvas(model)
    seen: list[int] = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    cache = model.new_cache()
    model.logits(ids, mask, cache=cache)
    model.logits(ids, mask, columns=torch.arange(10, 12), cache=cache, logits_at=torch.tensor([11]))
    # logits outside the recomputed columns (Dream: column 10 reads 9) come from cached states
    model.logits(ids, mask, columns=torch.arange(10, 12), cache=cache, logits_at=torch.tensor([5, 10]))
    assert seen == [14, 2, 2]


@pytest.mark.parametrize("make", FAMILIES)
def test_stale_cache_is_refreshed_only_at_computed_columns(make) -> None:
    model = make()
    ids, mask = canvas(model)
    cache = model.new_cache()
    model.logits(ids, mask, cache=cache)
    stale = cache.keys[0].clone()
    new = ids.clone()
    new[:, 10] = 7  # commit a token in the block
    block = torch.arange(10, 12)
    out = model.logits(new, mask, columns=block, cache=cache)
    fresh = first_layer_keys(model, new, mask)
    others = torch.tensor([c for c in range(14) if c not in block.tolist()])
    # layer-0 keys depend only on token and position: recomputed ones are exact
    torch.testing.assert_close(cache.keys[0][:, :, block], fresh[:, :, block])
    assert torch.equal(cache.keys[0][:, :, others], stale[:, :, others])
    # the approximation: other columns still hold keys of the old canvas
    assert not torch.allclose(out, model.logits(new, mask)[:, block], atol=1e-4)
    # and logits outside the recomputed columns are those of their cached (old) state
    old_13 = model.logits(ids, mask)[:, 13:]
    torch.testing.assert_close(model.logits(new, mask, columns=block, cache=cache, logits_at=torch.tensor([13])), old_13)


def test_select_keeps_rows_and_shift_respects_left_padding() -> None:
    model = small_dream()
    ids, mask = canvas(model)
    cache = model.new_cache()
    model.logits(ids, mask, cache=cache)
    row = model.new_cache()
    model.logits(ids[1:], mask[1:], cache=row)
    torch.testing.assert_close(cache.select(torch.tensor([1])).values[1], row.values[1])
    # row 1's first real token (column 3) keeps its own output, as in the full forward
    torch.testing.assert_close(
        model.logits(ids, mask, logits_at=torch.tensor([3])), model.logits(ids, mask)[:, 3:4]
    )


def test_partial_forward_without_a_filled_cache_is_refused() -> None:
    model = small_tiny()
    ids, mask = canvas(model)
    with pytest.raises(ValueError, match="needs the KVCache"):
        model.logits(ids, mask, columns=torch.arange(10, 12))
    with pytest.raises(ValueError, match="KVCache is empty"):
        model.logits(ids, mask, columns=torch.arange(10, 12), cache=model.new_cache())


def blind_tiny() -> NativeLM:
    model = tiny({**SMALL_TINY, "prompt_attends_answer": False})
    model.init_weights(1, std=0.3)
    return model


def test_blind_prompt_states_do_not_depend_on_the_answer() -> None:
    ids, mask = canvas(small_tiny())
    other = ids.clone()
    other[:, 10:] = torch.tensor([7, 8, 9, 10])  # a different answer after the 10-column prompt
    blind, seeing = blind_tiny(), small_tiny()
    torch.testing.assert_close(
        blind.logits(other, mask, prompt_length=10)[:, :10], blind.logits(ids, mask, prompt_length=10)[:, :10]
    )
    assert not torch.allclose(seeing.logits(other, mask)[:, :10], seeing.logits(ids, mask)[:, :10], atol=1e-4)
    # the answer still reads the prompt
    prompt_changed = ids.clone()
    prompt_changed[:, 5] = 11
    assert not torch.allclose(
        blind.logits(prompt_changed, mask, prompt_length=10)[:, 10:], blind.logits(ids, mask, prompt_length=10)[:, 10:]
    )
    with pytest.raises(ValueError, match="pass prompt_length"):
        blind.logits(ids, mask)


def test_blind_prompt_makes_a_prefix_cache_exact() -> None:
    model = blind_tiny()
    ids, mask = canvas(model)
    cache = model.new_cache()
    model.logits(ids, mask, cache=cache, prompt_length=10)
    new = ids.clone()
    new[:, 10:12] = torch.tensor([7, 8])  # commit two answer tokens
    answer = torch.arange(10, 14)
    out = model.logits(new, mask, columns=answer, cache=cache, prompt_length=10)
    torch.testing.assert_close(out, model.logits(new, mask, prompt_length=10)[:, answer], atol=1e-5, rtol=1e-5)


def test_blind_prompt_survives_a_save_and_load(tmp_path) -> None:
    from unmask.models import load_model

    model = blind_tiny()
    model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.config.prompt_attends_answer is False
    ids, mask = canvas(model)
    torch.testing.assert_close(loaded.logits(ids, mask, prompt_length=10), model.logits(ids, mask, prompt_length=10))
