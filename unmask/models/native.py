"""What the native families share: config (de)serialisation, forward plumbing, saving.

A family subclasses ``NativeConfig`` with its official ``config.json`` field names
and ``NativeLM`` with its official module names; everything else (padding mask,
rotary positions, gradient checkpointing, checkpoint directory format) is here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from huggingface_hub import save_torch_state_dict
from torch import nn

from unmask.errors import UserError
from unmask.models.base import DiffusionLM, positions_from_mask
from unmask.models.kv_cache import KVCache
from unmask.models.layers import rotary, run_blocks


class Dims(NamedTuple):
    """Sizes of a transformer forward: width, depth, heads, MLP hidden size, vocabulary.

    ``head_dim`` is given where it is not ``width // heads`` (Qwen3 and SDAR: 32 × 128
    query columns on a width of 2560).
    """

    width: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    head_dim: int | None = None


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

    def get_text_config(self, *args: Any, **kwargs: Any) -> NativeConfig:
        """transformers' accessor for a model's text settings (its ``Trainer`` reads the special tokens here)."""
        return self

    def to_json_string(self) -> str:
        """The config as JSON (transformers' logging integrations record it with the run)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


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
    #: raw output at position ``i`` predicts token ``i + logit_shift`` (Dream: 1)
    logit_shift: ClassVar[int] = 0
    #: the chat template's end-of-turn token: an instruct model ends its answer there, not at EOS
    end_of_turn_id: ClassVar[int | None] = None
    #: tokenizer class reading the family's vocabulary files when ``tokenizer_config.json``
    #: names remote code (Dream's ``DreamTokenizer`` is a Qwen2 byte-level BPE)
    tokenizer_class: ClassVar[type | None] = None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The config's EOS plus the end-of-turn token, where the vocabulary has one."""
        ids = super().eos_token_ids
        eot = self.end_of_turn_id
        return ids if eot is None or eot in ids or eot >= self.dims.vocab else (*ids, eot)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head."""
        raise NotImplementedError

    # -- forward ------------------------------------------------------------
    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        *,
        logits_at: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prompt_length: int | None = None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
        outputs: int | None = None,
    ) -> torch.Tensor:
        """Position-aligned logits; see ``DiffusionLM.logits`` for the optional arguments.

        Rotary angles and the padding mask always come from the full canvas, so a
        partial forward sees each column at the position the full one does.
        ``pairs`` (``[N]`` rows, ``[N]`` indices into ``logits_at``) returns ``[N, V]``
        logits of those (row, column) pairs only: rows of a batch need logits at
        different columns, and the LM head is a step's largest product.
        ``outputs`` is how many of the computed columns ``read_columns`` marks for
        ``logits_at``: a caller that counts them with its own reads spares the model
        one (the last block's shape depends on it). ``logits_at`` may repeat a column
        (a caller padding it to a size it knows): the logits are the same.
        """
        b, length = input_ids.shape
        mask = None if attention_mask is None else attention_mask.bool()
        if positions is None:
            positions = (
                torch.arange(length, device=input_ids.device).expand(b, length)
                if mask is None
                else positions_from_mask(mask)
            )
        if columns is not None and cache is None:
            raise ValueError("a forward over a column subset needs the KVCache holding the other columns")
        rope = rotary(positions if columns is None else positions[:, columns], self.head_dim, self.rope_theta)
        key_mask = self._attention_mask(mask, length, columns, prompt_length, input_ids.device)
        sources = self._logit_sources(
            logits_at if logits_at is not None else columns, mask, b, length, input_ids.device
        )
        queries, read = self._last_queries(sources, columns, cache, length, outputs)
        hidden = run_blocks(
            self.blocks,
            self.embed(input_ids if columns is None else input_ids[:, columns]),
            rope,
            key_mask,
            self.gradient_checkpointing,
            None if cache is None else cache.hooks(columns),
            queries,
        )
        if cache is not None and cache.keep_hidden:
            hidden = cache.final_hidden(hidden, columns if queries is None else read)
        elif queries is not None:
            sources = torch.searchsorted(read, sources.contiguous())
        elif columns is not None and sources is not None:  # the computed columns only, nothing stored
            sources = torch.searchsorted(columns, sources.contiguous())
        if sources is not None:
            hidden = hidden.gather(1, sources[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.head(hidden if pairs is None else hidden[pairs])

    def _last_queries(
        self,
        sources: torch.Tensor | None,
        columns: torch.Tensor | None,
        cache: KVCache | None,
        length: int,
        outputs: int | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(queries, read)``: the last block's output columns, as indices into the computed
        columns and as canvas columns (ascending); ``(None, None)`` for all of them.

        Only columns whose logits are read need the last block's attention output and
        MLP (an exact saving: every column's keys/values still enter its attention).
        Not with gradients, and not when a cache is being filled (it keeps every
        column's final state); a cached partial forward refreshes the final state of
        the read columns only, the others are never read before the next fill.
        Their number sets a shape: ``outputs`` when the caller counted them, else one host read.
        """
        if sources is None or torch.is_grad_enabled() or (cache is not None and cache.keep_hidden and columns is None):
            return None, None
        computed = torch.arange(length, device=sources.device) if columns is None else columns
        inside = torch.zeros(length, dtype=torch.bool, device=sources.device).index_fill_(0, computed, True)
        hit = inside & torch.zeros_like(inside).index_fill_(0, sources.reshape(-1), True)
        if outputs is None:
            outputs = int(hit.sum())
        if outputs in (0, len(computed)):
            return None, None
        read = torch.nonzero_static(hit, size=outputs).squeeze(1)
        return torch.searchsorted(computed, read), read

    def read_columns(
        self, wanted: torch.Tensor, attention_mask: torch.Tensor | None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[L]`` bool: the columns whose last-block output gives logits at the ``wanted`` (``[L]`` bool) columns.

        The same columns for every row unless the family shifts its logits (Dream:
        a row's first real token reads itself), so the union over the batch rows
        (``rows``, ``[B]`` bool: only those).
        """
        batch = attention_mask.shape[0] if attention_mask is not None else 1 if rows is None else len(rows)
        length = wanted.shape[0]
        mask = None if attention_mask is None else attention_mask.bool()
        sources = self._logit_sources(None, mask, batch, length, wanted.device)
        if sources is None:
            return wanted
        weight = wanted.expand(batch, -1) if rows is None else wanted & rows[:, None]
        reads = torch.zeros(length, dtype=torch.long, device=wanted.device)
        return reads.index_add_(0, sources.reshape(-1), weight.reshape(-1).long()) > 0

    def _attention_mask(
        self,
        mask: torch.Tensor | None,
        length: int,
        columns: torch.Tensor | None,
        prompt_length: int | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """Bool ``[B, 1, 1, L]`` padding mask, or ``[B | 1, 1, n, L]`` when the prompt is blind to the answer.

        With ``prompt_attends_answer=False`` prompt queries see only prompt keys, so
        the prompt's keys/values never depend on the answer and a prefix cache of
        them stays exact while the answer changes.
        """
        key_mask = None if mask is None else mask[:, None, None, :]
        if getattr(self.config, "prompt_attends_answer", True):
            return key_mask
        if prompt_length is None:
            raise ValueError(
                f"this {self.family} model's prompt does not attend to the answer (prompt_attends_answer=False): "
                "pass prompt_length to logits()"
            )
        queries = torch.arange(length, device=device) if columns is None else columns
        keys = torch.arange(length, device=device)
        blind = (queries[:, None] < prompt_length) & (keys[None, :] >= prompt_length)
        allowed = ~blind[None, None]
        return allowed if key_mask is None else allowed & key_mask

    def _logit_sources(
        self,
        wanted: torch.Tensor | None,
        mask: torch.Tensor | None,
        batch: int,
        length: int,
        device: torch.device,
    ) -> torch.Tensor | None:
        """``[B, n]`` column whose block output gives the logits at each wanted column.

        ``None`` means "every column, from itself" (no gather needed). With a
        ``logit_shift`` (Dream) it is the column before, except for a row's first
        real token (and its left padding), which keep their own output.
        """
        if self.logit_shift == 0:
            return None if wanted is None else wanted.expand(batch, -1)
        cols = torch.arange(length, device=device) if wanted is None else wanted
        index = torch.arange(length, device=device).expand(batch, length)
        first = (index if mask is None else positions_from_mask(mask))[:, cols] == 0
        return torch.where(first, cols, cols - self.logit_shift)

    def new_cache(self, keep_hidden: bool = True) -> KVCache:
        """An empty cache for this model's blocks (a forward with ``columns=None`` fills it).

        ``keep_hidden=False``: the caller reads logits only at columns it recomputes.
        """
        return KVCache(len(self.blocks), keep_hidden)

    @property
    def dims(self) -> Dims:
        """The sizes that set a forward's cost (read by the FLOP counter)."""
        raise NotImplementedError

    # -- training switches ---------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None, **options: Any) -> None:
        """Recompute block activations in backward (HF-compatible name, used by peft and transformers' Trainer).

        Every block is recomputed; the Trainer's extra ``options`` (``every_n_layers``, ``offload``) are not used.
        """
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
