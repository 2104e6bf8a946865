"""Keys and values of every block over the whole canvas, for approximate cached decoding.

Block decoding (docs/sampling.md §5) recomputes only some canvas columns per step and
lets them attend to keys/values of the other columns kept from an earlier step.
The cache holds, per layer, rotated keys and values for *all* columns; a forward
over a column subset overwrites those columns in place and attends to the whole
canvas, so prefix and dual caching differ only in which columns a step
recomputes. It also keeps the last block's output, so that logits of columns a
step does not recompute (e.g. the masked suffix, recorded for RL) are read from
their cached state instead of forcing a recompute. Inference only: the in-place
updates are invisible to autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: given the fresh ``(keys, values)`` of the computed columns, return those of the whole canvas
KVHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class KVCache:
    """Per-layer ``[B, H_kv, L, head_dim]`` keys and values (empty until a full forward fills it)."""

    def __init__(self, n_layers: int, keep_hidden: bool = True) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        #: ``[B, L, d]`` output of the last block: logits of columns not recomputed come from it
        self.hidden: torch.Tensor | None = None
        #: False when every read column is recomputed (a prompt-only cache): the last block
        #: then never runs columns just to store their output
        self.keep_hidden = keep_hidden

    @property
    def filled(self) -> bool:
        return self.keys[-1] is not None

    def final_hidden(self, hidden: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        """Store (``columns=None``) or refresh the last block's output; return it for the whole canvas."""
        if columns is None:
            self.hidden = hidden
        else:
            self.hidden.index_copy_(1, columns, hidden)
        return self.hidden

    def hooks(self, columns: torch.Tensor | None) -> list[KVHook]:
        """One hook per layer: store all columns (``None``) or refresh ``columns`` and read the rest."""
        if columns is not None and not self.filled:
            raise ValueError("KVCache is empty: run a forward over every column first (columns=None)")
        return [self._hook(layer, columns) for layer in range(len(self.keys))]

    def _hook(self, layer: int, columns: torch.Tensor | None) -> KVHook:
        def exchange(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if columns is None:
                self.keys[layer], self.values[layer] = k, v
            else:
                self.keys[layer].index_copy_(2, columns, k)
                self.values[layer].index_copy_(2, columns, v)
            return self.keys[layer], self.values[layer]

        return exchange

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of the given batch rows only (the batch shrinks as rows finish)."""
        kept = KVCache(len(self.keys), self.keep_hidden)
        kept.keys = [None if k is None else k[rows] for k in self.keys]
        kept.values = [None if v is None else v[rows] for v in self.values]
        kept.hidden = None if self.hidden is None else self.hidden[rows]
        return kept
