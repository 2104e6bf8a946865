"""The real SDAR files (../shared/models/sdar-*): weight names and exact sizes on the meta
device, the real tokenizer and chat template without remote code, the refused MoE config, and a
cut-down real checkpoint (docs/models.md, SDAR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from real_files import SDAR as SDAR_4B
from real_files import cut_down_checkpoint, real_config
from safetensors import safe_open
from test_models_real import real_prompts

from unmask.models import CheckpointError, load_model
from unmask.models.loading import load_tokenizer, meta_model
from unmask.models.lora import apply_lora
from unmask.models.sdar import SDAR

#: exact parameter counts (4B and 8B: half the index's bf16 ``total_size``); derivation in docs/models.md
PARAMETERS = {"sdar-1.7b-chat": 2_031_739_904, "sdar-4b-chat": 4_411_424_256, "sdar-8b-chat": 8_190_735_360}
#: non-embedding parameters as the Qwen3 model cards publish them (SDAR keeps the Qwen3 trunk)
QWEN3_NON_EMBEDDING_B = {"sdar-1.7b-chat": 1.4, "sdar-4b-chat": 3.6, "sdar-8b-chat": 6.95}


def official_sdar_tensors(c: dict) -> dict[str, tuple[int, ...]]:
    """Qwen3's safetensors layout written out from the config: head_dim explicit, q/k norms per head."""
    d, h, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    names = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for n in range(c["num_hidden_layers"]):
        b = f"model.layers.{n}."
        names |= {b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,)}
        names |= {b + "self_attn.q_proj.weight": (q, d), b + "self_attn.k_proj.weight": (kv, d),
                  b + "self_attn.v_proj.weight": (kv, d), b + "self_attn.o_proj.weight": (d, q),
                  b + "self_attn.q_norm.weight": (hd,), b + "self_attn.k_norm.weight": (hd,)}  # fmt: skip
        names |= {b + "mlp.gate_proj.weight": (h, d), b + "mlp.up_proj.weight": (h, d), b + "mlp.down_proj.weight": (d, h)}
    return names


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_real_config_on_meta_device(shared_models: Path, name: str) -> None:
    config = real_config(shared_models, name)
    model = meta_model(shared_models / name)
    assert type(model) is SDAR
    assert (model.block_size, model.mask_token_id, model.head_dim) == (4, 151669, 128)
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    assert shapes == official_sdar_tensors(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMETERS[name]
    embedding = 2 * config["vocab_size"] * config["hidden_size"]
    assert round((count - embedding) / 1e9, 2 if name == "sdar-8b-chat" else 1) == QWEN3_NON_EMBEDDING_B[name]
    index = shared_models / name / "model.safetensors.index.json"
    if index.is_file():  # the 1.7B is published as one file, without an index
        published = json.loads(index.read_text())
        assert set(published["weight_map"]) == set(shapes)
        assert 2 * count == published["metadata"]["total_size"]  # bf16: two bytes a parameter


def test_moe_config_is_refused_with_the_follow_up(shared_models: Path) -> None:
    folder = shared_models / "sdar-30b-a3b-chat"
    assert real_config(shared_models, "sdar-30b-a3b-chat")["model_type"] == "sdar_moe"
    for load in (meta_model, load_model):
        with pytest.raises(CheckpointError, match=r"sdar_moe.*not supported yet.*follow-up of issue 29"):
            load(folder)
    with pytest.raises(CheckpointError, match="not supported yet"):
        meta_model(folder, family="sdar")  # naming the dense family does not build a wrong model


# -- the real tokenizer and chat template, never remote code ----------------------------
@pytest.fixture
def sdar_tokenizer(shared_models: Path) -> object:
    return load_tokenizer(shared_models / SDAR_4B, SDAR)


def test_tokenizer_config_names_remote_code(shared_models: Path) -> None:
    """The premise: AutoTokenizer would be pointed at ``tokenization_qwen2.py`` (remote code)."""
    config = json.loads((shared_models / SDAR_4B / "tokenizer_config.json").read_text())
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_qwen2.Qwen2Tokenizer"
    assert not (shared_models / SDAR_4B / "tokenizer.json").exists()


def test_tokenizer_ids_from_the_real_files(sdar_tokenizer, shared_models: Path) -> None:
    tok = sdar_tokenizer
    model = meta_model(shared_models / SDAR_4B)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    # the mask is <|MASK|> in tokenizer_config.json, <MASK> in added_tokens.json: the id decides
    added = json.loads((shared_models / SDAR_4B / "added_tokens.json").read_text())
    assert tok.mask_token_id == added["<MASK>"] == model.mask_token_id == 151669
    assert tok.convert_ids_to_tokens(151669) == "<|MASK|>"
    assert tok("<|MASK|><|MASK|>x", add_special_tokens=False)["input_ids"] == [151669, 151669, 87]
    assert (tok.eos_token_id, tok.pad_token_id, model.pad_token_id) == (151643, 151643, 151643)
    assert tok("You are a helpful assistant.", add_special_tokens=False)["input_ids"] == [
        2610, 525, 264, 10950, 17847, 13,
    ]  # fmt: skip
    stops = json.loads((shared_models / SDAR_4B / "generation_config.json").read_text())["eos_token_id"]
    assert model.eos_token_ids == (151643, 151645) and set(model.eos_token_ids) == set(stops)


def test_format_prompt_is_the_real_chat_template(sdar_tokenizer, shared_models: Path, shared_data: Path) -> None:
    model = meta_model(shared_models / SDAR_4B)
    model.tokenizer = sdar_tokenizer
    assert sdar_tokenizer.chat_template == (shared_models / SDAR_4B / "chat_template.jinja").read_text()
    question = real_prompts(shared_data, limit=1)[0]
    text = model.format_prompt(question)
    assert text == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"  # Qwen3: no default system turn
    ids = sdar_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:3] == [151644, 872, 198] and ids[-3:] == [151644, 77091, 198]  # <|im_start|>user\n … assistant\n


