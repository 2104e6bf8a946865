"""The denoising loop: one call for every decoding strategy (docs/sampling.md §1–§4, §6–§7).

With ``temperature=0`` and ``remasking="low_confidence"`` it is the reference
(LLaDA) sampler token for token. Randomness: each row has its own CPU
``torch.Generator`` seeded with its row seed (``seed + row`` for an int ``seed``,
or one seed per row), and draws a fixed ``2 × gen_length`` float64 uniforms per
step. A row's tokens therefore depend only on its prompt, hints and seed, not on
the other rows of the batch, and are the same on every device up to the model's
own numerics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.kernels.ops import sample_step, select_commits
from unmask.kernels.sampling import StepSample, greedy_probability
from unmask.models.base import DiffusionLM
from unmask.rollouts.block_forward import BlockStepForward
from unmask.rollouts.cache import StepForward
from unmask.rollouts.commit import topk_rows
from unmask.rollouts.confidence import CONFIDENCES, ConfidenceFn, resolve_confidence
from unmask.rollouts.options import SCHEDULES
from unmask.rollouts.progress import step_progress
from unmask.rollouts.record import StepRecorder, answer_mask
from unmask.rollouts.schedules import step_counts
from unmask.rollouts.trajectory import Trajectory

Seed = int | Sequence[int] | None


@torch.no_grad()
def generate(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    *,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    threshold: float | None = None,
    dynamic_threshold: float | None = None,
    schedule: str = "linear",
    schedule_k: float = 2,
    confidence: str | ConfidenceFn | None = None,
    hints: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    seed: Seed = None,
    record: bool = False,
    progress: bool = False,
    cache: str = "none",
    cache_refresh: int = 0,
    partial_head: bool = True,
    early_exit: bool = False,
) -> Trajectory:
    """Generate ``gen_length`` tokens after each (left-padded) prompt row.

    ``steps`` is the total over all ``gen_length // block_length`` blocks (at least
    one per block). ``threshold`` switches to Fast-dLLM parallel decoding: each
    block runs until it is complete, ``steps`` and ``schedule`` are then unused.
    ``dynamic_threshold`` is SDAR's dynamic low-confidence rule: a step commits every
    position whose confidence exceeds it, and at least the schedule's count (the
    block may then finish in fewer steps).
    ``hints`` is ``[B, gen_length]`` long, ``-1`` where the answer is free and the
    fixed token elsewhere. ``nfe`` counts model forward passes (two per step with
    CFG) during which a row still had positions to decode. The mask token is never
    predicted (its logit is set to ``-inf``).

    Speed (docs/sampling.md §5): ``cache`` is ``"none"`` (exact), ``"prefix"`` or
    ``"dual"`` (approximate KV caching within a block, exact for the prompt of a model
    whose prompt does not attend to the answer; ``cache_refresh`` > 0 runs the full
    canvas again every that many steps of a block); ``partial_head`` applies the
    LM head only where logits are read (exact). Rows with nothing to predict at a
    step are left out of its forward, so finished rows stop costing compute; with
    ``early_exit`` a row whose first committed EOS has no masked position before
    it is finished at once, its masked tail filled with EOS (not with ``rcr``,
    which may re-mask the EOS). ``flops`` counts each row's forward FLOPs and
    ``step_cached`` marks the steps that attended to cached keys/values.
    """
    prompt_ids, attention_mask = _check_prompt(prompt_ids, attention_mask)
    _check_settings(gen_length, steps, block_length, temperature, cfg_scale, threshold, dynamic_threshold, remasking, schedule)
    if early_exit and remasking == "rcr":
        raise UserError("early_exit needs committed tokens to stay: it cannot be used with remasking='rcr'")
    conf_fn = resolve_confidence(remasking, confidence)
    batch, plen = prompt_ids.shape
    device, process = prompt_ids.device, model.process
    hint_mask, hint_tokens = _check_hints(hints, batch, gen_length, process, device)
    seeds = row_seeds(seed, batch)
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    answer = torch.where(hint_mask, hint_tokens, process.blank(hint_tokens))
    full_mask = None
    if attention_mask is not None:
        full_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, gen_length)], dim=1)
    prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    rounds = process.answer_blocks(prompt_mask, gen_length, block_length)  # [B, L] decoding round of each position
    commit_step = torch.full((batch, gen_length), -1, dtype=torch.long, device=device)
    nfe = torch.zeros(batch, dtype=torch.long, device=device)
    buffer = torch.ones(batch, gen_length, dtype=torch.float64, device=device)  # RCR's running confidence
    recorder = StepRecorder(record)
    forward = (
        BlockStepForward(model, prompt_ids, full_mask, gen_length, cfg_scale=cfg_scale) if cache == "block"
        else StepForward(model, prompt_ids, full_mask, gen_length, cache=cache, cfg_scale=cfg_scale, partial_head=partial_head, refresh=cache_refresh)
    )
    eos_ids = torch.tensor(model.eos_token_ids, device=device)
    rcr = remasking == "rcr"
    passes = 2 if cfg_scale > 0 else 1
    # the draws a step may read: none for greedy decoding with a deterministic confidence
    draws = temperature > 0 or conf_fn not in (CONFIDENCES[name] for name in ("probability", "margin", "entropy"))
    # greedy low-confidence without a record reads only the token and its probability
    lean = partial_head and temperature == 0 and conf_fn is CONFIDENCES["probability"] and not record

    num_rounds = int(rounds.max()) + 1
    block_steps = max(1, steps // (gen_length // block_length))
    total = None if threshold is not None else num_rounds * block_steps
    t = 0
    with step_progress(progress, total) as advance:
        for block in range(num_rounds):
            span = (block * block_length, (block + 1) * block_length)
            in_reach = process.in_reach(rounds, block)
            current = rounds == block
            forward.new_block(block)
            if threshold is None:
                counts = step_counts((process.noised(answer) & current).sum(1), block_steps, schedule, schedule_k).tolist()
            for i in range(block_steps if threshold is None else block_length):
                masked = process.noised(answer)
                scope = masked & in_reach
                if threshold is not None and not scope.any():
                    break
                nfe += passes * scope.any(1)
                u_sample, u_conf = _uniforms(generators, gen_length, device) if draws else (buffer, buffer)
                predict = masked if record and forward.predicts_all else scope
                active = predict.any(1)
                pred, conf, logprob = answer.clone(), torch.full_like(buffer, float("-inf")), torch.zeros_like(buffer)
                if active.any():
                    rows = active.nonzero().squeeze(1)
                    flat = process.forbid_noise_(forward(answer, rows, predict[rows], span))  # committed noise would break the schedule
                    stats = _lean_step(flat) if lean else sample_step(flat, temperature, uniforms=u_sample[predict])
                    pred = pred.masked_scatter(predict, stats.token)
                    conf = conf.masked_scatter(predict, conf_fn(stats, u_conf[predict]).double())
                    logprob = logprob.masked_scatter(predict, stats.logprob)
                cached = active & forward.cached
                if rcr:
                    answer = torch.where(scope, pred, answer)
                    buffer = torch.where(scope, conf, buffer)
                    changed = scope
                    if i < block_steps - 1:
                        keep = [sum(row[i + 1 :]) for row in counts]
                        key = buffer.masked_fill(~in_reach | hint_mask, float("inf"))
                        remask = topk_rows(key, keep, largest=False)
                        answer = process.corrupt(answer, remask)
                        changed = scope & ~remask
                    recorder.add(masked, pred, buffer, logprob, cached)
                else:
                    scoped = conf.masked_fill(~scope, float("-inf"))
                    if threshold is None:
                        padded = torch.cat([scoped.new_full((batch, plen), float("-inf")), scoped], dim=1)
                        k = [row[i] for row in counts]
                        if dynamic_threshold is not None:  # earlier steps may have committed beyond the schedule
                            k = [min(n, left) for n, left in zip(k, scope.sum(1).tolist(), strict=True)]
                        changed = topk_rows(padded, k)[:, plen:]
                        if dynamic_threshold is not None:
                            changed |= scoped > dynamic_threshold
                    else:
                        changed = select_commits(scoped, threshold=threshold, eligible=scope)
                    answer = torch.where(changed, pred, answer)
                    if early_exit:
                        filled = _eos_tail(answer, eos_ids, process)
                        answer, pred = answer.masked_fill(filled, model.eos_token_ids[0]), pred.masked_fill(filled, model.eos_token_ids[0])
                        changed = changed | filled
                    recorder.add(masked, pred, conf.masked_fill(~predict, 0.0), logprob, cached)
                commit_step = commit_step.masked_fill(changed, t)
                t += 1
                advance()

    tokens = torch.cat([prompt_ids, answer], dim=1)
    settings: dict[str, Any] = {
        "gen_length": gen_length, "steps": steps, "block_length": block_length,
        "temperature": temperature, "remasking": remasking, "cfg_scale": cfg_scale,
        "threshold": threshold, "dynamic_threshold": dynamic_threshold, "schedule": schedule, "schedule_k": schedule_k,
        "confidence": confidence, "seed": seeds, "cache": cache, "cache_refresh": cache_refresh,
        "partial_head": partial_head, "early_exit": early_exit,
    }
    return Trajectory(
        tokens=tokens.cpu(),
        attention_mask=(torch.ones_like(tokens, dtype=torch.bool) if full_mask is None else full_mask.bool()).cpu(),
        prompt_length=plen,
        answer_mask=answer_mask(answer, model.eos_token_ids).cpu(),
        commit_step=commit_step.masked_fill(hint_mask, -1).cpu(),
        hint_mask=hint_mask.cpu(),
        nfe=nfe.cpu(),
        settings=settings,
        flops=forward.flops if forward.native else None,
        **recorder.tensors(),
    )


def _lean_step(logits: torch.Tensor) -> StepSample:
    """The greedy token and its probability only (the exact fast path; no log-prob, margin, entropy)."""
    token, confidence = greedy_probability(logits)
    unread = torch.zeros_like(confidence)
    return StepSample(token, confidence, unread, unread, unread)


def _eos_tail(answer: torch.Tensor, eos_ids: torch.Tensor, process: DiffusionProcess) -> torch.Tensor:
    """``[B, L]``: masked positions after a committed EOS with nothing masked before it.

    Tokens after the first EOS are padding for rewards, so such a row is finished:
    filling its tail ends its forwards (early exit).
    """
    masked = process.noised(answer)
    eos = torch.isin(answer, eos_ids)
    first_eos = torch.where(eos.any(1), eos.long().argmax(1), answer.shape[1])
    first_masked = torch.where(masked.any(1), masked.long().argmax(1), answer.shape[1])
    finished = first_eos < first_masked
    return masked & finished[:, None]


def _uniforms(generators: list[torch.Generator], length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row float64 uniforms for sampling and for random confidence, ``[B, length]`` each."""
    draws = torch.stack([torch.rand(2, length, dtype=torch.float64, generator=g) for g in generators]).to(device)
    return draws[:, 0], draws[:, 1]


