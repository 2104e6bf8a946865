"""The tiny family: tokenizer, construction, save/load, padding."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.models import CheckpointError, TinyConfig, load_model, tiny

PROMPT = (
    "Using the numbers [3, 5, 7], create an equation that equals 22. "
    "Put the equation in <answer> </answer> tags."
)
SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64}


def test_tokenizer_round_trips_task_text_with_single_token_tags() -> None:
    tok = tiny(SMALL).tokenizer
    text = PROMPT + "\n<reasoning> 3*5 = 15; 15+7 = 22 </reasoning> <answer>(3*5)+7</answer>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(ids)
    for tag in ("<answer>", "</answer>", "<reasoning>", "</reasoning>", "Using the numbers "):
        assert tag in pieces
    assert len(ids) < len(text) // 2  # phrases are single tokens


def test_unknown_characters_map_to_unk() -> None:
    tok = tiny(SMALL).tokenizer
    ids = tok("x ≤ 5€")["input_ids"]
    assert ids.count(tok.unk_token_id) == 2
    assert tok.decode(ids) == "x <|unk|> 5<|unk|>"


def test_special_ids_are_distinct_and_in_config() -> None:
    model = tiny(SMALL)
    tok = model.tokenizer
    ids = {tok.mask_token_id, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, tok.unk_token_id}
    assert len(ids) == 5
    assert model.mask_token_id == tok.mask_token_id
    assert model.eos_token_ids == (tok.eos_token_id,)
    assert model.pad_token_id == tok.pad_token_id
    assert model.config.vocab_size == len(tok)


def test_default_size_and_llada_module_names() -> None:
    model = tiny()
    n_params = sum(p.numel() for p in model.parameters())
    assert 300_000 < n_params < 1_500_000
    names = dict(model.named_modules())
    for name in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"):
        assert f"model.transformer.blocks.3.{name}" in names
    assert "model.transformer.ff_out" in names  # untied LM head
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())


def test_seed_determines_weights() -> None:
    a, b, c = tiny(SMALL, seed=1), tiny(SMALL, seed=1), tiny(SMALL, seed=2)
    wa, wb, wc = (m.model.transformer.wte.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_save_load_round_trip_gives_identical_logits(tmp_path) -> None:
    model = tiny(SMALL, seed=3)
    ids = torch.tensor([model.tokenizer(PROMPT)["input_ids"]])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "unmask-tiny"
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model)
    assert torch.equal(loaded.logits(ids), model.logits(ids))
    assert loaded.tokenizer.decode(ids[0]) == PROMPT
    assert loaded.mask_token_id == model.mask_token_id


def test_bf16_load(tmp_path) -> None:
    model = tiny(SMALL)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, dtype="bf16")
    ids = torch.tensor([[5, 6, 7, 8]])
    out = loaded.logits(ids)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), model.logits(ids), atol=0.05, rtol=0.05)


def test_left_padding_keeps_real_position_logits() -> None:
    model = tiny(SMALL, seed=4)
    prompt = torch.tensor(model.tokenizer(PROMPT)["input_ids"])
    pad = model.pad_token_id
    padded = torch.cat([torch.full((3,), pad), prompt])[None]
    mask = torch.cat([torch.zeros(3), torch.ones(len(prompt))]).bool()[None]
    alone = model.logits(prompt[None])
    together = model.logits(padded, attention_mask=mask)
    torch.testing.assert_close(together[:, 3:], alone, atol=1e-5, rtol=1e-5)
    unmasked = model.logits(padded)  # without the mask the padding leaks in
    assert not torch.allclose(unmasked[:, 3:], alone, atol=1e-3)


def test_bad_config_keys_are_named() -> None:
    with pytest.raises(CheckpointError, match="d_modl"):
        tiny({"d_modl": 64})
    with pytest.raises(CheckpointError, match="heads"):
        tiny({"d_model": 30, "n_heads": 4})
    assert tiny(TinyConfig(d_model=16, n_heads=2, n_layers=1, mlp_hidden_size=16)).config.d_model == 16
