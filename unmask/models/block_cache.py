"""An exact KV cache of finished blocks, for block-causal families (SDAR; docs/models.md).

Under block-causal attention every layer's state at a token depends only on the
tokens of its block and the blocks before it. Once a block is committed its
keys/values never change, so they are computed once (``append_block``) and every
denoising step of the next block runs that block only (``logits``): its queries
attend to the cached keys/values and to the block's own fresh ones, which are
not kept. The result equals a full block-causal forward of the whole prefix.

Append whole blocks only (the prompt's first ``⌊P/B⌋·B`` tokens, then each
finished block): keys of a block split over two appends would have been computed
without the rest of their block. Append a block after its last token is written,
not from the step that chose that token: that step's keys saw the mask tokens.
Inference only (no gradients).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unmask.models.block_mask import block_causal_mask
from unmask.models.kv_cache import KVHook
from unmask.models.layers import rotary, run_blocks

if TYPE_CHECKING:
    from unmask.models.sdar import SDAR


class BlockKVCache:
    """Per-layer ``[B, H_kv, T, head_dim]`` keys/values of the ``T`` committed columns.

    A step's fresh keys/values are written past the committed ones in the same
    storage, which grows by doubling: the cache is copied only when it grows.
    """

    def __init__(self, model: SDAR) -> None:
        self.model = model
        n_layers = len(model.blocks)
        self._keys: list[torch.Tensor | None] = [None] * n_layers
        self._values: list[torch.Tensor | None] = [None] * n_layers
        #: ``[B, T]`` rotary positions and real-token flags of the committed columns
        self.positions: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Committed columns ``T``."""
        return 0 if self.positions is None else self.positions.shape[1]

    def keys(self, layer: int) -> torch.Tensor:
        """Cached keys of a layer, ``[B, H_kv, T, head_dim]`` (rotated)."""
        return self._keys[layer][:, :, : self.length]

    def values(self, layer: int) -> torch.Tensor:
        return self._values[layer][:, :, : self.length]

    @torch.no_grad()
    def logits(
        self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, n, V]`` logits of the current block's ``n`` columns; nothing is stored.

        ``positions`` ``[B, n]`` are the columns' rotary positions, ``valid`` ``[B, n]``
        is False at padding.
        """
        return self.model.head(self._run(input_ids, positions, valid, store=False))

    @torch.no_grad()
    def append_block(
        self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Run the finished block(s) once and keep their keys/values (no LM head).

        No columns (a prompt shorter than one block has nothing to prefill): nothing to do.
        """
        if input_ids.shape[1]:
            self._run(input_ids, positions, valid, store=True)

    def _run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None, store: bool
    ) -> torch.Tensor:
        model = self.model
        if valid is None:
            valid = torch.ones_like(input_ids, dtype=torch.bool)
        key_positions, key_valid = positions, valid.bool()
        if self.positions is not None:
            key_positions = torch.cat([self.positions, positions], dim=1)
            key_valid = torch.cat([self.valid, key_valid], dim=1)
        mask = block_causal_mask(positions, key_positions, key_valid, model.block_size)
        rope = rotary(positions, model.head_dim, model.rope_theta)
        hooks = [self._hook(layer) for layer in range(len(self._keys))]
        hidden = run_blocks(model.blocks, model.embed(input_ids), rope, mask, False, hooks)
        if store:
            self.positions, self.valid = key_positions, key_valid
        return hidden

    def _hook(self, layer: int) -> KVHook:
        """Write the fresh keys/values past the committed ones; return committed ⊕ fresh."""

        def exchange(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            start, end = self.length, self.length + k.shape[2]
            self._keys[layer] = _room(self._keys[layer], k, end)
            self._values[layer] = _room(self._values[layer], v, end)
            self._keys[layer][:, :, start:end] = k
            self._values[layer][:, :, start:end] = v
            return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

        return exchange

    def select(self, rows: torch.Tensor) -> BlockKVCache:
        """The cache of the given batch rows only (the batch shrinks as rows finish)."""
        kept = BlockKVCache(self.model)
        kept._keys = [None if k is None else k[rows] for k in self._keys]
        kept._values = [None if v is None else v[rows] for v in self._values]
        kept.positions = None if self.positions is None else self.positions[rows]
        kept.valid = None if self.valid is None else self.valid[rows]
        return kept


def _room(buffer: torch.Tensor | None, like: torch.Tensor, needed: int) -> torch.Tensor:
    """``buffer`` with at least ``needed`` columns (doubling), its contents kept."""
    if buffer is not None and buffer.shape[2] >= needed:
        return buffer
    size = needed if buffer is None else max(needed, 2 * buffer.shape[2])
    grown = like.new_zeros(like.shape[0], like.shape[1], size, like.shape[3])
    if buffer is not None:
        grown[:, :, : buffer.shape[2]] = buffer
    return grown
