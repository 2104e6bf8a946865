"""DiffusionGemma on transformers' modules: tiny and real configs, the soft-embedding SC decoder
entry against the HF forward, LoRA that keeps encoder and decoder tied, the uniform-noise
process (docs/diffusion-gemma.md)."""

from __future__ import annotations

import time

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from unmask.diffusion.uniform import UniformNoise, uniform_tokens
from unmask.errors import UserError
from unmask.models.diffusion_gemma import (
    DECODER_LAYERS,
    ENCODER_LAYERS,
    REAL_TEXT,
    DiffusionGemma,
    diffusion_gemma_config,
    tiny_diffusion_gemma,
)
from unmask.models.export import merge_adapter, merge_and_save
from unmask.models.loading import load_model, meta_model
from unmask.models.lora import apply_lora, load_adapter

PROMPT = torch.tensor([[2, 5, 9, 11, 40], [2, 7, 8, 30, 31]])
CANVAS = PROMPT.repeat(1, 2)[:, :8]
#: the spec's scoping pattern for peft on the HF model (keeps the vision tower out)
HF_SCOPE = r"model\.(encoder\.language_model|decoder)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def test_tiny_builds_fast_with_one_tied_text_stack() -> None:
    tiny_diffusion_gemma(0)  # first call pays transformers' lazy imports
    start = time.perf_counter()
    model = tiny_diffusion_gemma(0)
    assert time.perf_counter() - start < 0.5
    encoder = dict(model.model.encoder.language_model.named_parameters())
    decoder = dict(model.model.decoder.named_parameters())
    assert len(encoder) == 43
    assert all(param is decoder[name] for name, param in encoder.items())
    assert sorted(set(decoder) - set(encoder)) == [f"self_conditioning.{p}.weight" for p in ("down_proj", "gate_proj", "pre_norm", "up_proj")]
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    assert model.state_dict().keys() == model.hf.state_dict().keys()  # the checkpoint's names
    same = tiny_diffusion_gemma(0).state_dict()
    assert all(torch.equal(t, same[k]) for k, t in model.state_dict().items())
    assert not torch.equal(tiny_diffusion_gemma(1).lm_head.weight, model.lm_head.weight)


def test_real_config_on_meta_device_has_the_cards_parameter_counts() -> None:
    with torch.device("meta"):
        model = DiffusionGemma(diffusion_gemma_config(REAL_TEXT))
    t = REAL_TEXT
    h, n, v, e, k = t["hidden_size"], t["num_hidden_layers"], t["vocab_size"], t["num_experts"], t["top_k_experts"]
    heads, hd, ghd = t["num_attention_heads"], t["head_dim"], t["global_head_dim"]
    full = n // 6  # 5 sliding : 1 full; full layers have no v_proj (V = k_proj output)
    attention = (n - full) * (2 * heads * hd * h + 2 * t["num_key_value_heads"] * hd * h) + full * (
        2 * heads * ghd * h + t["num_global_key_value_heads"] * ghd * h
    )
    head_norms = (n - full) * 2 * hd + full * 2 * ghd
    dense = n * 3 * h * t["intermediate_size"]
    experts = n * e * 3 * h * t["moe_intermediate_size"]
    router = n * (h * e + h + e)
    norms = n * 7 * h + h
    stack = v * h + attention + head_norms + dense + experts + router + norms
    sc = 3 * h * t["intermediate_size"] + h
    counted = dict(model.named_parameters())
    text = sum(p.numel() for name, p in counted.items() if ".vision_tower." not in name and "embed_vision" not in name)
    assert text == stack + sc
    assert round(stack / 1e9, 1) == 25.2  # model card: 25.2 B total (vision tower aside)
    assert round((stack - experts + experts * k // e) / 1e9, 1) == 3.8  # and 3.8 B active
    assert next(iter(counted.values())).device.type == "meta"


def test_decode_takes_soft_embeddings_and_equals_the_hf_forward() -> None:
    model = tiny_diffusion_gemma(0)
    gen = torch.Generator().manual_seed(0)
    sc_logits = torch.randn(2, 8, 128, generator=gen) * 3
    on = torch.tensor([False, True])
    cache, hidden = model.encode(PROMPT)
    keys = [layer.keys.clone() for layer in cache.layers]
    ours = model.decode(CANVAS, cache, model.soft_embeddings(sc_logits), sc_mask=on)
    assert [torch.equal(a, layer.keys) for a, layer in zip(keys, cache.layers, strict=True)] == [True, True]
    assert cache.get_seq_length() == 5 and hidden.shape == (2, 5, 32)
    reference = model.hf(input_ids=PROMPT, decoder_input_ids=CANVAS, self_conditioning_logits=sc_logits,
                         self_conditioning_mask=on).logits  # fmt: skip
    assert ours.dtype == torch.float32 and ours.shape == (2, 8, 128)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    plain = model.hf(input_ids=PROMPT, decoder_input_ids=CANVAS).logits
    torch.testing.assert_close(model.decode(CANVAS, model.encode(PROMPT)[0]), plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[0], plain[0], atol=1e-6, rtol=0)  # SC masked off in row 0
    assert (ours[1] - plain[1]).abs().max() > 1e-3  # and used in row 1


def one_step(model: torch.nn.Module, encode, decode) -> None:
    """One SGD step on a loss through encoder (cache) and decoder, lr large enough to move every adapter."""
    params = [p for p in model.parameters() if p.requires_grad]
    cache = encode(PROMPT)
    logits = decode(torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1)), cache)
    (logits.logsumexp(-1) - logits[..., 3]).mean().backward()
    with torch.no_grad():
        for param in params:
            if param.grad is not None:  # the encoder's last layer reaches the loss only through its keys
                param -= 0.5 * param.grad


