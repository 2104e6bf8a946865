"""A checkpoint's decoding defaults, read from its ``generation_config.json``.

LLaDA and Dream ship this file; the tiny models do too, so ``unmask sample`` and
``unmask eval`` decode the way a model was trained to answer (the tiny Countdown
model: 16 tokens in 16 steps) unless the command line says otherwise. unmask reads
its sampler's own keys and the Hugging Face name where the concept is the same
(``max_new_tokens`` for the answer length); other keys (token ids, Dream's ``alg``)
are left to their owners. ``task`` names the benchmark a model was made for, so a
first ``unmask sample`` can pose one of its held-out problems.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unmask.errors import UserError
from unmask.models.loading import resolve_checkpoint

GENERATION_CONFIG = "generation_config.json"
_TYPES: dict[str, type | tuple[type, ...]] = {
    "gen_length": int, "steps": int, "block_length": int, "temperature": (int, float), "remasking": str, "task": str,
}


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampler settings a checkpoint declares; ``None`` where it declares nothing."""

    gen_length: int | None = None
    steps: int | None = None
    block_length: int | None = None
    temperature: float | None = None
    remasking: str | None = None
    task: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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
    values = {}
    for key, kind in _TYPES.items():
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value <= 0):
            raise UserError(f"{path}: {key} must be a {'positive integer' if kind is int else 'number or string'}, got {value!r}")
        values[key] = value
    return GenerationDefaults(**values)


def write_generation_defaults(out_dir: str | Path, defaults: GenerationDefaults) -> Path:
    """Write ``generation_config.json`` (sorted keys, so rebuilt checkpoints compare byte for byte)."""
    path = Path(out_dir) / GENERATION_CONFIG
    path.write_text(json.dumps(defaults.to_json(), indent=2, sort_keys=True) + "\n")
    return path
