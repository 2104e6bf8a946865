"""The model forward of one denoising step under a cache mode (docs/sampling.md §5).

``none`` runs the whole canvas every step (the reference). ``prompt`` runs the
prompt once and every answer column at every step: exact, and allowed only for a
model whose prompt does not attend to the answer. ``prefix`` and
``dual`` run the whole canvas at a block's first step, filling a ``KVCache``, and
later steps of the block recompute only the block and everything right of it
(``prefix``) or only the block (``dual``), attending to cached keys/values of the
other columns — an approximation whose accuracy cost the benchmark reports.
``delayed`` is ``dual`` that also reuses a committed column's keys/values once it
has been run with its token. ``block`` is the exact cache of block-causal families
(``rollouts.block_forward``).
With ``partial_head`` the LM head runs only where the sampler reads logits.
Every call is accounted per batch row, on the device: FLOPs, and whether the step
used cached states.
"""

from __future__ import annotations

import torch

from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.models.kv_cache import KVCache
from unmask.rollouts.flops import forward_flops
from unmask.rollouts.options import CACHE_MODES


class StepForward:
    """Logits of a denoising step for a subset of batch rows, with cost accounting."""

    #: the canvas runs whole, so the sampler may read (and record) logits at any position
    predicts_all = True

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
        if cache != "none" and model.process.attention == "block_causal":
            raise UserError(
                f"cache={cache!r} approximates full attention; a block-diffusion family decodes exactly with "
                "cache='block' (its finished blocks' keys/values never change) or cache='none'"
            )
        if cache == "prompt" and getattr(model.config, "prompt_attends_answer", True):
            raise UserError(
                "cache='prompt' is exact only for a model whose prompt does not attend to the answer "
                "(prompt_attends_answer: false); this model's prompt does: use cache='none' (exact) or 'prefix'/'dual'"
            )
        if refresh < 0:
            raise UserError(f"cache_refresh must be >= 0 (0: refill only at a block's first step), got {refresh}")
        self.model, self.mode, self.cfg_scale, self.partial_head = model, cache, cfg_scale, partial_head
        #: with a cache, every ``refresh``-th step of a block runs the full canvas again (0: only the first)
        self.refresh = refresh
        self._age = 0  # steps since the cache was filled
        self.prompt_ids, self.mask = prompt_ids, attention_mask  # mask covers the whole canvas
        batch, self.plen = prompt_ids.shape
        self.length = self.plen + gen_length
        self._flops = torch.zeros(batch, dtype=torch.long, device=prompt_ids.device)
        #: whether the last call attended to cached keys/values
        self.cached = False
        self._cache: KVCache | None = None
        self._cache_rows: torch.Tensor | None = None
        self._new_round = True
        self._filled = prompt_ids.new_empty(0)  # answers of the cached rows when the cache was filled

    @property
    def flops(self) -> torch.Tensor:
        """``[B]`` long on the CPU: each row's forward FLOPs so far (read from the device here, once)."""
        return self._flops.cpu()

    def new_block(self, round_index: int = 0) -> None:
        """Drop the cache: the block's first step runs the full canvas again (the prompt's stays valid)."""
        self._new_round = True
        if self.mode != "prompt":
            self._cache = self._cache_rows = None

    def __call__(
        self, answer: torch.Tensor, rows: torch.Tensor, predict: torch.Tensor, block: tuple[int, int], n_pred: int,
        ahead: list[int] | None = None,
    ) -> torch.Tensor:
        """``[N, V]`` logits of ``rows`` at their predicted columns, in row-major order.

        ``answer`` is the full ``[B, L]`` answer canvas, ``rows`` the ``n`` batch rows
        to run (ascending), ``predict`` ``[n, L]`` where the sampler reads logits,
        ``n_pred`` their number ``N`` (the caller knows it), ``block`` the answer span.
        With the partial head the LM head runs on exactly those ``N`` (row, column) pairs.
        ``ahead``: the counts ``read_ahead`` gave for this step, read by the caller.
        """
        x = torch.cat([self.prompt_ids[rows], answer[rows]], dim=1)
        mask = None if self.mask is None else self.mask[rows]
        columns = self._columns(answer[rows], rows, block)
        need = torch.cat([predict.new_zeros(self.plen), predict.any(0)])  # [P + L] columns some row reads
        partial = self.partial_head and self.native  # the model runs its head on the read pairs only
        counted = None if ahead else self._counted(need, columns, mask, partial)
        counts = ahead or ([] if counted is None else counted.tolist())
        run = self.length if columns is None else counts[0]
        computed = None if columns is None else torch.nonzero_static(columns, size=run).squeeze(1)
        row, col = torch.nonzero_static(predict, size=n_pred).unbind(1)
        last = counts[-1] if counts else None  # the model's last-block columns, where it runs part of them
        if partial:  # the read columns, padded to a size the host knows: one per pair at most, inside the answer
            at = self._padded(need, n_pred)
            logits = self._guided(x, mask, at, computed, (row, torch.searchsorted(at, col + self.plen)), last)
            heads = predict.sum(1)
            outputs = self._outputs(columns is None, need, counts)
        else:  # the head on every computed column, as an uncached model does; then the predicted pairs
            at = None if columns is None else torch.nonzero_static(need | columns, size=counts[1]).squeeze(1)
            col = col + self.plen if at is None else torch.searchsorted(at, col + self.plen)
            logits = self._guided(x, mask, at, computed, None, last)[row, col]
            heads, outputs = torch.full_like(rows, self.length if at is None else counts[1]), None
        self._account(rows, run, heads, outputs)
        self.cached = columns is not None
        return logits

    def read_ahead(self, answer: torch.Tensor, predict: torch.Tensor, block: tuple[int, int]) -> torch.Tensor | None:
        """``[k]`` long on the device: the counts the step's call would read, for a caller reading the device anyway.

        ``answer`` and ``predict`` ``[B, L]`` over every row (the call gets the rows with
        work). ``None`` where the call reads nothing, or at a ``prompt`` round's first
        call (whether its cache holds the round's rows is read there).
        """
        fills = self._fills()
        if fills is None:
            return None
        active = predict.any(1)
        need = torch.cat([predict.new_zeros(predict.shape[0], self.plen), predict], dim=1).any(0)
        columns = None
        if not fills:  # the rows with work are among the cache's rows (holds_rows)
            held = self._cache_rows
            columns = self._recompute(answer[held], self._filled, block, active[held])
        return self._counted(need, columns, self.mask, self.partial_head and self.native, active)

    def _counted(self, need: torch.Tensor, columns: torch.Tensor | None, mask: torch.Tensor | None, partial: bool,
                 rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """The shapes the host cannot know, as one device vector (``None`` when they are known).

        With a cache: the columns to recompute, and the columns the head runs on (with
        the partial head the recomputed ones among those read, for the FLOP count; else
        every read or recomputed column). Then, where the model runs its last block on
        part of the columns, how many: those whose final state gives a read logit
        (``NativeLM.read_columns`` of the batch ``rows``) among the computed ones.
        Bounding these would not keep outputs identical: the last block's matrix
        products change with their row count, and a bound on the recomputed columns
        would run the whole canvas (RCR changes columns anywhere).
        """
        if not self.native:
            return None
        counted = [] if columns is None else [columns.sum(), (need & columns if partial else need | columns).sum()]
        if columns is not None or (self.mode in ("none", "prompt") and (partial or self.model.logit_shift)):
            wanted = need if partial else torch.ones_like(need) if columns is None else need | columns
            read = self.model.read_columns(wanted, mask, rows)
            counted.append(read.sum() if columns is None else (read & columns).sum())
        return torch.stack(counted) if counted else None

    def _fills(self) -> bool | None:
        """Whether the next call runs the whole canvas (refilling the cache); ``None``: the call reads whether.

        Within a round the cache holds every row with work (rows only leave); at a
        ``prompt`` round's first call (the only cache kept across rounds) it is read.
        """
        if self.mode == "none" or self._cache is None:
            return True
        if self.refresh and self._age >= self.refresh - 1 and self.mode != "prompt":
            return True  # stale
        return None if self._new_round else False

    def _columns(self, answer: torch.Tensor, rows: torch.Tensor, block: tuple[int, int]) -> torch.Tensor | None:
        """``[P + L]`` bool: canvas columns to recompute (``None``: all, refilling the cache).

        Shrinks the cache with the batch when rows finish.
        """
        if self.mode == "none":
            return None
        fills = self._fills()
        first, self._new_round = self._new_round, False
        if fills or not holds_rows(self._cache_rows, rows, first):
            cache = self.model.new_cache(keep_hidden=self.mode != "prompt")  # prompt mode reads only answer columns
            self._cache, self._cache_rows, self._filled, self._age = cache, rows, answer, 0
            return None
        self._age += 1
        if len(rows) != len(self._cache_rows):
            keep = torch.searchsorted(self._cache_rows, rows)
            self._filled = self._filled[keep]
            if self.cfg_scale > 0:
                keep = torch.cat([keep, keep + len(self._cache_rows)])
            self._cache, self._cache_rows = self._cache.select(keep), rows
        run = self._recompute(answer, self._filled, block)
        if self.mode == "delayed":
            self._filled = torch.where(run[self.plen :], answer, self._filled)
        return run

    def _recompute(self, answer: torch.Tensor, filled: torch.Tensor, block: tuple[int, int],
                   rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[P + L]`` bool: the columns to recompute, over the ``rows`` (``[n]`` bool; default all) of ``answer``.

        The block (and for ``prefix`` its right side), plus any column whose token
        changed since it was cached (``filled``; RCR re-masks committed tokens of
        earlier blocks): their cached states would still show the old token.
        ``delayed`` runs only the block's masked columns and every changed column: a
        committed token is run once more (its keys/values then show the token, not the
        mask) and afterwards read from the cache (fewer columns per step than ``dual``,
        at the price of committed columns no longer seeing later commits).
        """

        def among(per_row: torch.Tensor) -> torch.Tensor:
            return per_row if rows is None else per_row & rows[:, None]

        index = torch.arange(answer.shape[1], device=answer.device)
        in_block, changed = (index >= block[0]) & (index < block[1]), among(answer != filled).any(0)
        if self.mode == "prompt":
            run = torch.ones_like(in_block)
        elif self.mode == "delayed":
            run = (in_block & among(self.model.process.noised(answer)).any(0)) | changed
            run = torch.where(run.any(), run, in_block)  # nothing to run: the block, without asking the host
        else:
            end = answer.shape[1] if self.mode == "prefix" else block[1]
            run = ((index >= block[0]) & (index < end)) | changed
        return torch.cat([run.new_zeros(self.plen), run])

    def _padded(self, need: torch.Tensor, n_pred: int) -> torch.Tensor:
        """The read columns, ascending, padded by repeating the last to a size the host knows.

        One column per predicted pair at most, inside the answer; nothing waits for
        the device (the model's logits are the same with a column repeated).
        """
        found = torch.nonzero_static(need, size=min(n_pred, self.length - self.plen), fill_value=-1).squeeze(1)
        return torch.where(found < 0, found.max(), found)

    def _guided(
        self, x: torch.Tensor, mask: torch.Tensor | None, at: torch.Tensor | None, columns: torch.Tensor | None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None, outputs: int | None,
    ) -> torch.Tensor:
        """Model logits, guided (§1: ``un + (w + 1)(cond − un)``, prompt masked in ``un``)."""
        if self.cfg_scale <= 0:
            return self._logits(x, mask, at, columns, pairs, outputs)
        uncond = x.clone()
        real = torch.ones_like(x[:, : self.plen], dtype=torch.bool) if mask is None else mask[:, : self.plen].bool()
        uncond[:, : self.plen] = self.model.process.corrupt(uncond[:, : self.plen], real)
        both_mask = None if mask is None else torch.cat([mask, mask])
        if pairs is not None:  # the unguided rows follow the guided ones
            pairs = (torch.cat([pairs[0], pairs[0] + len(x)]), torch.cat([pairs[1], pairs[1]]))
        both = self._logits(torch.cat([x, uncond]), both_mask, at, columns, pairs, outputs)
        cond, un = both.chunk(2)
        return un + (self.cfg_scale + 1) * (cond - un)

    def _logits(
        self, x: torch.Tensor, mask: torch.Tensor | None, at: torch.Tensor | None, columns: torch.Tensor | None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None, outputs: int | None,
    ) -> torch.Tensor:
        """``at`` ``None``: every column (no index for the model to read)."""
        if not self.native:
            return self.model.logits(x, attention_mask=mask, prompt_length=self.plen)
        return self.model.logits(
            x, attention_mask=mask, logits_at=at, columns=columns, cache=self._cache, prompt_length=self.plen,
            pairs=pairs, outputs=outputs,
        )

    def _outputs(self, fill: bool, need: torch.Tensor, counts: list[int]) -> int | torch.Tensor | None:
        """Columns the model's last block outputs, for the FLOP count (``None``: all it ran).

        The read columns (counted on the device) without a cache or in a prompt-only
        fill; a dual/prefix fill keeps every column; else the read recomputed ones.
        """
        if fill:
            return None if self.mode not in ("none", "prompt") else need.sum()
        return counts[1] or None

    def _account(self, rows: torch.Tensor, run: int, heads: torch.Tensor, outputs: int | torch.Tensor | None) -> None:
        """Charge each row its step's FLOPs on the device; ``heads`` ``[n]``: the row's LM-head columns."""
        if not self.native:
            return
        passes = 2 if self.cfg_scale > 0 else 1
        dims = self.model.dims
        step = forward_flops(dims, run, self.length, 0, outputs) + heads * forward_flops(dims, 0, 0, 1)
        self._flops.index_add_(0, rows, passes * step)


def holds_rows(cached: torch.Tensor | None, rows: torch.Tensor, first_of_round: bool) -> bool:
    """Whether a cache of the ascending batch rows ``cached`` holds every row of ``rows`` (ascending too).

    Within a round the rows with work only leave (the driver's contract: a row's
    noised positions in reach never grow back), which is checked on the device
    without a wait; only a round's first call reads the answer back. A binary search,
    not ``torch.isin``: on a GPU that sorts with ``unique`` past a few dozen rows, a wait.
    """
    if cached is None:
        return False
    held = (cached[torch.searchsorted(cached, rows).clamp(max=len(cached) - 1)] == rows).all()
    if not first_of_round:
        torch._assert_async(held, "a row with work joined the step forward during a round")
        return True
    return len(rows) <= len(cached) and bool(held)
