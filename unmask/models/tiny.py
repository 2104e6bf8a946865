"""The built-in tiny family: a LLaDA-shaped model small enough for every CPU test.

It is LLaDA itself (same modules, names and LoRA targets) with a small config and
the task-alphabet tokenizer, so that samplers and estimators are exercised on the
code path a real checkpoint takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from unmask.models.llada import LLaDA, LLaDAConfig
from unmask.models.native import CheckpointError, NativeLM
from unmask.models.tiny_tokenizer import build_tiny_tokenizer

#: the token ids a Qwen-style tiny config (block, DiffusionGemma) takes from the task tokenizer
QWEN_TOKENIZER_FIELDS = ("vocab_size", "mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class TinyConfig(LLaDAConfig):
    """Architecture of a tiny model (~0.9 M parameters by default)."""

    model_type: ClassVar[str] = "unmask-tiny"
    #: derived from the tokenizer, never set by the user
    tokenizer_fields: ClassVar[tuple[str, ...]] = (
        "vocab_size", "embedding_size", "mask_token_id", "eos_token_id", "pad_token_id",
    )  # fmt: skip

    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_layers: int = 4
    mlp_hidden_size: int = 384
    rope_theta: float = 10000.0
    max_sequence_length: int = 512
    #: False: prompt columns attend only to the prompt (answer columns still see everything),
    #: which makes a prefix KV cache exact; the model then needs ``prompt_length`` in ``logits``
    prompt_attends_answer: bool = True
    # token ids: filled in from the tokenizer by ``tiny()``
    vocab_size: int = 0
    embedding_size: int | None = 0
    mask_token_id: int = 0
    eos_token_id: int | list[int] = 0
    pad_token_id: int | None = 0


C = TypeVar("C")
M = TypeVar("M", bound=NativeLM)


class TinyLM(LLaDA):
    family = "tiny"
    config_class = TinyConfig


def user_config(config_class: type[C], config: C | dict[str, Any] | None) -> C:
    """The user's architecture settings as ``config_class``; token ids are not theirs to set."""
    if isinstance(config, config_class):
        return config
    settings = dict(config or {})
    allowed = {f.name for f in dataclasses.fields(config_class)} - {"extra", *config_class.tokenizer_fields}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise CheckpointError(
            f"{config_class.model_type} model config: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return config_class(**settings)


def fresh_model(model_class: type[M], config: Any = None, seed: int = 0) -> M:
    """A fresh, deterministically initialised model of a tiny family with the task-alphabet tokenizer (eval mode)."""
    tokenizer = build_tiny_tokenizer()
    ids = {
        "vocab_size": len(tokenizer), "embedding_size": len(tokenizer), "mask_token_id": tokenizer.mask_token_id,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }  # fmt: skip
    config_class = model_class.config_class
    cfg = dataclasses.replace(
        user_config(config_class, config), **{name: ids[name] for name in config_class.tokenizer_fields}
    )
    model = model_class(cfg, tokenizer)
    model.init_weights(seed)
    return model.eval()


def tiny(config: TinyConfig | dict[str, Any] | None = None, seed: int = 0) -> TinyLM:
    """A fresh, deterministically initialised tiny model with its tokenizer (eval mode)."""
    return fresh_model(TinyLM, config, seed)
