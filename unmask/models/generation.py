"""A checkpoint's decoding defaults, read from its ``generation_config.json``.

LLaDA and Dream ship this file; the tiny models do too, so ``unmask sample`` and
``unmask eval`` decode the way a model was trained to answer (the tiny Countdown
model: 16 tokens in 16 steps) unless the command line says otherwise. unmask reads
its sampler's own keys (``SamplerConfig``'s fields, checked by its rules) and the
Hugging Face name where the concept is the same (``max_new_tokens`` for the answer
length); other keys (token ids, Dream's ``alg``) are left to their owners. ``task`` names the benchmark a model was made for, so a
first ``unmask sample`` can pose one of its held-out problems.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, create_model, model_validator

from unmask.errors import UserError
from unmask.models.loading import resolve_checkpoint
from unmask.rollouts.sampler_config import SamplerConfig, declared_settings

GENERATION_CONFIG = "generation_config.json"

#: a field per sampler setting (None: not declared) and the checkpoint's task
_Declared = create_model(
    "_Declared",
    __config__=ConfigDict(frozen=True, extra="forbid"),
    task=(str | None, None),
    **{name: (Any, None) for name in SamplerConfig.model_fields},
)


class GenerationDefaults(_Declared):
    """Sampler settings a checkpoint declares, checked by ``SamplerConfig``'s rules; ``None`` where it declares nothing."""

    @model_validator(mode="before")
    @classmethod
    def _sampler_rules(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        declared = {k: v for k, v in data.items() if k in SamplerConfig.model_fields and v is not None}
        return {**data, **declared_settings(declared)}

    def sampler_settings(self, own_length: bool = True) -> dict[str, Any]:
        """The declared sampler settings (``SamplerConfig`` keywords) that apply. Steps and block
        belong to the declared answer length, so without ``own_length`` (another length is used,
        or none is declared: Dream declares 512 steps but no length) they are left out."""
        own_length = own_length and self.gen_length is not None
        return {
            k: v for k in SamplerConfig.model_fields
            if (v := getattr(self, k)) is not None and (own_length or k not in ("steps", "block_length"))
        }

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def read_generation_defaults(name_or_path: str | Path) -> GenerationDefaults:
    """The defaults in ``name_or_path``'s ``generation_config.json`` (all ``None`` if it has none)."""
    path = resolve_checkpoint(name_or_path) / GENERATION_CONFIG
    if not path.is_file():
        return GenerationDefaults()
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if "gen_length" not in raw and "max_new_tokens" in raw:
        raw = {**raw, "gen_length": raw["max_new_tokens"]}
    declared = {k: raw[k] for k in SamplerConfig.model_fields if raw.get(k) is not None}
    task = raw.get("task")
    if task is not None and not isinstance(task, str):
        raise UserError(f"{path}: task must be a benchmark name, got {task!r}")
    try:
        return GenerationDefaults(task=task, **declared_settings(declared))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def write_generation_defaults(out_dir: str | Path, defaults: GenerationDefaults) -> Path:
    """Write ``generation_config.json`` (sorted keys, so rebuilt checkpoints compare byte for byte)."""
    path = Path(out_dir) / GENERATION_CONFIG
    path.write_text(json.dumps(defaults.to_json(), indent=2, sort_keys=True) + "\n")
    return path
