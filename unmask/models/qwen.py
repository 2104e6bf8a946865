"""The Qwen2 / Qwen3 decoder layout that Dream and SDAR share: module names, MLP, layer, embedding and head.

Both families keep the official names (``model.embed_tokens``, ``model.layers.N.
{input_layernorm, self_attn, post_attention_layernorm, mlp.{gate,up,down}_proj}``,
``model.norm``, ``lm_head``), so their ``state_dict()`` keys equal the safetensors
keys; they differ in the attention module (Dream: biased q/k/v; SDAR: per-head q/k
norms, explicit ``head_dim``) and in how logits are read (Dream shifted, SDAR
block-causal).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.kv_cache import KVHook
from unmask.models.layers import RMSNorm, swiglu
from unmask.models.native import Dims, NativeLM


class QwenMLP(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        d, hidden = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj, self.up_proj, self.down_proj)


class QwenLayer(nn.Module):
    """Pre-norm residual layer around the family's ``self_attn`` and a SwiGLU ``mlp``."""

    def __init__(self, config: Any, self_attn: nn.Module) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self_attn
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = QwenMLP(config)

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


class QwenLM(NativeLM):
    """Embedding → ``QwenLayer`` stack → norm → (untied or tied) LM head, under Qwen's names."""

    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lm_head_name = "lm_head"
    lora_scope = r"model\.layers\.\d+\.(self_attn|mlp)"
    #: the family's attention module, built from the config
    attention_class: ClassVar[type[nn.Module]]

    def __init__(self, config: Any, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.rope_theta = config.rope_theta
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(
            QwenLayer(config, self.attention_class(config)) for _ in range(config.num_hidden_layers)
        )
        self.model.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def dims(self) -> Dims:
        c = self.config
        return Dims(
            c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.intermediate_size, c.vocab_size,
            getattr(c, "head_dim", None),
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
