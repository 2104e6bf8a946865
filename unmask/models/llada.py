"""Native LLaDA (GSAI-ML/LLaDA-8B-*): loads the official checkpoints by their own names.

The published remote code does not load under transformers 5; this module needs
no ``trust_remote_code``. Config keys and weight names are the official ones
(models.md), so ``state_dict()`` keys equal the safetensors keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.kv_cache import KVHook
from unmask.models.layers import RMSNorm, attention, swiglu
from unmask.models.native import Dims, NativeConfig, NativeLM, check_heads


@dataclass
class LLaDAConfig(NativeConfig):
    """LLaDA's ``config.json`` (defaults: LLaDA-8B-Instruct)."""

    model_type: ClassVar[str] = "llada"
    required: ClassVar[dict[str, Any]] = {
        "block_type": "llama",
        "layer_norm_type": "rms",
        "activation_type": "silu",
        "rope": True,
        "alibi": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "attention_layer_norm": False,
        "input_emb_norm": False,
        "scale_logits": False,
    }

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_sequence_length: int = 4096
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int | list[int] = 126081
    pad_token_id: int | None = 126081

    def __post_init__(self) -> None:
        check_heads(self.d_model, self.n_heads, self.n_kv_heads or self.n_heads, self.model_type)

    @property
    def padded_vocab(self) -> int:
        """Rows of the embedding / LM head (``embedding_size`` pads ``vocab_size``)."""
        return self.embedding_size or self.vocab_size


#: ``<|eot_id|>`` of the official LLaDA vocabulary
END_OF_TURN_ID = 126348


class LLaDABlock(nn.Module):
    """``LLaDALlamaBlock``: pre-norm attention and SwiGLU MLP, flat official names."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, heads = config.d_model, config.n_heads
        self.n_heads = heads
        self.n_kv_heads = config.n_kv_heads or heads
        kv_dim = self.n_kv_heads * (d // heads)
        hidden = config.mlp_hidden_size
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.ff_out = nn.Linear(hidden, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        kv: KVHook | None = None,
        queries: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries``: compute only those columns' outputs (see ``run_blocks``)."""
        x = (x if queries is None else x[:, queries]) + attention(
            self.attn_norm(x),
            self.q_proj,
            self.k_proj,
            self.v_proj,
            self.attn_out,
            self.n_heads,
            self.n_kv_heads,
            rope,
            key_mask,
            kv,
            queries,
        )
        return x + swiglu(self.ff_norm(x), self.ff_proj, self.up_proj, self.ff_out)


class LLaDA(NativeLM):
    """LLaDA: bidirectional Llama-style transformer under ``model.transformer``."""

    family = "llada"
    config_class = LLaDAConfig
    lora_targets = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
    lm_head_name = "model.transformer.ff_out"
    lora_scope = r"model\.transformer\.blocks\.\d+"
    end_of_turn_id = END_OF_TURN_ID

    def __init__(self, config: LLaDAConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.head_dim = config.d_model // config.n_heads
        self.rope_theta = config.rope_theta
        transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
            }
        )
        if not config.weight_tying:
            transformer["ff_out"] = nn.Linear(config.d_model, config.padded_vocab, bias=False)
        self.model = nn.Module()
        self.model.transformer = transformer

    @property
    def dims(self) -> Dims:
        c = self.config
        return Dims(c.d_model, c.n_layers, c.n_heads, c.n_kv_heads or c.n_heads, c.mlp_hidden_size, c.padded_vocab)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.wte(input_ids)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.blocks

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        hidden = t.ln_f(hidden)
        return F.linear(hidden, t.wte.weight) if self.config.weight_tying else t.ff_out(hidden)
