"""The tiny block-diffusion family: an SDAR-shaped model (block size 4) for CPU runs.

It is SDAR itself (block-causal attention, the two-stream training forward, the
exact block KV cache, Qwen3 module names and LoRA targets) with a small config and
the tiny family's task-alphabet tokenizer, as ``TinyLM`` is LLaDA with a small
config. ``builtin:tiny-countdown-block`` is built from it by ``unmask sft``
(docs/block-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from unmask.models.sdar import SDAR, SDARConfig
from unmask.models.tiny import QWEN_TOKENIZER_FIELDS, fresh_model


@dataclass
class TinyBlockConfig(SDARConfig):
    """Architecture of a tiny block model (~0.4 M parameters by default); token ids come from the tokenizer."""

    model_type: ClassVar[str] = "unmask-tiny-block"
    tokenizer_fields: ClassVar[tuple[str, ...]] = QWEN_TOKENIZER_FIELDS

    hidden_size: int = 96
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 24
    rope_theta: float = 10000.0
    max_position_embeddings: int = 512
    block_size: int = 4
    # token ids: filled in from the tokenizer by ``tiny_block()``
    vocab_size: int = 0
    mask_token_id: int = 0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] = 0
    pad_token_id: int | None = 0


class TinyBlockLM(SDAR):
    family = "tiny-block"
    config_class = TinyBlockConfig
    #: the task-alphabet tokenizer has no chat turns
    end_of_turn_id = None


def tiny_block(config: TinyBlockConfig | dict[str, Any] | None = None, seed: int = 0) -> TinyBlockLM:
    """A fresh, deterministically initialised tiny block model with its tokenizer (eval mode)."""
    return fresh_model(TinyBlockLM, config, seed)
