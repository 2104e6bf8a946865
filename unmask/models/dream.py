"""Native Dream (Dream-org/Dream-v0-*-7B): Qwen2 weights, bidirectional attention.

Dream was adapted from an autoregressive model, so its raw logits at position
``i`` predict token ``i + 1``; ``logit_shift = 1`` makes the shared forward read
the logits of position ``i`` from the block output at ``i − 1`` (each row's first
real token keeps its own), so the rest of the toolkit sees position-aligned
logits like every other family, also when only some positions are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Qwen2Tokenizer

from unmask.models.kv_cache import KVHook
from unmask.models.layers import attention
from unmask.models.native import NativeConfig, check_heads
from unmask.models.qwen import QwenLM


@dataclass
class DreamConfig(NativeConfig):
    """Dream's ``config.json`` (Qwen2 keys; defaults: Dream-v0-Instruct-7B)."""

    model_type: ClassVar[str] = "Dream"
    required: ClassVar[dict[str, Any]] = {"hidden_act": "silu", "rope_scaling": None}

    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    vocab_size: int = 152064
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = False
    mask_token_id: int = 151666
    pad_token_id: int | None = 151643
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] = 151643

    def __post_init__(self) -> None:
        check_heads(
            self.hidden_size, self.num_attention_heads, self.num_key_value_heads, self.model_type
        )


#: ``<|im_end|>``, where Dream-Instruct ends its turn (``<|endoftext|>`` padding follows)
IM_END_ID = 151645


class DreamAttention(nn.Module):
    """``self_attn``: biased q/k/v, unbiased output projection, grouped-query heads."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        kv_dim = self.n_kv_heads * (d // self.n_heads)
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, kv_dim, bias=True)
        self.v_proj = nn.Linear(d, kv_dim, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        kv: KVHook | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return attention(
            x, self.q_proj, self.k_proj, self.v_proj, self.o_proj,
            self.n_heads, self.n_kv_heads, rope, key_mask, kv, queries,
        )  # fmt: skip


class Dream(QwenLM):
    """Dream: Qwen2 layout (``model.layers.N``, ``lm_head``), shifted logits aligned by ``logit_shift``."""

    family = "dream"
    config_class = DreamConfig
    attention_class = DreamAttention
    logit_shift = 1
    end_of_turn_id = IM_END_ID
    tokenizer_class = Qwen2Tokenizer

    def __init__(self, config: DreamConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.head_dim = config.hidden_size // config.num_attention_heads
