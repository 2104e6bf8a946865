"""The exact KV-cached step forward of block-causal families (``cache="block"``; docs/diffusion.md).

Under block-causal attention a committed block's keys/values never change, so they
are appended to the family's ``BlockKVCache`` once (the prompt's whole blocks at the
first round, then each block when its round ends) and every step runs only the
current block: its queries attend to the cache and to the block's own fresh
keys/values. The logits equal a full block-causal forward of the canvas, so the
tokens equal those of ``cache="none"``.

Blocks lie on the global grid of compact positions (the row's first real token is
position 0), so with left padding of different lengths each row's current block
sits at its own canvas columns; each call gathers them into a ``[n, block_size]``
batch (``valid`` False past the canvas end).
"""

from __future__ import annotations

import torch

from unmask.errors import UserError
from unmask.models.base import DiffusionLM, positions_from_mask
from unmask.rollouts.cache import holds_rows
from unmask.rollouts.flops import forward_flops


class BlockStepForward:
    """Logits of a denoising step for a subset of rows, from the exact cache of finished blocks."""

    #: only the current block's logits exist: the sampler reads (and records) no other position
    predicts_all = False
    #: the model is a native family, so every call is accounted in FLOPs
    native = True

    def __init__(self, model: DiffusionLM, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 gen_length: int, *, cfg_scale: float = 0.0) -> None:
        if model.process.attention != "block_causal" or not hasattr(model, "new_block_cache"):
            raise UserError(f"cache='block' needs a block-diffusion family (SDAR); this {model.family} model "
                            "attends over the whole canvas: use cache='none', 'prefix' or 'dual'")
        if cfg_scale > 0:
            raise UserError("cache='block' does not run classifier-free guidance: use cache='none' with cfg_scale")
        self.model, self.size = model, model.process.block_size
        batch, self.plen = prompt_ids.shape
        self.prompt_ids, self.length = prompt_ids, self.plen + gen_length
        valid = (torch.ones(batch, self.length, dtype=torch.bool, device=prompt_ids.device)
                 if attention_mask is None else attention_mask.bool())
        self.pad = (~valid[:, : self.plen]).sum(1)  # [B] left padding per row
        self.first_block = (self.plen - self.pad) // self.size  # [B] block holding the first answer token
        self.positions = positions_from_mask(valid)
        self._flops = torch.zeros(batch, dtype=torch.long, device=prompt_ids.device)
        self.cached = False
        self.round = 0
        self._new_round = True
        self._cache = None
        self._rows: torch.Tensor | None = None
        self._blocks_cached = 0  # answer rounds appended after the prompt's whole blocks

    @property
    def flops(self) -> torch.Tensor:
        """``[B]`` long on the CPU: each row's forward FLOPs so far (read from the device here, once)."""
        return self._flops.cpu()

    def read_ahead(self, answer: torch.Tensor, predict: torch.Tensor, block: tuple[int, int]) -> None:
        """Nothing for a caller to read ahead: only a round's first call reads, and what depends on the cache."""
        return None

    def new_block(self, round_index: int = 0) -> None:
        """Enter decoding round ``round_index``; finished rounds are appended at the next call."""
        self.round, self._new_round = round_index, True

    def __call__(self, answer: torch.Tensor, rows: torch.Tensor, predict: torch.Tensor,
                 block: tuple[int, int], n_pred: int) -> torch.Tensor:
        """``[N, V]`` logits of ``rows`` (ascending) at the ``N = n_pred`` ``predict`` positions (all inside
        their current blocks), in row-major order.

        Only a round's first call reads the device (whether the cache holds the round's rows).
        """
        canvas = torch.cat([self.prompt_ids, answer], dim=1)
        first, self._new_round = self._new_round, False
        if not holds_rows(self._rows, rows, first):
            self._fill(canvas, rows)
        elif len(rows) != len(self._rows):
            self._cache, self._rows = self._cache.select(torch.searchsorted(self._rows, rows)), rows
        while self._blocks_cached < self.round:
            ids, positions, valid = self._block(canvas, rows, self._blocks_cached)
            self._append(rows, ids, positions, valid)
            self._blocks_cached += 1
        ids, positions, valid = self._block(canvas, rows, self.round)
        logits = self._cache.logits(ids, positions, valid)  # [n, size, V]
        self._account(rows, int(valid.shape[1]), predict.sum(1))
        self.cached = self._cache.length > 0
        row, column = torch.nonzero_static(predict, size=n_pred).unbind(1)
        return logits[row, column + self.plen - self._start(rows, self.round)[row]]

    def _start(self, rows: torch.Tensor, round_index: int) -> torch.Tensor:
        """Canvas column where each row's block of answer round ``round_index`` starts."""
        return self.pad[rows] + (self.first_block[rows] + round_index) * self.size

    def _block(self, canvas: torch.Tensor, rows: torch.Tensor, round_index: int) -> tuple[torch.Tensor, ...]:
        """Token ids, positions and validity ``[n, size]`` of each row's block of a round."""
        columns = self._start(rows, round_index)[:, None] + torch.arange(self.size, device=canvas.device)
        valid = columns < self.length
        columns = columns.clamp(max=self.length - 1)
        ids = canvas[rows[:, None], columns]
        return ids, self.positions[rows[:, None], columns], valid

    def _fill(self, canvas: torch.Tensor, rows: torch.Tensor) -> None:
        """A new cache for ``rows``: the prompt's whole blocks, then every finished answer round."""
        self._cache, self._rows = self.model.new_block_cache(), rows
        width = int(self.first_block[rows].max()) * self.size  # a read per refill (a round's first call at most)
        if width:
            offsets = torch.arange(width, device=canvas.device)
            columns = (self.pad[rows][:, None] + offsets).clamp(max=self.plen - 1)
            valid = offsets < (self.first_block[rows] * self.size)[:, None]
            self._append(rows, canvas[rows[:, None], columns], self.positions[rows[:, None], columns], valid)
        self._blocks_cached = 0

    def _append(self, rows: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> None:
        keys = self._cache.length + ids.shape[1]
        self._cache.append_block(ids, positions, valid)
        self._flops.index_add_(0, rows, torch.full_like(rows, forward_flops(self.model.dims, ids.shape[1], keys, 0)))

    def _account(self, rows: torch.Tensor, width: int, heads: torch.Tensor) -> None:
        """Charge each row (on the device) the block's forward over cache ⊕ block, and its LM-head columns."""
        step = forward_flops(self.model.dims, width, self._cache.length + width, 0)
        self._flops.index_add_(0, rows, step + heads * forward_flops(self.model.dims, 0, 0, 1))
