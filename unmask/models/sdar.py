"""Native SDAR (JetAstra/SDAR-*-Chat; TraDo-*-Instruct uses the same class): block diffusion on Qwen3.

The published remote code does not run under transformers 5 (docs/models.md), so
this module loads the official safetensors by their own names, without
``trust_remote_code``. The layout is Qwen3's: an explicit ``head_dim`` (the 4B's
32 heads × 128 = 4096 ≠ its width 2560), per-head RMSNorm of q and k before
rotary, grouped-query attention, SwiGLU, untied LM head. What makes it a
diffusion LM is the attention pattern only: block-causal (``block_mask``), with
position-aligned logits (no autoregressive shift).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Tokenizer

from unmask.models.base import positions_from_mask
from unmask.models.block_cache import BlockKVCache
from unmask.models.block_mask import block_causal_mask, two_stream_mask
from unmask.models.kv_cache import KVHook
from unmask.models.layers import RMSNorm, attention, swiglu
from unmask.models.native import CheckpointError, Dims, NativeConfig, NativeLM


@dataclass
class SDARConfig(NativeConfig):
    """SDAR's ``config.json`` (Qwen3 keys plus ``block_size`` / ``mask_token_id``; defaults: SDAR-4B-Chat)."""

    model_type: ClassVar[str] = "sdar"
    required: ClassVar[dict[str, Any]] = {
        "hidden_act": "silu",
        "rope_scaling": None,
        "attention_bias": False,
        "use_sliding_window": False,
    }

    hidden_size: int = 2560
    intermediate_size: int = 9728
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 151936
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    block_size: int = 4
    mask_token_id: int = 151669
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] = 151643
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        if self.head_dim % 2 or heads % kv_heads or self.block_size < 1:
            raise CheckpointError(
                f"{self.model_type} config: head_dim {self.head_dim} must be even, the {heads} heads a "
                f"multiple of the {kv_heads} key/value heads, and block_size {self.block_size} at least 1"
            )


#: ``<|im_end|>``: the chat turn ends there (generation_config.json stops on it and on ``<|endoftext|>``)
IM_END_ID = 151645
#: model_type of SDAR-30B-A3B, refused with this message by the loader
MOE_MODEL_TYPE = "sdar_moe"
MOE_REFUSAL = (
    "SDAR-30B-A3B (model_type 'sdar_moe', Qwen3-MoE layout) is not supported yet: its mixture-of-experts "
    "block is the follow-up of issue 29, together with LLaDA2.0-mini; use a dense SDAR/TraDo checkpoint"
)
#: the tiny random SDAR of the CPU tests: head_dim 16 ≠ 32 / 4 exercises the explicit rule
TINY = {
    "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 64, "block_size": 4,
    "mask_token_id": 63, "bos_token_id": 62, "eos_token_id": 62, "max_position_embeddings": 512,
}  # fmt: skip


class SDARAttention(nn.Module):
    """``self_attn``: q/k/v/o projections without bias, per-head ``q_norm`` / ``k_norm`` before rotary."""

    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, config.rms_norm_eps)
        self.k_norm = RMSNorm(hd, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        kv: KVHook | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return attention(
            x, self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.n_heads, self.n_kv_heads,
            rope, key_mask, kv, queries, q_norm=self.q_norm, k_norm=self.k_norm,
        )  # fmt: skip


class SDARMLP(nn.Module):
    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        d, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj, self.up_proj, self.down_proj)


class SDARLayer(nn.Module):
    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SDARAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SDARMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        kv: KVHook | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries``: compute only those columns' outputs (see ``run_blocks``)."""
        x = (x if queries is None else x[:, queries]) + self.self_attn(self.input_layernorm(x), rope, key_mask, kv, queries)
        return x + self.mlp(self.post_attention_layernorm(x))


class SDAR(NativeLM):
    """SDAR / TraDo: Qwen3 layout (``model.layers.N``, ``lm_head``) under a block-causal mask."""

    family = "sdar"
    config_class = SDARConfig
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lm_head_name = "lm_head"
    lora_scope = r"model\.layers\.\d+\.(self_attn|mlp)"
    end_of_turn_id = IM_END_ID
    tokenizer_class = Qwen2Tokenizer

    def __init__(self, config: SDARConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta
        self.block_size = config.block_size
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(SDARLayer(config) for _ in range(config.num_hidden_layers))
        self.model.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def dims(self) -> Dims:
        c = self.config
        return Dims(
            c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.intermediate_size, c.vocab_size,
        )  # fmt: skip

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.model.norm(hidden)
        if self.config.tie_word_embeddings:
            return F.linear(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)

    # -- block-causal forwards -------------------------------------------------
    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Position-aligned logits under the block-causal mask (``NativeLM.logits`` for ``options``).

        ``attention_mask`` is a ``[B, L]`` padding mask (left padding; the block grid
        is counted on compact positions) from which the block-causal mask is built,
        or an explicit bool ``[B, 1, L, L]`` mask (True = attend) used as is, e.g.
        ``two_stream_mask``; ``positions`` default to the compact positions (an
        explicit mask: ``0..L-1``).
        """
        if attention_mask is not None and attention_mask.dim() == 4:
            if positions is None:
                positions = compact_positions(input_ids, None)
            return super().logits(input_ids, attention_mask.bool(), positions, **options)
        valid = None if attention_mask is None else attention_mask.bool()
        if positions is None:
            positions = compact_positions(input_ids, valid)
        mask = block_causal_mask(positions, positions, valid, self.block_size)
        return super().logits(input_ids, mask, positions, **options)

    def two_stream_logits(
        self,
        noisy_ids: torch.Tensor,
        clean_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, n, V]`` logits of the noisy stream of ``[x_t ; x_0]`` (the training forward).

        Each noisy block is scored against the clean tokens of the earlier blocks,
        the context it has at sampling time. ``attention_mask`` ``[B, n]`` marks real
        tokens; both streams get the same ``positions`` (default: compact positions).
        """
        n = noisy_ids.shape[1]
        valid = None if attention_mask is None else attention_mask.bool()
        if positions is None:
            positions = compact_positions(noisy_ids, valid)
        return self.logits(
            torch.cat([noisy_ids, clean_ids], dim=1),
            two_stream_mask(positions, valid, self.block_size),
            positions.repeat(1, 2),
            logits_at=torch.arange(n, device=noisy_ids.device),
        )

    def _attention_mask(
        self,
        mask: torch.Tensor | None,
        length: int,
        columns: torch.Tensor | None,
        prompt_length: int | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """The ``[B, 1, L, L]`` mask ``logits`` built; the rows of ``columns`` in a partial forward."""
        return mask if columns is None else mask[:, :, columns]

    def new_block_cache(self) -> BlockKVCache:
        """An empty exact cache of finished blocks (``BlockKVCache``)."""
        return BlockKVCache(self)


def compact_positions(input_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``[B, L]`` rotary positions: ``0..L-1``, or counted from each row's first real token."""
    if valid is not None:
        return positions_from_mask(valid)
    b, length = input_ids.shape
    return torch.arange(length, device=input_ids.device).expand(b, length)


def tiny_sdar(seed: int = 0, **overrides: Any) -> SDAR:
    """A random SDAR of the ``TINY`` config (no tokenizer), in eval mode, for CPU tests."""
    model = SDAR(dataclasses.replace(SDARConfig(**TINY), **overrides))
    model.init_weights(seed)
    return model.eval()
