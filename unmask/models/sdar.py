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
from torch import nn
from transformers import Qwen2Tokenizer

from unmask.diffusion.block import BlockAbsorbingMask
from unmask.models.block_cache import BlockKVCache
from unmask.models.block_mask import block_causal_mask, compact_positions
from unmask.models.kv_cache import KVHook
from unmask.models.layers import RMSNorm, attention
from unmask.models.native import CheckpointError, NativeConfig
from unmask.models.qwen import QwenLM


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


class SDAR(QwenLM):
    """SDAR / TraDo: Qwen3 layout (``model.layers.N``, ``lm_head``) under a block-causal mask."""

    family = "sdar"
    config_class = SDARConfig
    attention_class = SDARAttention
    end_of_turn_id = IM_END_ID
    tokenizer_class = Qwen2Tokenizer

    def __init__(self, config: SDARConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.head_dim = config.head_dim
        self.block_size = config.block_size

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
        ``two_stream_mask`` over ``[x_t ; x_0]`` with ``positions`` repeated for the
        two streams; ``positions`` default to the compact positions (with an explicit
        mask: ``0..L-1``).
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

    @property
    def process(self) -> BlockAbsorbingMask:
        """Absorbing mask noise over block-causal canvases of ``block_size`` (docs/diffusion.md)."""
        return BlockAbsorbingMask(self.mask_token_id, block_size=self.block_size)

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


def tiny_sdar(seed: int = 0, **overrides: Any) -> SDAR:
    """A random SDAR of the ``TINY`` config (no tokenizer), in eval mode, for CPU tests."""
    model = SDAR(dataclasses.replace(SDARConfig(**TINY), **overrides))
    model.init_weights(seed)
    return model.eval()
