"""What the native families share: config (de)serialisation, forward plumbing, saving.

A family subclasses ``NativeConfig`` with its official ``config.json`` field names
and ``NativeLM`` with its official module names; everything else (padding mask,
rotary positions, gradient checkpointing, checkpoint directory format) is here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import save_torch_state_dict
from torch import nn

from unmask.errors import UserError
from unmask.models.base import DiffusionLM, positions_from_mask
from unmask.models.layers import rotary, run_blocks


class CheckpointError(UserError, ValueError):
    """A checkpoint or model configuration the user supplied cannot be used as is."""


def check_heads(width: int, n_heads: int, n_kv_heads: int, family: str) -> None:
    """Reject head layouts the shared attention cannot run (one clear message)."""
    if width % n_heads or (width // n_heads) % 2 or n_heads % n_kv_heads:
        raise CheckpointError(
            f"{family} config: width {width} must split into {n_heads} heads of even size, "
            f"and the {n_heads} heads must be a multiple of the {n_kv_heads} key/value heads"
        )


@dataclass
class NativeConfig:
    """Base of the family configs; field names are the official ``config.json`` keys."""

    model_type: ClassVar[str] = ""
    #: settings that must hold for the native implementation to be exact
    required: ClassVar[dict[str, Any]] = {}
    #: keys of ``config.json`` this implementation does not use, kept for round trips
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> NativeConfig:
        """Build from a ``config.json`` dict; unsupported settings raise ``CheckpointError``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        for key, expected in cls.required.items():
            if key in raw and raw[key] != expected:
                raise CheckpointError(
                    f"{source}: {key}={raw[key]!r} is not supported by the native "
                    f"{cls.model_type} implementation (expected {expected!r})"
                )
        extra = {k: v for k, v in raw.items() if k not in known and k != "model_type"}
        return cls(**{k: v for k, v in raw.items() if k in known}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **values, "model_type": self.model_type}


class NativeLM(DiffusionLM):
    """A family implemented in unmask: embed → residual blocks → norm → LM head."""

    config_class: ClassVar[type[NativeConfig]] = NativeConfig
    #: module name of the LM head (LoRA leaves it out unless asked)
    lm_head_name: ClassVar[str] = ""
    #: regex of the modules inside which ``lora_targets`` are adapted
    lora_scope: ClassVar[str] = ""
    supports_gradient_checkpointing = True

    def __init__(self, config: NativeConfig, tokenizer: Any = None) -> None:
        super().__init__(config, tokenizer)
        self.gradient_checkpointing = False

    # -- what a family provides --------------------------------------------
    head_dim: int
    rope_theta: float

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head."""
        raise NotImplementedError

    def align(self, raw: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Turn the network's raw logits into position-aligned ones (identity by default)."""
        return raw

    # -- forward ------------------------------------------------------------
    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = None if attention_mask is None else attention_mask.bool()
        if positions is None:
            positions = (
                torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
                if mask is None
                else positions_from_mask(mask)
            )
        rope = rotary(positions, self.head_dim, self.rope_theta)
        key_mask = None if mask is None else mask[:, None, None, :]
        hidden = run_blocks(
            self.blocks, self.embed(input_ids), rope, key_mask, self.gradient_checkpointing
        )
        return self.align(self.head(hidden), mask)

    # -- training switches ---------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None) -> None:
        """Recompute block activations in backward (HF-compatible name, used by peft)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def init_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """Fresh deterministic weights: N(0, std) matrices, unit norms, zero biases."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if param.ndim >= 2:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
                elif name.endswith("bias"):
                    param.zero_()
                else:
                    param.fill_(1.0)

    # -- checkpoint directory -------------------------------------------------
    def save_pretrained(
        self, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """Write ``config.json``, safetensors (sharded above 5 GB) and tokenizer files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        config = {**self.config.to_dict(), "torch_dtype": str(self.dtype).removeprefix("torch.")}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tensors = self.state_dict() if state_dict is None else state_dict
        save_torch_state_dict({k: v.detach().cpu() for k, v in tensors.items()}, out)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        return out

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
