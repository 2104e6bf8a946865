"""DiffusionGemma's sampler state and step, shared by its parts (``rollouts.driver``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class UniformCanvas:
    """The committed sequence, the encoder cache, and the canvas being denoised; ``[B, ...]``."""

    sequences: torch.Tensor  # prompt and committed blocks
    context: torch.Tensor  # the tail of ``sequences`` not yet encoded into ``cache``
    cache: Any  # the encoder's KV cache (``DiffusionGemma.new_cache``)
    padded: torch.Tensor | None  # left-padding mask over ``sequences`` (None: no padding)
    finished: torch.Tensor  # [B] bool: the row's committed blocks hold an EOS
    stops: list[torch.Tensor] = field(default_factory=list)  # per round, ``[B]`` the n whose argmax became the block
    # the current round, set when it starts
    block: int = field(init=False)
    positions: torch.Tensor = field(init=False)  # [1, L] the canvas's position ids
    decoder_mask: torch.Tensor | None = field(init=False)
    canvas: torch.Tensor = field(init=False)  # [B, L] x_n
    argmax: torch.Tensor = field(init=False)  # [B, L] y_n, the readout candidate
    z: torch.Tensor | None = field(init=False)  # [B, L, V] the last tempered logits: the self-conditioning source
    frozen: torch.Tensor = field(init=False)  # [B] bool: the row stopped (it keeps canvas, argmax and z)
    stop_at: torch.Tensor = field(init=False)  # [B] the step n at which the row stopped (1 if it never did)


@dataclass(frozen=True)
class UniformStep:
    """One decoder step at noise level ``n`` (the canvas and SC input are the step's inputs)."""

    n: int
    temperature: torch.Tensor  # T_n, a float32 scalar
    canvas: torch.Tensor  # [B, L] x_n
    sc: torch.Tensor | None  # [B, L, H] the SC input as soft embeddings (None at a round's first step)
    logits: torch.Tensor  # [B, L, V] z_n = decoder logits / T_n
    probs: torch.Tensor  # [B, L, V] softmax(z_n) in float32
    sample: torch.Tensor  # [B, L] s_n ~ probs (a stopped row's argmax with per-row generators)
    entropy: torch.Tensor  # [B, L] of softmax(z_n)
