"""SDAR on the tiny random config: Qwen3 parity, block-causal and two-stream masks, the exact
block KV cache, LoRA and export (docs/models.md, SDAR)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from unmask.cli import main
from unmask.models import CheckpointError, load_model
from unmask.models.block_mask import block_causal_mask, block_ids, two_stream_mask
from unmask.models.kv_cache import KVCache
from unmask.models.lora import apply_lora
from unmask.models.sdar import SDAR, TINY, SDARConfig, tiny_sdar

VOCAB = TINY["vocab_size"]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def random_sdar(seed: int = 0, **overrides) -> SDAR:
    """Every weight random, the per-head q/k norms and layer norms too (not 1.0)."""
    model = tiny_sdar(seed, **overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3 + (1.0 if param.ndim == 1 else 0.0))
    return model


def qwen3_twin(model: SDAR, attn: str = "sdpa") -> Qwen3ForCausalLM:
    """transformers' Qwen3 with the same config and the SDAR state dict loaded strictly."""
    c = model.config
    config = Qwen3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps,
        max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
    )  # fmt: skip
    config._attn_implementation = attn
    twin = Qwen3ForCausalLM(config).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin


def two_stream_logits(model, noisy: torch.Tensor, clean: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Noisy-half logits of ``[x_t ; x_0]``: the training forward of a block family."""
    n = noisy.shape[1]
    positions = torch.arange(n).expand_as(noisy) if valid is None else (valid.cumsum(1) - 1).clamp(min=0)
    return model.logits(torch.cat([noisy, clean], 1), two_stream_mask(positions, valid, TINY["block_size"]),
                        positions.repeat(1, 2), logits_at=torch.arange(n))  # fmt: skip


def left_padded(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB - 2, (len(lengths), width), generator=gen)
    valid = torch.arange(width)[None, :] >= torch.tensor([width - n for n in lengths])[:, None]
    return ids.masked_fill(~valid, TINY["eos_token_id"]), valid


def test_tiny_config_builds_fast_with_explicit_head_dim() -> None:
    start = time.perf_counter()
    model = tiny_sdar()
    assert time.perf_counter() - start < 0.5
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (4 * 16, 32) != (32, 32)  # heads · head_dim, not the width
    assert attn.k_proj.weight.shape == (2 * 16, 32) and attn.q_norm.weight.shape == (16,)
    assert model.eos_token_ids == (62,)  # the tiny vocabulary has no <|im_end|>


def test_config_rejects_what_the_native_code_cannot_run() -> None:
    with pytest.raises(CheckpointError, match="head_dim 15 must be even"):
        SDARConfig(**{**TINY, "head_dim": 15})
    with pytest.raises(CheckpointError, match="attention_bias=True is not supported"):
        SDARConfig.from_dict({**TINY, "attention_bias": True})


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_equal_qwen3_under_the_same_block_mask(attn: str) -> None:
    model = random_sdar()
    twin = qwen3_twin(model, attn)
    ids, valid = left_padded([11, 6], 11)
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    mask = block_causal_mask(positions, positions, valid, model.block_size)
    # SDPA takes the bool mask (True = attend); the eager path adds it, so it gets 0 / -inf
    given = mask if attn == "sdpa" else torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    with torch.no_grad():
        expected = twin(input_ids=ids, attention_mask=given, position_ids=positions).logits
        ours = model.logits(ids, valid)
        causal = twin(input_ids=ids[:1]).logits
    torch.testing.assert_close(ours, expected, **TOL)
    assert not torch.allclose(ours[:1], causal, atol=1e-3)  # the block mask is not the causal one


def test_block_size_one_is_qwen3_causal() -> None:
    model = random_sdar(1, block_size=1)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(ids), qwen3_twin(model)(input_ids=ids).logits, **TOL)


@pytest.mark.parametrize("lengths", [[12, 12], [12, 7]])
def test_later_blocks_do_not_change_earlier_logits(lengths: list[int]) -> None:
    model = random_sdar(2)
    ids, valid = left_padded(lengths, 12)
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        base = model.logits(ids, valid)
        for block in range(2):
            later = (block_ids(positions, 4) > block) & valid
            changed = torch.where(later, torch.randint_like(ids, VOCAB - 2), ids)
            logits = model.logits(changed, valid)
            kept = (~later & valid)[..., None]
            torch.testing.assert_close(logits * kept, base * kept, atol=1e-6, rtol=0)
            assert not torch.allclose(logits[later], base[later], atol=1e-3)


def test_mask_tables_by_hand() -> None:
    assert block_ids(torch.arange(12), 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # P = 5: block 1 mixes
    n, rows = 6, []  # B = 2: blocks [0 0 1 1 2 2]
    blocks = [0, 0, 1, 1, 2, 2]
    for i in range(2 * n):
        row = []
        for j in range(2 * n):
            gi, gj, noisy_q, noisy_k = blocks[i % n], blocks[j % n], i < n, j < n
            row.append(int(
                (noisy_q and noisy_k and gi == gj)
                or (noisy_q and not noisy_k and gj < gi)
                or (not noisy_q and not noisy_k and gj <= gi)
            ))  # fmt: skip
        rows.append(row)
    expected = torch.tensor(rows, dtype=torch.bool)
    assert expected.sum() == 3 * 4 + (4 + 8) + 2 * (2 + 4 + 6)  # N→N, N→C, C→C
    assert torch.equal(two_stream_mask(torch.arange(n)[None], None, 2)[0, 0], expected)
    causal = block_causal_mask(torch.arange(n)[None], torch.arange(n)[None], None, 2)[0, 0]
    assert torch.equal(causal, expected[n:, n:])


def test_padding_keys_are_hidden_and_padding_queries_see_themselves() -> None:
    positions = torch.tensor([[0, 0, 0, 1, 2]])
    valid = torch.tensor([[False, False, True, True, True]])
    mask = block_causal_mask(positions, positions, valid, 2)[0, 0]
    assert mask[:, :2].tolist() == [[True, False], [False, True]] + [[False, False]] * 3
    assert mask[2:, 2:].tolist() == [[True, True, False], [True, True, False], [True, True, True]]


def test_two_streams_equal_one_stream() -> None:
    model = random_sdar(3)
    ids, valid = left_padded([10, 7], 10)
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    noisy = ids.masked_fill(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.5, TINY["mask_token_id"])
    noisy = torch.where(valid, noisy, ids)
    with torch.no_grad():
        both = model.logits(torch.cat([noisy, ids], 1), two_stream_mask(positions, valid, 4), positions.repeat(1, 2))
        single = model.logits(ids, valid)
        torch.testing.assert_close(both[:, 10:], single, **TOL)  # (a) the clean half is block-causal x_0
        noisy_half = two_stream_logits(model, noisy, ids, valid)
        torch.testing.assert_close(noisy_half, both[:, :10], **TOL)
        g = block_ids(positions, 4)
        for block in range(3):  # (b) block b of x_t after the clean blocks before it
            mixed = torch.where(g < block, ids, noisy)
            here = (g == block) & valid
            torch.testing.assert_close(noisy_half[here], model.logits(mixed, valid)[here], **TOL)
        same = two_stream_logits(model, ids, ids, valid)  # (c) x_t = x_0
        torch.testing.assert_close(same, single, **TOL)


@pytest.mark.parametrize("prompts", [[5, 9], [8], [3]])  # P ≢ 0 and P ≡ 0 (mod B); P < B: no prefill
def test_block_cache_equals_uncached_forward(prompts: list[int]) -> None:
    """Prefill ⌊P/B⌋·B columns, then per block: a step over the masked block, a step over the
    committed block, append; cached logits and keys/values equal a full block-causal forward."""
    model, block = random_sdar(4), 4
    width = max(prompts)
    canvas, valid = left_padded([p + 11 for p in prompts], width + 11)  # left pads ≡ 0 (mod B) in each row
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    cache, start = model.new_block_cache(), width // block * block
    cache.append_block(canvas[:, :start], positions[:, :start], valid[:, :start])
    with torch.no_grad():
        while start < canvas.shape[1]:
            end = start + block
            chunk = slice(start, end)
            masked = canvas.clone()
            masked[:, chunk] = torch.where(positions[:, chunk] >= torch.tensor(prompts)[:, None], TINY["mask_token_id"], canvas[:, chunk])
            for ids in (masked, canvas):
                cached = cache.logits(ids[:, chunk], positions[:, chunk], valid[:, chunk])
                full = model.logits(ids[:, :end], valid[:, :end])[:, chunk]
                torch.testing.assert_close(cached, full, **TOL)
            cache.append_block(canvas[:, chunk], positions[:, chunk], valid[:, chunk])
            start = end
        reference = KVCache(len(model.blocks))
        model.logits(canvas, valid, cache=reference)
    assert cache.length == canvas.shape[1]
    for layer in range(len(model.blocks)):
        torch.testing.assert_close(cache.keys(layer), reference.keys[layer], **TOL)
        torch.testing.assert_close(cache.values(layer), reference.values[layer], **TOL)
    rows = torch.tensor([len(prompts) - 1])
    kept = cache.select(rows)
    assert kept.length == cache.length and torch.equal(kept.keys(0), cache.keys(0)[rows])


def test_lora_targets_attach_and_train() -> None:
    policy = apply_lora(random_sdar(5), r=4, alpha=8)
    wrapped = sorted(n.removesuffix(".lora_A") for n, _ in policy.named_modules() if n.endswith(".lora_A"))
    assert len(wrapped) == 7 * TINY["num_hidden_layers"]
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == set(SDAR.lora_targets)
    trainable = [p for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    ids = torch.randint(0, VOCAB - 2, (2, 8))
    noisy = ids.clone()
    noisy[:, 1::2] = TINY["mask_token_id"]
    before = two_stream_logits(policy, noisy, ids).detach()
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(2):  # lora_B starts at zero: the first step moves B, the second the logits
        loss = torch.nn.functional.cross_entropy(two_stream_logits(policy, noisy, ids)[:, 1::2].flatten(0, 1), ids[:, 1::2].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = two_stream_logits(policy, noisy, ids).detach()
    assert not torch.allclose(before, after, atol=1e-4)
    with policy.disable_adapter():
        torch.testing.assert_close(two_stream_logits(policy, noisy, ids), before, **TOL)
    cache = policy.new_block_cache()  # the cache runs the adapted layers
    cache.append_block(ids[:, :4], torch.arange(4).expand(2, 4))
    with torch.no_grad():
        torch.testing.assert_close(cache.logits(ids[:, 4:], torch.arange(4, 8).expand(2, 4)), policy.logits(ids)[:, 4:], **TOL)


def test_export_merges_adapter_and_round_trips(tmp_path: Path) -> None:
    base = random_sdar(6, block_size=2)
    base.save_pretrained(tmp_path / "base")
    policy = apply_lora(random_sdar(6, block_size=2), r=4, alpha=8)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    policy.save_pretrained(tmp_path / "adapter")
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        expected = policy.logits(ids)
    code = main(["export", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged")])  # fmt: skip
    assert code == 0
    merged = load_model(tmp_path / "merged")
    assert type(merged) is SDAR and merged.block_size == 2 and merged.config.head_dim == 16
    with torch.no_grad():
        torch.testing.assert_close(merged.logits(ids), expected, atol=1e-4, rtol=1e-4)  # logits ~10: merged sums round differently
        assert not torch.allclose(base.logits(ids), expected, atol=1e-3)
