"""Merge a LoRA adapter into the base weights: in place, or into a plain checkpoint directory.

Every merge site calls one of the two: ``merge_adapter`` (``unmask eval --adapter``: the
model is used merged and nothing else) folds the adapter in place after the family's
``prepare_merge`` hook; ``merge_and_save`` (``unmask export``, the SFT trainer's final
export) computes a new state dict (base weight + peft's delta per adapted layer), so the
live model is left untouched and training can go on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from unmask.models.base import DiffusionLM
from unmask.models.native import NativeLM


def merge_adapter(model: PeftModel) -> DiffusionLM:
    """The base model with the active adapter folded into its weights and no peft wrapper left (in place)."""
    model.get_base_model().prepare_merge()
    return model.merge_and_unload()


def merged_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """Base-named tensors of ``model`` with the active adapter folded in.

    Every name a wrapper is reachable under gets the same merged tensor (DiffusionGemma's
    encoder and decoder share their adapters, docs/diffusion-gemma.md); peft's
    ``ParamWrapper`` (3-D expert weights) names the parameter it adapts.
    """
    base: NativeLM = model.get_base_model()
    adapter = model.active_adapter
    state = {name.replace(".base_layer", ""): t for name, t in base.state_dict().items() if "lora_" not in name}
    merged: dict[tuple[int, str], torch.Tensor] = {}
    for name, module in base.named_modules(remove_duplicate=False):
        if isinstance(module, LoraLayer):
            attr = getattr(module, "parameter_name", "weight")
            key = (id(module), attr)
            if key not in merged:
                weight = getattr(module.get_base_layer(), attr).detach()
                if not module.merged:  # a merged layer's base weight already holds the delta
                    weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
                merged[key] = weight
            state[f"{name.replace('.base_layer', '')}.{attr}"] = merged[key]
    return state


def merge_and_save(model: NativeLM | PeftModel, out_dir: str | Path) -> Path:
    """Write ``out_dir`` that ``load_model`` reads as a model with the adapter merged in."""
    if isinstance(model, PeftModel):
        return model.get_base_model().save_pretrained(out_dir, state_dict=merged_state_dict(model))
    return model.save_pretrained(out_dir)
