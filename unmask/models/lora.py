"""LoRA through peft, aimed at each family's own module names.

Targets are matched by a regex over full module names, scoped to the blocks: a
bare ``ff_out`` would also hit LLaDA's LM head (``model.transformer.ff_out``),
and Llama names (``o_proj``/``down_proj``) would silently skip LLaDA layers. The
reference policy is the same model inside ``peft_model.disable_adapter()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict

from unmask.models.native import CheckpointError, NativeLM


def target_regex(model: NativeLM, target_modules: Sequence[str] | None, lm_head: bool) -> str:
    """Full-name regex of the linear layers to adapt (block-scoped, head only if asked)."""
    names = tuple(target_modules) if target_modules is not None else model.lora_targets
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = sorted(set(names) - present)
    if unknown:
        raise CheckpointError(
            f"LoRA target_modules {', '.join(unknown)} do not exist in a {model.family} model; "
            f"its linear layers are {', '.join(model.lora_targets)}"
        )
    pattern = rf"{model.lora_scope}\.({'|'.join(map(re.escape, names))})"
    return f"{pattern}|{re.escape(model.lm_head_name)}" if lm_head else pattern


def apply_lora(
    model: NativeLM,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    lm_head: bool = False,
) -> PeftModel:
    """Wrap ``model`` with LoRA adapters; only the adapter weights stay trainable."""
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_regex(model, target_modules, lm_head),
        target_parameters=model.lora_parameters() if hasattr(model, "lora_parameters") else None,
    )
    return tied(get_peft_model(model, config))


def tied(peft_model: PeftModel) -> PeftModel:
    """Let a family whose modules run twice under two names (DiffusionGemma) share one set of adapters."""
    base = peft_model.get_base_model()
    if hasattr(base, "tie_adapters"):
        base.tie_adapters(peft_model)
    return peft_model


def load_adapter(model: NativeLM, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a saved peft adapter directory (``adapter_config.json`` + weights) to ``model``."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise CheckpointError(f"{adapter_dir}: no adapter_config.json (is this a LoRA adapter directory?)")
    if not hasattr(model, "tie_adapters"):
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    # tie before loading: a tied adapter is saved once, under the first (encoder) name
    config = LoraConfig.from_pretrained(adapter_dir)
    config.inference_mode = not trainable
    peft_model = tied(get_peft_model(model, config))
    set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter_dir), device=str(model.device)))
    if not trainable:
        peft_model.eval()
    return peft_model
