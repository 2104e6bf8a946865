"""The trainable policy and its optimizer, built the same way for RL and SFT.

LoRA wraps the base model in place (its reference is the same model with the
adapter disabled, no copy); full fine-tuning trains the base itself.
``model.gradient_checkpointing`` is switched on the base model, which peft wraps
in place: its blocks recompute activations in backward only, so no-grad passes
cost nothing extra.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.recipe import LoraConfig, ModelConfig, OptimConfig


def build_policy(base: DiffusionLM, model: ModelConfig, lora: LoraConfig) -> nn.Module:
    """``base`` in training mode, LoRA-wrapped when ``lora.enabled``."""
    if model.gradient_checkpointing:
        base.gradient_checkpointing_enable()
    if not lora.enabled:
        return base.train()
    from unmask.models.lora import apply_lora

    policy = apply_lora(base, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules)
    return policy.train()


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, warmup_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and the recipe's learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2), weight_decay=optim.weight_decay
    )
    # transformers' "constant" schedule ignores warmup; a recipe's warmup_steps must not be silently dropped
    schedule = "constant_with_warmup" if optim.lr_scheduler_type == "constant" and warmup_steps else optim.lr_scheduler_type
    try:
        scheduler = get_scheduler(schedule, optimizer, warmup_steps, total_steps, optim.lr_scheduler_kwargs or None)
    except TypeError as error:
        raise UserError(f"optim.lr_scheduler_kwargs: {error}; see transformers' {schedule} schedule") from None
    return optimizer, scheduler
