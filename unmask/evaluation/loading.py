"""The model ``unmask eval`` evaluates: a checkpoint, optionally with a LoRA adapter merged in.

Merging (instead of keeping a ``PeftModel`` wrapper) hands the sampler a plain
``DiffusionLM`` and removes the adapter's per-step overhead.
"""

from __future__ import annotations

from pathlib import Path

from unmask.errors import UserError
from unmask.models import CheckpointError, DiffusionLM, load_model


def load_eval_model(name_or_path: str, adapter: str | None = None) -> DiffusionLM:
    """Load ``name_or_path`` (and merge ``adapter``) in eval mode; bad paths become one-line errors."""
    try:
        model = load_model(name_or_path)
    except CheckpointError as exc:
        raise UserError(f"--model {name_or_path}: {exc}") from None
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"--adapter {adapter}: no adapter_config.json there (is it a LoRA adapter directory?)")
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"--adapter {adapter}: does not fit --model {name_or_path} ({exc})") from None
    return model.eval()