def trained_policy() -> tuple[DiffusionGemma, torch.nn.Module]:
    """A tiny model with LoRA after one step (every layer adapter non-zero)."""
    model = tiny_diffusion_gemma(0)
    policy = apply_lora(model, r=4, alpha=8)
    one_step(policy, lambda p: model.encode(p)[0], model.decode)
    return model, policy


def effective(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Base weight + LoRA delta of every adapted module under ``prefix`` (names relative to it)."""
    out = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name.startswith(prefix) and isinstance(module, BaseTunerLayer):
            attr = getattr(module, "parameter_name", "weight")
            base = getattr(module.get_base_layer(), attr)
            out[f"{name.removeprefix(prefix)}:{attr}"] = (base + module.get_delta_weight("default")).detach()
    return out


def test_lora_keeps_encoder_and_decoder_tied_after_a_step() -> None:
    model, policy = trained_policy()
    enc, dec = effective(model, ENCODER_LAYERS), effective(model, DECODER_LAYERS)
    # 2 layers × (q, k, o, gate, up, down) + v on the sliding layer + 2 expert tensors per layer
    assert len(dec) == 17 and enc.keys() == dec.keys()
    assert all(p.abs().sum() > 0 for name, p in policy.named_parameters() if "layers" in name and "lora_B" in name)
    assert all(torch.equal(enc[key], dec[key]) for key in dec)
    assert not any("vision" in name for name, _ in policy.named_parameters() if "lora_" in name)

    # the premise: peft on the HF model adapts the two copies separately, so one step unties them
    hf = tiny_diffusion_gemma(0).hf
    untied = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=HF_SCOPE))
    one_step(untied, lambda p: hf(input_ids=p, decoder_input_ids=p[:, :1]).cache,
             lambda c, cache: hf(decoder_input_ids=c, cache=cache).logits)  # fmt: skip
    hf_enc, hf_dec = effective(hf, ENCODER_LAYERS), effective(hf, DECODER_LAYERS)
    assert hf_enc.keys() == hf_dec.keys() and len(hf_dec) == 13
    assert not all(torch.equal(hf_enc[key], hf_dec[key]) for key in hf_dec)


def test_bare_lora_names_hit_the_vision_tower() -> None:
    """Why the family scopes its targets: the vision tower's wrapped linears share the names."""
    with pytest.raises(ValueError):
        get_peft_model(tiny_diffusion_gemma(0).hf, LoraConfig(r=4, target_modules=["q_proj", "o_proj"]))


def test_uniform_noise_process() -> None:
    process = tiny_diffusion_gemma(0).process
    assert isinstance(process, UniformNoise) and process.block_size == 8 and process.vocab_size == 128
    tokens = torch.zeros(3, 64, dtype=torch.long)
    where = torch.zeros(3, 64, dtype=torch.bool)
    where[:, 32:] = True
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    noised = process.corrupt(tokens, where, gens)
    assert torch.equal(noised[:, :32], tokens[:, :32]) and noised[:, 32:].unique().numel() > 20
    alone = process.corrupt(tokens[1:2], where[1:2], [torch.Generator().manual_seed(6)])
    assert torch.equal(alone[0], noised[1])  # a row's noise does not depend on the batch
    assert noised.max() < 128 and not process.is_noise_token(torch.arange(128)).any()
    logits = torch.randn(2, 128)
    assert torch.equal(process.forbid_noise(logits), logits)
    assert uniform_tokens((2, 5), 7).shape == (2, 5)
    for call in (lambda: process.noised(tokens), lambda: process.scoring_logits(None, tokens, tokens, None, 0),
                 lambda: process.two_stream_logits(None, tokens, tokens, None),
                 lambda: tiny_diffusion_gemma(0).mask_token_id, lambda: tiny_diffusion_gemma(0)(PROMPT)):  # fmt: skip
        with pytest.raises(UserError, match="no mask token"):
            call()
    with pytest.raises(UserError, match="canvas_length"):
        process.answer_blocks(torch.ones(1, 4, dtype=torch.bool), 16, 4)
    assert process.answer_blocks(torch.ones(1, 4, dtype=torch.bool), 16, 8).tolist() == [[0] * 8 + [1] * 8]



def test_checkpoint_round_trip_by_model_type_and_family(tmp_path) -> None:
    model = tiny_diffusion_gemma(3)
    model.save_pretrained(tmp_path)
    for family in (None, "diffusion_gemma"):
        loaded = load_model(tmp_path, family=family)
        assert isinstance(loaded, DiffusionGemma) and not loaded.training
        encoder = dict(loaded.model.encoder.language_model.named_parameters())
        assert all(p is loaded.model.decoder.get_parameter(name) for name, p in encoder.items())  # ties restored
        torch.testing.assert_close(loaded.decode(CANVAS, loaded.encode(PROMPT)[0]),
                                   model.decode(CANVAS, model.encode(PROMPT)[0]), atol=0, rtol=0)  # fmt: skip
    assert isinstance(meta_model(tmp_path), DiffusionGemma)


def test_untied_adapters_merge_into_the_shared_weights() -> None:
    model, policy = trained_policy()
    with torch.no_grad():
        adapted = model.decode(CANVAS, model.encode(PROMPT)[0])
        merged = merge_adapter(policy)  # prepare_merge gives the encoder its base layers back first
        assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules(remove_duplicate=False))
        assert merged.state_dict().keys() == tiny_diffusion_gemma(0).state_dict().keys()  # no peft names left
        torch.testing.assert_close(merged.decode(CANVAS, merged.encode(PROMPT)[0]), adapted, atol=1e-5, rtol=0)


def test_saved_adapter_loads_tied(tmp_path) -> None:
    model, policy = trained_policy()
    policy.save_pretrained(tmp_path)
    fresh = tiny_diffusion_gemma(0)
    loaded = load_adapter(fresh, tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(fresh.decode(CANVAS, fresh.encode(PROMPT)[0]),
                                   model.decode(CANVAS, model.encode(PROMPT)[0]), atol=0, rtol=0)  # fmt: skip
    assert effective(fresh, ENCODER_LAYERS).keys() == effective(model, DECODER_LAYERS).keys()


def test_export_merges_the_shared_adapters(tmp_path) -> None:
    model, policy = trained_policy()
    with torch.no_grad():
        adapted = model.decode(CANVAS, model.encode(PROMPT)[0])
    merge_and_save(policy, tmp_path)
    merged = load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(merged.decode(CANVAS, merged.encode(PROMPT)[0]), adapted, atol=1e-5, rtol=0)
    assert any(isinstance(m, BaseTunerLayer) for m in model.modules())  # the live policy is untouched
