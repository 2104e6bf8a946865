"""The tiny DiffusionGemma family: transformers' DiffusionGemma with a small config and the task-alphabet tokenizer.

It is ``DiffusionGemma`` itself (encoder/decoder on one tied stack, SC as soft
embeddings, tied LoRA), as ``TinyLM`` is LLaDA with a small config, so the uniform
sampler, the SFT loss and the renoise replay run here on the code path of the 26B-A4B
checkpoint. ``new:tiny-dgemma`` builds it from scratch; its checkpoints are transformers'
DiffusionGemma layout with ``model_type: unmask-tiny-dgemma``, so they load back as this
family (and are posed the tiny prompt) while transformers still reads them.
``builtin:tiny-countdown-dgemma`` is built from it by ``unmask sft`` (``make
tiny-dgemma-model``, docs/diffusion-gemma.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

from unmask.models.diffusion_gemma import (
    TINY_VISION,
    DiffusionGemma,
    DiffusionGemmaConfigReader,
    diffusion_gemma_config,
)
from unmask.models.tiny import QWEN_TOKENIZER_FIELDS, fresh_model


@dataclass
class TinyDGemmaConfig:
    """Architecture of a tiny DiffusionGemma (one sliding and one full layer, 4 experts top-2 by default).

    Token ids come from the tokenizer; the image ids (unused by a text family, but the
    config needs them) are the mask token's, which no uniform-noise text contains.
    """

    model_type: ClassVar[str] = "unmask-tiny-dgemma"
    tokenizer_fields: ClassVar[tuple[str, ...]] = QWEN_TOKENIZER_FIELDS

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    num_experts: int = 4
    top_k_experts: int = 2
    moe_intermediate_size: int = 32
    #: longer than any tiny prompt + canvas, so sliding layers see the whole context
    sliding_window: int = 128
    canvas_length: int = 16
    # token ids: filled in from the tokenizer by ``fresh_model``
    vocab_size: int = 0
    mask_token_id: int = 0
    bos_token_id: int = 0
    eos_token_id: int = 0
    pad_token_id: int = 0

    #: a checkpoint's config.json → transformers' config (the loader's ``config_class.from_dict``)
    from_dict = staticmethod(DiffusionGemmaConfigReader.from_dict)

    def hf_config(self) -> Any:
        """transformers' ``DiffusionGemmaConfig`` of this architecture."""
        text = {k: v for k, v in asdict(self).items() if k not in ("canvas_length", "mask_token_id")}
        n = self.num_hidden_layers
        # transformers' pattern (5 sliding : 1 full, the last layer full), spelled out so it does not warn
        kinds = ["full_attention" if (i + 1) % 6 == 0 or i == n - 1 else "sliding_attention" for i in range(n)]
        text.update(global_head_dim=self.head_dim, num_global_key_value_heads=self.num_key_value_heads,
                    layer_types=kinds, use_bidirectional_attention="vision")
        image = self.mask_token_id
        return diffusion_gemma_config(text, TINY_VISION, canvas_length=self.canvas_length,
                                      boi_token_id=image, eoi_token_id=image, image_token_id=image)


class TinyDiffusionGemma(DiffusionGemma):
    family = "tiny-dgemma"
    config_class = TinyDGemmaConfig  # type: ignore[assignment]
    #: the task-alphabet tokenizer has no chat turns
    end_of_turn_id = None

    def __init__(self, config: TinyDGemmaConfig | DiffusionGemmaConfig, tokenizer: Any = None) -> None:
        """``config``: the architecture (a fresh model) or a checkpoint's transformers config."""
        hf = config.hf_config() if isinstance(config, TinyDGemmaConfig) else config
        with torch.random.fork_rng(devices=[]):  # transformers initialises from the global RNG
            super().__init__(hf, tokenizer)

    def init_weights(self, seed: int = 0) -> None:
        """transformers' initialisation, drawn from ``seed`` (not from the global RNG)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._adopt(DiffusionGemmaForBlockDiffusion(self.config))


    def save_pretrained(self, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """transformers' layout, with this family's ``model_type`` in config.json."""
        out = super().save_pretrained(out_dir, state_dict)
        file = out / "config.json"
        raw = json.loads(file.read_text())
        raw["model_type"] = TinyDGemmaConfig.model_type
        file.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        return out


def tiny_dgemma(config: TinyDGemmaConfig | dict[str, Any] | None = None, seed: int = 0) -> TinyDiffusionGemma:
    """A fresh, deterministically initialised tiny DiffusionGemma with its tokenizer (eval mode)."""
    return fresh_model(TinyDiffusionGemma, config, seed)
