"""DiffusionGemma (google/diffusiongemma-26B-A4B-it) on transformers' own modules (docs/diffusion-gemma.md).

transformers ships the architecture (``DiffusionGemmaForBlockDiffusion``): a causal
encoder writes the prompt and committed canvases into a KV cache, a bidirectional
decoder with the *same* weights (tied parameters, two module trees) denoises a canvas
of uniform random tokens against it, and the previous step's logits condition the next
step (self-conditioning, SC). This family registers the HF model's ``model`` and
``lm_head`` as its own children, so its state dict uses the checkpoint's names, and
adds what RL needs: an SC input given as soft embeddings ``[B, L, H]`` (the HF
forward takes full-vocabulary logits, 6.4 GB per 48-step row-block at the real size,
which a replay cannot store), and LoRA that keeps encoder and decoder tied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import (
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    DiffusionGemmaTextConfig,
    DynamicCache,
    Gemma4VisionConfig,
)
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
)

from unmask.diffusion.uniform import NO_MASK, UniformNoise
from unmask.errors import UserError
from unmask.models.base import DiffusionLM, id_tuple
from unmask.models.native import CheckpointError

#: the text stack of google/diffusiongemma-26B-A4B-it: vocabulary, depth, experts, window and canvas from
#: the model card; widths from third-party config copies, confirmed by the card's totals
#: (25.2 B parameters, 3.8 B active: tests/test_diffusion_gemma_model.py)
REAL_TEXT = {
    "vocab_size": 262_144, "hidden_size": 2816, "intermediate_size": 2112, "num_hidden_layers": 30,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512,
    "num_global_key_value_heads": 2, "num_experts": 128, "top_k_experts": 8, "moe_intermediate_size": 704,
    "sliding_window": 1024, "use_bidirectional_attention": "vision",
}  # fmt: skip
#: the tiny CPU config: one sliding and one full layer, 4 experts top-2, canvas 8
TINY_TEXT = {
    "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "layer_types": ["sliding_attention", "full_attention"], "num_attention_heads": 2, "num_key_value_heads": 1,
    "head_dim": 16, "global_head_dim": 16, "num_global_key_value_heads": 1, "num_experts": 4, "top_k_experts": 2,
    "moe_intermediate_size": 16, "sliding_window": 8, "use_bidirectional_attention": "vision",
}  # fmt: skip
TINY_VISION = {
    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 2, "head_dim": 8, "position_embedding_size": 64,
}  # fmt: skip
TINY_TOP = {"canvas_length": 8, "boi_token_id": 125, "eoi_token_id": 126, "image_token_id": 127}

ENCODER_LAYERS = "model.encoder.language_model.layers."
DECODER_LAYERS = "model.decoder.layers."
#: the 3-D expert weights, adapted through peft's ``target_parameters`` (they are not ``nn.Linear``)
EXPERT_PARAMETERS = ("experts.gate_up_proj", "experts.down_proj")


class DiffusionGemmaConfigReader:
    """``config_class`` for the loader: a ``config.json`` dict → transformers' ``DiffusionGemmaConfig``."""

    @staticmethod
    def from_dict(raw: dict[str, Any], source: str = "config") -> DiffusionGemmaConfig:
        text = raw.get("text_config") or {}
        missing = [key for key in ("num_experts", "top_k_experts", "moe_intermediate_size") if text.get(key) is None]
        if missing:
            raise CheckpointError(f"{source}: text_config must set {', '.join(missing)} (DiffusionGemma is MoE)")
        return DiffusionGemmaConfig.from_dict({k: v for k, v in raw.items() if k != "model_type"})


def diffusion_gemma_config(text: dict[str, Any], vision: dict[str, Any] | None = None, **top: Any) -> DiffusionGemmaConfig:
    """A top-level config from text / vision settings (vision: Gemma 4's defaults when ``None``)."""
    return DiffusionGemmaConfig(
        text_config=DiffusionGemmaTextConfig(**text), vision_config=Gemma4VisionConfig(**(vision or {})), **top
    )


