"""LoRA on the families' own module names, the reference policy, and export."""

from __future__ import annotations

import pytest
import torch

from unmask.models import CheckpointError, Dream, DreamConfig, load_model, tiny
from unmask.models.export import merge_and_save
from unmask.models.lora import apply_lora

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64}
IDS = torch.tensor([[5, 9, 12, 4, 4, 7], [8, 8, 3, 4, 2, 2]])


def wrapped(model) -> list[str]:
    return sorted(n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A"))


def randomize_adapter(model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # A too: peft draws it from the global RNG
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_llada_shaped_targets_are_all_seven_per_block_without_head() -> None:
    model = apply_lora(tiny(SMALL), r=4, alpha=8)
    names = wrapped(model)
    assert len(names) == 7 * 2
    suffixes = {n.rsplit(".", 1)[-1] for n in names}
    assert suffixes == {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}
    assert all(".blocks." in n for n in names)  # LM head model.transformer.ff_out left alone
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lm_head_only_when_asked() -> None:
    names = wrapped(apply_lora(tiny(SMALL), r=4, lm_head=True))
    assert len(names) == 15
    assert "base_model.model.model.transformer.ff_out" in names


def test_dream_targets() -> None:
    config = DreamConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=40, mask_token_id=39, pad_token_id=38, eos_token_id=38,
    )  # fmt: skip
    names = wrapped(apply_lora(Dream(config), r=2))
    assert len(names) == 7 * 2
    assert {n.rsplit(".", 1)[-1] for n in names} == set(Dream.lora_targets)
    assert not any(n.endswith("lm_head") for n in names)


def test_llama_names_on_llada_are_rejected() -> None:
    with pytest.raises(CheckpointError, match="o_proj"):
        apply_lora(tiny(SMALL), target_modules=["q_proj", "o_proj", "down_proj"])


def test_disabled_adapter_restores_base_logits_exactly() -> None:
    model = tiny(SMALL, seed=1)
    base = model.logits(IDS)
    policy = apply_lora(model, r=4, alpha=8)
    randomize_adapter(policy)
    assert not torch.allclose(policy.logits(IDS), base, atol=1e-4)
    with policy.disable_adapter():
        assert torch.equal(policy.logits(IDS), base)


def test_export_then_load_matches_base_plus_adapter(tmp_path) -> None:
    policy = apply_lora(tiny(SMALL, seed=2), r=4, alpha=8)
    randomize_adapter(policy, seed=3)
    adapted = policy.logits(IDS)
    merge_and_save(policy, tmp_path)
    assert torch.equal(policy.logits(IDS), adapted)  # the live model is untouched
    exported = load_model(tmp_path)
    assert not any("lora" in n for n, _ in exported.named_parameters())
    torch.testing.assert_close(exported.logits(IDS), adapted, atol=1e-5, rtol=1e-5)
    assert exported.tokenizer.decode([5, 6]) == policy.tokenizer.decode([5, 6])


def test_gradient_checkpointing_gives_same_gradients() -> None:
    def grads(checkpointing: bool) -> list[torch.Tensor]:
        policy = apply_lora(tiny(SMALL, seed=4), r=4, alpha=8)
        randomize_adapter(policy)
        if checkpointing:
            policy.gradient_checkpointing_enable()
        policy.logits(IDS).logsumexp(-1).sum().backward()
        return [p.grad for p in policy.parameters() if p.requires_grad]

    plain, recomputed = grads(False), grads(True)
    assert all(g is not None and g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, recomputed, strict=True):
        torch.testing.assert_close(a, b)
