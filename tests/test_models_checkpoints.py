"""LLaDA and Dream checkpoint directories with the official names, checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

from unmask.models import CheckpointError, Dream, LLaDA, load_model

D, HEADS, HIDDEN, VOCAB = 16, 4, 24, 40
LLADA_CONFIG = {
    "model_type": "llada", "architectures": ["LLaDAModelLM"], "block_type": "llama",
    "activation_type": "silu", "layer_norm_type": "rms", "rope": True, "alibi": False,
    "include_bias": False, "d_model": D, "n_heads": HEADS, "n_kv_heads": HEADS,
    "n_layers": 1, "mlp_hidden_size": HIDDEN, "vocab_size": VOCAB, "embedding_size": VOCAB,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "mask_token_id": 39, "eos_token_id": 38,
    "pad_token_id": 38, "max_sequence_length": 64, "weight_tying": False, "use_cache": False,
}  # fmt: skip
DREAM_CONFIG = {
    "model_type": "Dream", "architectures": ["DreamModel"], "hidden_act": "silu",
    "hidden_size": D, "intermediate_size": HIDDEN, "num_hidden_layers": 1,
    "num_attention_heads": HEADS, "num_key_value_heads": 2, "vocab_size": VOCAB,
    "rms_norm_eps": 1e-6, "rope_theta": 1e6, "rope_scaling": None, "tie_word_embeddings": False,
    "mask_token_id": 39, "pad_token_id": 38, "bos_token_id": 38, "eos_token_id": 38,
}  # fmt: skip


def llada_weights(gen: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.3

    b = "model.transformer.blocks.0."
    return {
        "model.transformer.wte.weight": r(VOCAB, D),
        b + "attn_norm.weight": 1 + r(D), b + "ff_norm.weight": 1 + r(D),
        b + "q_proj.weight": r(D, D), b + "k_proj.weight": r(D, D),
        b + "v_proj.weight": r(D, D), b + "attn_out.weight": r(D, D),
        b + "ff_proj.weight": r(HIDDEN, D), b + "up_proj.weight": r(HIDDEN, D),
        b + "ff_out.weight": r(D, HIDDEN),
        "model.transformer.ln_f.weight": 1 + r(D),
        "model.transformer.ff_out.weight": r(VOCAB, D),
    }  # fmt: skip


def dream_weights(gen: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.3

    kv = 2 * D // HEADS
    a, m = "model.layers.0.self_attn.", "model.layers.0.mlp."
    return {
        "model.embed_tokens.weight": r(VOCAB, D),
        "model.layers.0.input_layernorm.weight": 1 + r(D),
        "model.layers.0.post_attention_layernorm.weight": 1 + r(D),
        a + "q_proj.weight": r(D, D), a + "q_proj.bias": r(D),
        a + "k_proj.weight": r(kv, D), a + "k_proj.bias": r(kv),
        a + "v_proj.weight": r(kv, D), a + "v_proj.bias": r(kv),
        a + "o_proj.weight": r(D, D),
        m + "gate_proj.weight": r(HIDDEN, D), m + "up_proj.weight": r(HIDDEN, D),
        m + "down_proj.weight": r(D, HIDDEN),
        "model.norm.weight": 1 + r(D), "lm_head.weight": r(VOCAB, D),
    }  # fmt: skip


def write_checkpoint(
    path: Path, config: dict, weights: dict[str, torch.Tensor], shards: int = 1
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(weights, str(path / "model.safetensors"))
        return path
    names = sorted(weights)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({n: weights[n] for n in part}, str(path / file))
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


# -- an independent reference forward: complex rotary, explicit softmax -----------
def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [H, L, hd]: pair j with j + hd/2 as a complex number, turn by pos·θ^(-2j/hd)."""
    hd = x.shape[-1]
    z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2 :].double())
    freqs = theta ** (-torch.arange(hd // 2, dtype=torch.float64) * 2 / hd)
    turned = z * torch.polar(torch.ones(1, dtype=torch.float64), torch.arange(x.shape[1])[:, None] * freqs)
    return torch.cat([turned.real, turned.imag], -1).float()


def reference_layer(x, w, names, n_kv, eps, theta, bias=False):
    """One pre-norm block for one sequence x [L, D]; ``names`` maps roles to weight keys."""
    length, hd = x.shape[0], D // HEADS
    h = rms(x, w[names["attn_norm"]], eps)

    def proj(role: str, heads: int) -> torch.Tensor:
        y = h @ w[names[role] + ".weight"].T + (w[names[role] + ".bias"] if bias else 0)
        return y.view(length, heads, hd).transpose(0, 1)

    q, k, v = rotate(proj("q", HEADS), theta), rotate(proj("k", n_kv), theta), proj("v", n_kv)
    group = HEADS // n_kv
    k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)
    attn = (scores.exp() / scores.exp().sum(-1, keepdim=True)) @ v
    x = x + attn.transpose(0, 1).reshape(length, D) @ w[names["o"] + ".weight"].T
    h = rms(x, w[names["mlp_norm"]], eps)
    gate = h @ w[names["gate"]].T
    return x + (gate * torch.sigmoid(gate) * (h @ w[names["up"]].T)) @ w[names["down"]].T


def test_llada_official_checkpoint_matches_hand_forward(tmp_path) -> None:
    w = llada_weights(torch.Generator().manual_seed(0))
    model = load_model(write_checkpoint(tmp_path, LLADA_CONFIG, w))
    assert isinstance(model, LLaDA) and model.mask_token_id == 39
    ids = torch.tensor([[1, 5, 9, 39, 39, 2]])
    b = "model.transformer.blocks.0."
    names = {
        "attn_norm": b + "attn_norm.weight", "mlp_norm": b + "ff_norm.weight",
        "q": b + "q_proj", "k": b + "k_proj", "v": b + "v_proj", "o": b + "attn_out",
        "gate": b + "ff_proj.weight", "up": b + "up_proj.weight", "down": b + "ff_out.weight",
    }  # fmt: skip
    x = w["model.transformer.wte.weight"][ids[0]]
    x = reference_layer(x, w, names, HEADS, 1e-5, 500000.0)
    expected = rms(x, w["model.transformer.ln_f.weight"], 1e-5) @ w["model.transformer.ff_out.weight"].T
    torch.testing.assert_close(model.logits(ids)[0], expected, atol=1e-4, rtol=1e-4)


def test_dream_checkpoint_matches_hand_forward_with_shift(tmp_path) -> None:
    w = dream_weights(torch.Generator().manual_seed(1))
    model = load_model(write_checkpoint(tmp_path, DREAM_CONFIG, w))
    assert isinstance(model, Dream) and model.mask_token_id == 39
    ids = torch.tensor([[3, 7, 11, 39, 39, 38]])
    a, m = "model.layers.0.self_attn.", "model.layers.0.mlp."
    names = {
        "attn_norm": "model.layers.0.input_layernorm.weight",
        "mlp_norm": "model.layers.0.post_attention_layernorm.weight",
        "q": a + "q_proj", "k": a + "k_proj", "v": a + "v_proj", "o": a + "o_proj",
        "gate": m + "gate_proj.weight", "up": m + "up_proj.weight", "down": m + "down_proj.weight",
    }  # fmt: skip
    x = reference_layer(w["model.embed_tokens.weight"][ids[0]], w, names, 2, 1e-6, 1e6, bias=True)
    raw = rms(x, w["model.norm.weight"], 1e-6) @ w["lm_head.weight"].T
    shifted = torch.cat([raw[:1], raw[:-1]])  # logits at i predict token i: raw[i - 1]
    out = model.logits(ids)[0]
    torch.testing.assert_close(out, shifted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, raw, atol=1e-2)


@pytest.mark.parametrize("config,make", [(LLADA_CONFIG, llada_weights), (DREAM_CONFIG, dream_weights)])
def test_left_padding_keeps_real_position_logits(tmp_path, config, make) -> None:
    model = load_model(write_checkpoint(tmp_path, config, make(torch.Generator().manual_seed(2))))
    prompt = torch.tensor([[4, 8, 15, 16, 23, 39, 39]])
    padded = torch.cat([torch.full((1, 2), 38), prompt], 1)
    mask = torch.ones_like(padded, dtype=torch.bool)
    mask[:, :2] = False
    torch.testing.assert_close(
        model.logits(padded, attention_mask=mask)[:, 2:], model.logits(prompt), atol=1e-5, rtol=1e-5
    )


def test_sharded_checkpoint_and_save_round_trip(tmp_path) -> None:
    w = llada_weights(torch.Generator().manual_seed(3))
    sharded = load_model(write_checkpoint(tmp_path / "a", LLADA_CONFIG, w, shards=3))
    single = load_model(write_checkpoint(tmp_path / "b", LLADA_CONFIG, w))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(sharded.logits(ids), single.logits(ids))
    sharded.save_pretrained(tmp_path / "c")
    again = load_model(tmp_path / "c")
    assert torch.equal(again.logits(ids), single.logits(ids))
    assert json.loads((tmp_path / "c" / "config.json").read_text())["block_type"] == "llama"


def test_dream_save_round_trip(tmp_path) -> None:
    model = load_model(write_checkpoint(tmp_path / "a", DREAM_CONFIG, dream_weights(torch.Generator())))
    model.save_pretrained(tmp_path / "b")
    again = load_model(tmp_path / "b")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(again.logits(ids), model.logits(ids))


# -- bad input: one clear error naming the file and tensor ---------------------------
def test_missing_config(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_model_type(tmp_path) -> None:
    write_checkpoint(tmp_path, {**LLADA_CONFIG, "model_type": "gpt2"}, {})
    with pytest.raises(CheckpointError, match=r"config\.json: unknown model_type 'gpt2'"):
        load_model(tmp_path)


def test_unsupported_setting(tmp_path) -> None:
    write_checkpoint(tmp_path, {**LLADA_CONFIG, "include_bias": True}, {})
    with pytest.raises(CheckpointError, match="include_bias=True"):
        load_model(tmp_path)


def test_missing_tensor(tmp_path) -> None:
    w = llada_weights(torch.Generator())
    del w["model.transformer.blocks.0.up_proj.weight"]
    write_checkpoint(tmp_path, LLADA_CONFIG, w)
    with pytest.raises(CheckpointError, match=r"missing tensor model\.transformer\.blocks\.0\.up_proj\.weight"):
        load_model(tmp_path)


def test_unexpected_tensor(tmp_path) -> None:
    w = llada_weights(torch.Generator())
    w["model.transformer.blocks.0.q_proj.bias"] = torch.zeros(D)
    write_checkpoint(tmp_path, LLADA_CONFIG, w)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unexpected tensor model\.transformer\.blocks\.0\.q_proj\.bias"):
        load_model(tmp_path)


def test_shape_mismatch(tmp_path) -> None:
    w = dream_weights(torch.Generator())
    w["lm_head.weight"] = torch.zeros(VOCAB + 1, D)
    write_checkpoint(tmp_path, DREAM_CONFIG, w, shards=2)
    with pytest.raises(CheckpointError, match=r"model-0000\d-of-00002\.safetensors: tensor lm_head\.weight has shape \[41, 16\], config\.json implies \[40, 16\]"):
        load_model(tmp_path)


def test_bad_path_dtype_and_family(tmp_path, monkeypatch) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nope")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="hub download failed"):
        load_model("some-org/some-model")
    write_checkpoint(tmp_path / "ok", LLADA_CONFIG, llada_weights(torch.Generator()))
    with pytest.raises(CheckpointError, match="unknown dtype 'half-ish'"):
        load_model(tmp_path / "ok", dtype="half-ish")
    with pytest.raises(CheckpointError, match="unknown model family 'gpt'"):
        load_model(tmp_path / "ok", family="gpt")


def test_absent_shard_is_named(tmp_path) -> None:
    write_checkpoint(tmp_path, LLADA_CONFIG, llada_weights(torch.Generator()), shards=2)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors, which does not exist"):
        load_model(tmp_path)