class DiffusionGemma(DiffusionLM):
    """DiffusionGemma as an unmask family: ``encode`` fills the cache, ``decode`` denoises a canvas.

    ``self.hf`` is transformers' ``DiffusionGemmaForBlockDiffusion`` over the same modules
    (not a child, so parameters are registered once): its ``generate`` and ``forward`` are
    the reference the family is tested against.
    """

    family = "diffusion_gemma"
    config_class = DiffusionGemmaConfigReader
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    #: the decoder's layers and SC block only: the encoder is re-pointed at the same adapters
    #: (``tie_adapters``), and the vision tower's linears share the names
    lora_scope = r"model\.decoder\.(layers\.\d+\.(self_attn|mlp)|self_conditioning)"
    lm_head_name = "lm_head"
    #: text training never reaches the vision tower, and a batch without self-conditioned rows
    #: never reaches the SC block
    partly_used = True

    def __init__(self, config: DiffusionGemmaConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self._adopt(DiffusionGemmaForBlockDiffusion(config))

    def _adopt(self, hf: DiffusionGemmaForBlockDiffusion) -> None:
        self.config = hf.config
        self.model = hf.model
        self.lm_head = hf.lm_head
        object.__setattr__(self, "hf", hf)

    # -- checkpoint directory ----------------------------------------------------
    def load_checkpoint(self, path: Path, dtype: torch.dtype, device: torch.device | str) -> None:
        """Load a checkpoint through transformers, which restores the encoder/decoder ties
        (a checkpoint stores each tied tensor once) and the non-persistent buffers.

        A ``generation_config.json`` with keys transformers' DiffusionGemma config does not know
        (unmask's sampler defaults, written by ``unmask sft``) is left to unmask: ``self.hf``
        then keeps transformers' default generation config."""
        options: dict[str, Any] = {}
        file = Path(path) / "generation_config.json"
        if file.is_file() and set(json.loads(file.read_text())) - set(DiffusionGemmaGenerationConfig().to_dict()):
            options["generation_config"] = DiffusionGemmaGenerationConfig()
        self._adopt(DiffusionGemmaForBlockDiffusion.from_pretrained(
            path, config=self.config, dtype=dtype, device_map=device, **options))

    def save_pretrained(self, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """transformers' checkpoint layout (config.json with model_type ``diffusion_gemma``), plus the tokenizer."""
        out = Path(out_dir)
        self.hf.save_pretrained(out, state_dict=state_dict)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        return out

    # -- ids and process -----------------------------------------------------
    @property
    def text_config(self) -> DiffusionGemmaTextConfig:
        return self.config.text_config

    @property
    def mask_token_id(self) -> int:
        raise UserError(NO_MASK.format(what="model.mask_token_id"))

    @property
    def process(self) -> UniformNoise:
        return UniformNoise(self.text_config.vocab_size, self.config.canvas_length)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return id_tuple(self.text_config.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.text_config.pad_token_id)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    # -- forwards --------------------------------------------------------------
    def logits(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise UserError(NO_MASK.format(what="a one-canvas forward (absorbing sampler, one-step/ELBO scoring)")
                        + "; the family's entry points are encode and decode")

    def forward(self, *args: Any, within: Callable[[DiffusionGemma], Any] | None = None, **kwargs: Any) -> Any:
        """``model(within=fn)`` returns ``fn(self)``: several ``encode`` / ``decode`` calls as ONE forward
        of whatever wraps the family (peft, DDP). DDP arms its gradient all-reduce for the backward
        in its ``forward``; entry points called around it would leave each rank its own gradient."""
        if within is None:
            return super().forward(*args, **kwargs)
        return within(self)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.text_config)

    def encode(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[DynamicCache, torch.Tensor]:
        """Run the causal encoder over the uncached context; returns ``(cache, normed hidden [B, P, H])``.

        The cache is written in place (a new one when ``None``); ``attention_mask`` covers
        cache + ``input_ids``. The hidden states feed ``head`` for an encoder next-token loss.
        """
        out = self.model.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=self.new_cache() if cache is None else cache,
        )
        return out.cache, out.last_hidden_state

    def soft_embeddings(self, sc_logits: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` SC input from processed logits: softmax_fp32 → embedding dtype → @ E · sqrt(H), as HF does."""
        embed = self.model.decoder.embed_tokens
        probs = sc_logits.softmax(dim=-1, dtype=torch.float32).to(embed.weight.dtype)
        return (probs @ embed.weight) * embed.embed_scale.to(embed.weight.dtype)

    def decode(
        self,
        canvas: torch.Tensor,
        cache: DynamicCache,
        sc: torch.Tensor | None = None,
        sc_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        before_head: bool = False,
    ) -> torch.Tensor:
        """fp32 soft-capped logits ``[B, L, V]`` of ``canvas`` against ``cache`` (read, never written).

        ``sc``: soft embeddings ``[B, L, H]`` (``soft_embeddings`` of the previous step's
        processed logits), ``None`` = zeros (the first step); ``sc_mask [B]`` zeroes rows.
        ``attention_mask`` ``[B, cache + L]`` marks padded cache entries. ``before_head``: the
        normed hidden states ``[B, L, H]`` instead, for a caller that applies ``head`` to a few
        canvases at a time (the logits of many canvases do not fit at the real vocabulary).
        """
        decoder = self.model.decoder
        embeds = decoder.embed_tokens(canvas)
        if sc is None:
            sc = torch.zeros_like(embeds)
        elif sc_mask is not None:
            sc = sc * sc_mask.to(sc.dtype)[:, None, None]
        hidden = decoder.self_conditioning(embeds, sc.to(embeds.dtype))
        if position_ids is None:
            start = cache.get_seq_length(layer_idx=0)
            position_ids = torch.arange(start, start + canvas.shape[1], device=canvas.device)[None]
        masks = decoder.create_diffusion_decoder_attention_mask(
            config=self.text_config, inputs_embeds=hidden, cache=cache, decoder_attention_mask=attention_mask
        )
        types = self.text_config.layer_types
        rope = {kind: decoder.rotary_emb(hidden, position_ids, kind) for kind in set(types)}
        for layer, kind in zip(decoder.layers, types, strict=True):
            hidden = layer(hidden, position_embeddings=rope[kind], attention_mask=masks[kind],
                           position_ids=position_ids, cache=cache)  # fmt: skip
        hidden = decoder.norm(hidden)
        return hidden if before_head else self.head(hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head, then the fp32 tanh soft-cap of the HF forward."""
        cap = self.text_config.final_logit_softcapping
        return torch.tanh(self.lm_head(hidden).float() / cap) * cap

    # -- LoRA --------------------------------------------------------------------
    def lora_parameters(self) -> list[str]:
        """Full names of the decoder's 3-D expert weights (peft ``target_parameters``; suffixes would also hit the encoder)."""
        n = self.text_config.num_hidden_layers
        return [f"{DECODER_LAYERS}{i}.{name}" for i in range(n) for name in EXPERT_PARAMETERS]

    def tie_adapters(self, peft_model: PeftModel) -> int:
        """Point each encoder layer module at the decoder's LoRA wrapper of the same name; returns how many.

        peft adapts only the decoder (``lora_scope``); without this the encoder would run
        its un-adapted copies (docs/diffusion-gemma.md). Call after injecting or loading adapters.
        """
        tied = 0
        for name, module in list(self.named_modules()):
            if not name.startswith(DECODER_LAYERS) or "base_layer" in name or not isinstance(module, BaseTunerLayer):
                continue
            parent, _, attr = (ENCODER_LAYERS + name.removeprefix(DECODER_LAYERS)).rpartition(".")
            setattr(self.get_submodule(parent), attr, module)
            tied += 1
        return tied

    def prepare_merge(self) -> None:
        """Give the encoder plain base layers again: ``merge_and_unload`` replaces each shared wrapper
        under one of its two names only, and a wrapper left under the other would put peft's names
        (``base_layer``, ``lora_A``) into the merged model's state dict."""
        for name, module in list(self.named_modules()):
            if name.startswith(ENCODER_LAYERS) and isinstance(module, BaseTunerLayer) and "base_layer" not in name:
                parent, _, attr = name.rpartition(".")
                setattr(self.get_submodule(parent), attr, module.get_base_layer())


def tiny_diffusion_gemma(seed: int = 0, **overrides: Any) -> DiffusionGemma:
    """A random tiny DiffusionGemma (no tokenizer) in eval mode; ``overrides`` go to the text config."""
    config = diffusion_gemma_config({**TINY_TEXT, **overrides}, TINY_VISION, **TINY_TOP)
    with torch.random.fork_rng(devices=[]):  # transformers initialises from the global RNG
        torch.manual_seed(seed)
        return DiffusionGemma(config).eval()