def test_real_prompts_round_trip(sdar_tokenizer, shared_data: Path) -> None:
    for text in real_prompts(shared_data, limit=200):
        ids = sdar_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert max(ids) < 151643, text  # plain text never turns into special tokens
        assert sdar_tokenizer.decode(ids) == text


# -- a cut-down real checkpoint ----------------------------------------------------------
def test_cut_down_checkpoint_loads_and_saves(shared_models: Path, tmp_path: Path) -> None:
    folder = cut_down_checkpoint(shared_models, SDAR_4B, tmp_path / "cut")
    model = load_model(folder)
    assert type(model) is SDAR and model.tokenizer.mask_token_id == model.mask_token_id == 151669
    state = model.state_dict()
    shards = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    with safe_open(folder / shards[-1], framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            assert torch.equal(state[key], f.get_tensor(key).float()), key
    again = load_model(model.save_pretrained(tmp_path / "saved"))
    prompt = model.format_prompt("What is 7 * 6?")
    assert again.format_prompt("What is 7 * 6?") == prompt
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(again.logits(ids), model.logits(ids))
    written, read = again.config.to_dict(), model.config.to_dict()
    assert (written.pop("torch_dtype"), read.pop("torch_dtype")) == ("float32", "bfloat16")  # saved as loaded
    assert written == read


def test_lora_r128_adapts_all_seven_layers_of_the_real_4b(shared_models: Path) -> None:
    c = real_config(shared_models, SDAR_4B)
    policy = apply_lora(meta_model(shared_models / SDAR_4B), r=128, alpha=256)
    d, q, kv, h = c["hidden_size"], c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"], c["intermediate_size"]
    per_layer = 128 * (2 * (d + q) + 2 * (d + kv) + 3 * (d + h))  # q, o; k, v; gate, up, down
    trainable, _ = policy.get_nb_trainable_parameters()
    assert trainable == c["num_hidden_layers"] * per_layer == 264_241_152
