"""The model ``unmask eval`` evaluates: a checkpoint, optionally with a LoRA adapter merged in.

Merging (instead of keeping a ``PeftModel`` wrapper) hands the sampler a plain
``DiffusionLM`` and removes the adapter's per-step overhead.
"""

from __future__ import annotations

from unmask.errors import UserError
from unmask.models import CheckpointError, DiffusionLM, load_model


def load_eval_model(name_or_path: str, adapter: str | None = None) -> DiffusionLM:
    """Load ``name_or_path`` (and merge ``adapter``) in eval mode; bad paths become one-line errors."""
    try:
        model = load_model(name_or_path)
    except CheckpointError as exc:
        raise UserError(f"--model {name_or_path}: {exc}") from None
    if adapter is not None:
        from unmask.models.export import merge_adapter
        from unmask.models.lora import load_adapter

        try:
            model = merge_adapter(load_adapter(model, adapter))
        except CheckpointError as exc:
            raise UserError(f"--adapter {adapter}: {exc}") from None
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"--adapter {adapter}: does not fit --model {name_or_path} ({exc})") from None
    return model.eval()