def row_seeds(seed: Seed, batch: int) -> list[int]:
    """One seed per row: ``seed + row`` for an int, a fresh random base for ``None``."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    if isinstance(seed, int):
        return [seed + row for row in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise UserError(f"seed has {len(seeds)} entries for {batch} prompt rows: give one per row or an int")
    return seeds


def _check_prompt(prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.unsqueeze(0)
        attention_mask = None if attention_mask is None else attention_mask.unsqueeze(0)
    if prompt_ids.dim() != 2 or prompt_ids.dtype != torch.long:
        raise UserError(f"prompt_ids must be a [B, P] long tensor, got {tuple(prompt_ids.shape)} {prompt_ids.dtype}")
    if attention_mask is None:
        return prompt_ids, None
    if attention_mask.shape != prompt_ids.shape:
        raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} must equal prompt_ids shape {tuple(prompt_ids.shape)}")
    attention_mask = attention_mask.to(prompt_ids.device).long()
    if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
        raise UserError("attention_mask must describe left padding (0s then 1s per row); pad prompts on the left")
    return prompt_ids, attention_mask


def _check_settings(
    gen_length: int, steps: int, block_length: int, temperature: float, cfg_scale: float,
    threshold: float | None, dynamic_threshold: float | None, remasking: str, schedule: str,
) -> None:
    if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
        raise UserError(f"gen_length ({gen_length}) must be a positive multiple of block_length ({block_length})")
    if steps <= 0:
        raise UserError(f"steps must be positive, got {steps}")
    if temperature < 0 or cfg_scale < 0:
        raise UserError(f"temperature ({temperature}) and cfg_scale ({cfg_scale}) must be >= 0")
    if threshold is not None and not 0 < threshold <= 1:
        raise UserError(f"threshold must be in (0, 1], got {threshold}")
    if threshold is not None and remasking == "rcr":
        raise UserError("threshold decoding and remasking='rcr' exclude each other: drop one of them")
    if dynamic_threshold is not None and not 0 < dynamic_threshold <= 1:
        raise UserError(f"dynamic_threshold must be in (0, 1], got {dynamic_threshold}")
    if dynamic_threshold is not None and (threshold is not None or remasking == "rcr"):
        raise UserError("dynamic_threshold tops up the step's schedule: it excludes threshold and remasking='rcr'")
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


def _check_hints(
    hints: torch.Tensor | None, batch: int, gen_length: int, process: DiffusionProcess, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hint_mask, hint_tokens)``, both ``[B, L]``; validates the ``-1 = free`` layout."""
    if hints is None:
        hints = torch.full((batch, gen_length), -1, dtype=torch.long)
    if hints.shape != (batch, gen_length) or hints.dtype != torch.long:
        raise UserError(f"hints must be a [{batch}, {gen_length}] long tensor with -1 at free positions, got {tuple(hints.shape)} {hints.dtype}")
    if (hints < -1).any() or process.is_noise_token(hints).any():
        raise UserError("hints may hold -1 (free) or real token ids, not negative ids or the noise (mask) token")
    hints = hints.to(device)
    return hints >= 0, hints.clamp(min=0)
