"""The model forward of one denoising step under a cache mode (sampling.md §5).

``none`` runs the whole canvas every step (the reference). ``prefix`` and
``dual`` run the whole canvas at a block's first step, filling a ``KVCache``, and
later steps of the block recompute only the block and everything right of it
(``prefix``) or only the block (``dual``), attending to cached keys/values of the
other columns — an approximation whose accuracy cost the benchmark reports.
With ``partial_head`` the LM head runs only where the sampler reads logits.
Every call is accounted per batch row: FLOPs, columns run through the blocks,
and whether the step used cached states.
"""

from __future__ import annotations

import torch

from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.models.kv_cache import KVCache
from unmask.rollouts.flops import forward_flops

CACHE_MODES = ("none", "prefix", "dual")


class StepForward:
    """Logits of a denoising step for a subset of batch rows, with cost accounting."""

    def __init__(
        self,
        model: DiffusionLM,
        prompt_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        gen_length: int,
        *,
        cache: str = "none",
        cfg_scale: float = 0.0,
        partial_head: bool = True,
        refresh: int = 0,
    ) -> None:
        if cache not in CACHE_MODES:
            raise UserError(f"unknown cache {cache!r}: use one of {', '.join(CACHE_MODES)}")
        #: families built on ``NativeLM`` take the fast-forward arguments; others get plain calls
        self.native = hasattr(model, "new_cache")
        if cache != "none" and not self.native:
            raise UserError(f"cache={cache!r} needs a native unmask model family (tiny, llada, dream)")
        if refresh < 0:
            raise UserError(f"cache_refresh must be >= 0 (0: refill only at a block's first step), got {refresh}")
        self.model, self.mode, self.cfg_scale, self.partial_head = model, cache, cfg_scale, partial_head
        #: with a cache, every ``refresh``-th step of a block runs the full canvas again (0: only the first)
        self.refresh = refresh
        self._age = 0  # steps since the cache was filled
        self.prompt_ids, self.mask = prompt_ids, attention_mask  # mask covers the whole canvas
        batch, self.plen = prompt_ids.shape
        self.length = self.plen + gen_length
        self.flops = torch.zeros(batch, dtype=torch.long)
        #: canvas columns run through the blocks, summed over steps and passes
        self.columns_run = torch.zeros(batch, dtype=torch.long)
        #: whether the last call attended to cached keys/values
        self.cached = False
        self._cache: KVCache | None = None
        self._cache_rows: torch.Tensor | None = None
        self._filled = prompt_ids.new_empty(0)  # answers of the cached rows when the cache was filled

    def new_block(self) -> None:
        """Drop the cache: the block's first step runs the full canvas again."""
        self._cache = self._cache_rows = None

    def __call__(
        self, answer: torch.Tensor, rows: torch.Tensor, predict: torch.Tensor, block: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [n, m, V], cols [m])``: logits of ``rows`` at answer columns ``cols``.

        ``answer`` is the full ``[B, L]`` answer canvas, ``rows`` the ``n`` batch rows
        to run, ``predict`` ``[n, L]`` where the sampler reads logits (``cols`` covers
        every column predicted in any of those rows), ``block`` the answer span.
        """
        need = predict.any(0).nonzero().squeeze(1)
        x = torch.cat([self.prompt_ids[rows], answer[rows]], dim=1)
        mask = None if self.mask is None else self.mask[rows]
        columns = self._columns(answer[rows], rows, block)
        at = need + self.plen
        if not self.partial_head:  # the head on every computed column, as an uncached model does
            at = torch.arange(self.length, device=x.device) if columns is None else torch.unique(torch.cat([columns, at]))
        logits = self._guided(x, mask, at, columns)
        if not self.partial_head:
            logits = logits[:, torch.searchsorted(at, need + self.plen)]
        self._account(rows, columns, at)
        return logits, need

    def _columns(self, answer: torch.Tensor, rows: torch.Tensor, block: tuple[int, int]) -> torch.Tensor | None:
        """Canvas columns to recompute (``None``: all, refilling the cache).

        The block (and for ``prefix`` its right side), plus any column whose token
        changed since the cache was filled (RCR re-masks committed tokens of earlier
        blocks): their cached states would still show the old token. Shrinks the
        cache with the batch when rows finish.
        """
        if self.mode == "none":
            return None
        stale = self.refresh and self._age >= self.refresh - 1
        if stale or self._cache is None or self._cache_rows is None or not torch.isin(rows, self._cache_rows).all():
            self._cache, self._cache_rows, self._filled, self._age = self.model.new_cache(), rows, answer, 0
            return None
        self._age += 1
        if not torch.equal(rows, self._cache_rows):
            keep = torch.searchsorted(self._cache_rows, rows)
            self._filled = self._filled[keep]
            if self.cfg_scale > 0:
                keep = torch.cat([keep, keep + len(self._cache_rows)])
            self._cache, self._cache_rows = self._cache.select(keep), rows
        end = self.length if self.mode == "prefix" else self.plen + block[1]
        span = torch.arange(self.plen + block[0], end, device=rows.device)
        changed = (answer != self._filled).any(0).nonzero().squeeze(1) + self.plen
        return torch.unique(torch.cat([span, changed]))

    def _guided(
        self, x: torch.Tensor, mask: torch.Tensor | None, at: torch.Tensor, columns: torch.Tensor | None
    ) -> torch.Tensor:
        """Model logits, guided (§1: ``un + (w + 1)(cond − un)``, prompt masked in ``un``)."""
        if self.cfg_scale <= 0:
            return self._logits(x, mask, at, columns)
        uncond = x.clone()
        real = torch.ones_like(x[:, : self.plen], dtype=torch.bool) if mask is None else mask[:, : self.plen].bool()
        uncond[:, : self.plen] = uncond[:, : self.plen].masked_fill(real, self.model.mask_token_id)
        both = self._logits(torch.cat([x, uncond]), None if mask is None else torch.cat([mask, mask]), at, columns)
        cond, un = both.chunk(2)
        return un + (self.cfg_scale + 1) * (cond - un)

    def _logits(
        self, x: torch.Tensor, mask: torch.Tensor | None, at: torch.Tensor, columns: torch.Tensor | None
    ) -> torch.Tensor:
        if not self.native:
            return self.model.logits(x, attention_mask=mask, prompt_length=self.plen)[:, at]
        return self.model.logits(
            x, attention_mask=mask, logits_at=at, columns=columns, cache=self._cache, prompt_length=self.plen
        )

    def _account(self, rows: torch.Tensor, columns: torch.Tensor | None, at: torch.Tensor) -> None:
        if not self.native:
            return
        passes = 2 if self.cfg_scale > 0 else 1
        run = self.length if columns is None else len(columns)
        step = forward_flops(self.model.dims, run, self.length, len(at))
        self.flops[rows.cpu()] += passes * step
        self.columns_run[rows.cpu()] += passes * run
        self.cached = columns is not None
