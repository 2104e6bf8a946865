"""The absorbing-mask sampler's canvas state, shared by its parts (``rollouts.driver``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class MaskedCanvas:
    """The answer being decoded and its bookkeeping; ``[B, L]`` unless said."""

    answer: torch.Tensor  # x_t: committed tokens, hints, the process's noise elsewhere
    masked: torch.Tensor  # the noised positions, tracked: a process need not be able to read them from the tokens
    hint_mask: torch.Tensor
    rounds: torch.Tensor  # the decoding round of each position (the process's ``answer_blocks``)
    commit_step: torch.Tensor  # the global step that committed a position, -1 before
    nfe: torch.Tensor  # [B] forward passes during which the row had work
    steps_run: int = 0  # global step counter (over every round)
    # the current round, set when it starts
    in_reach: torch.Tensor = field(init=False)  # what a step may decode or re-mask (``DiffusionProcess.in_reach``)
    span: tuple[int, int] = field(init=False)  # the block's answer positions
    #: per step of the round: (rows with work, positions to predict), when the rule's schedule fixes them
    plan: list[tuple[int, int]] | None = field(init=False)
    cached: torch.Tensor = field(init=False)  # [B] the last step's forward attended to cached keys/values
