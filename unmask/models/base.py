"""The one interface through which unmask talks to a masked diffusion LM.

Every family (tiny, LLaDA, Dream) is an ``nn.Module`` subclass of ``DiffusionLM``.
Family quirks (Dream's shifted logits, LLaDA's weight names) stay inside the
family module so that samplers, estimators and objectives see one contract:
``logits(input_ids, attention_mask)[:, i]`` predicts token ``i``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.diffusion.process import DiffusionProcess
from unmask.models.kv_cache import KVCache


def id_tuple(ids: int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A config's token id field (one id or a list of them, as HF configs write it) as a tuple."""
    return tuple(int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]))


class DiffusionLM(nn.Module):
    """Base class of every model family.

    Subclasses set the class attributes below and implement ``logits``.
    ``attention_mask`` is ``[B, L]`` (1/True = real token, 0/False = left padding);
    padded positions are excluded from attention and positions are counted from
    the first real token, so a left-padded row gives the same logits at its real
    positions as the unpadded sequence alone.
    """

    family: str = "base"
    #: some trainable parameters may get no gradient in a step (DDP must then look for them)
    partly_used: bool = False
    #: names of the linear modules LoRA adapts by default (the family's own names)
    lora_targets: tuple[str, ...] = ()

    def __init__(self, config: Any, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer

    # -- token ids ---------------------------------------------------------
    @property
    def mask_token_id(self) -> int:
        return int(self.config.mask_token_id)

    @property
    def process(self) -> DiffusionProcess:
        """The family's diffusion process (docs/diffusion.md): absorbing mask noise over one canvas.

        Samplers, trajectories, caches and estimators ask it how text is noised and
        scored; a family with another process (block-causal, uniform noise) overrides this.
        """
        blind = not getattr(self.config, "prompt_attends_answer", True)
        return AbsorbingMask(self.mask_token_id, "prompt_blind" if blind else "full")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Ids that end an answer; everything after the first one is padding."""
        return id_tuple(self.config.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.config, "pad_token_id", None)
        return int(pad if pad is not None else self.eos_token_ids[0])

    # -- forward -----------------------------------------------------------
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
    ) -> torch.Tensor:
        """Position-aligned logits ``[B, L, V]`` (``[B, n, V]`` for ``n`` requested columns).

        ``prompt_length`` says that the first ``prompt_length`` canvas columns are the
        (left-padded) prompt; callers always pass it when they know it, and models whose
        prompt does not attend to the answer (``prompt_attends_answer=False``) require it.

        Optional, for fast rollouts (docs/sampling.md §5): ``logits_at`` (``[n]`` long
        canvas columns) applies the LM head only there, since the full ``[B, L, V]``
        tensor is a step's largest for a big vocabulary. ``columns`` (``[m]`` long)
        runs only those canvas columns through the blocks, attending to the other
        columns' cached keys/values; their cached states are refreshed in place, and
        logits elsewhere (``logits_at`` defaults to ``columns``) come from cached
        states. ``cache`` without ``columns`` runs the full canvas and fills it.
        """
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        **fast: Any,
    ) -> torch.Tensor:
        return self.logits(input_ids, attention_mask=attention_mask, positions=positions, **fast)

    # -- LoRA ----------------------------------------------------------------
    def prepare_merge(self) -> None:
        """Called by ``unmask.models.export.merge_adapter`` before peft's ``merge_and_unload``.

        peft folds each adapter module once; a family that runs a module under two names
        (DiffusionGemma's tied encoder/decoder) gives the second name its plain module back
        here. Nothing to do for the others.
        """

    # -- prompts -----------------------------------------------------------
    def format_prompt(self, text: str) -> str:
        """Wrap a user message in the family's chat template (identity if none)."""
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions counted from each row's first real token (left padding → 0)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0)
