"""The sampler's driver loop: predict, choose commits, choose re-masks, record (docs/sampling.md §1–§7, §9).

With ``temperature=0`` and ``remasking="low_confidence"`` it is the reference
(LLaDA) sampler token for token. Randomness: each row has its own CPU
``torch.Generator`` seeded with its row seed (``seed + row`` for an int ``seed``,
or one seed per row), and draws a fixed ``2 × gen_length`` float64 uniforms per
step (``rollouts.draws``). A row's tokens therefore depend only on its prompt,
hints and seed, not on the other rows of the batch, and are the same on every
device up to the model's own numerics.

The loop is the driver's (``rollouts.driver``); this module assembles the absorbing
parts (``rollouts/absorbing/``): a round starts with the rule's step budget and plan,
a step predicts through a ``Predictor`` (``rollouts.predict``: ``StepForward`` or the
block cache's ``BlockStepForward`` on the rows with work), a decoding rule
(``rollouts/rules/``, one file each, chosen by the settings) decides commits and
re-masks, ``CommitAndRemask`` applies them, a ``StepRecorder`` keeps the step. The
diffusion process says what is noise, how to noise and what a round may touch.

Host synchronisation. A step's rule decisions, the scatters and the bookkeeping
are tensor ops; the host reads only the shapes it must know (docs/sampling.md §9
lists them). A scheduled rule's work is read once per round; a data-decided rule
reads its step's work once per step, and that read also carries the counts the
step forward needs (the columns its cache recomputes, the columns its model's last
block outputs), which the forward otherwise reads itself. So a step reads the
device at most once (a ``prompt`` cache adds up to two at a later round's first
step), the block cache only at a round's first step, and FLOP counters stay on
the device until the Trajectory is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.rollouts.absorbing.commit import CommitAndRemask
from unmask.rollouts.absorbing.predict import MaskedPredict
from unmask.rollouts.absorbing.record import MaskedRecord
from unmask.rollouts.absorbing.round import MaskedRound
from unmask.rollouts.absorbing.state import MaskedCanvas
from unmask.rollouts.block_forward import BlockStepForward
from unmask.rollouts.cache import StepForward
from unmask.rollouts.confidence import CONFIDENCES, ConfidenceFn, resolve_confidence
from unmask.rollouts.draws import RowDraws
from unmask.rollouts.driver import SamplerParts, drive, never
from unmask.rollouts.predict import Predictor
from unmask.rollouts.progress import step_progress
from unmask.rollouts.record import StepRecorder, answer_mask
from unmask.rollouts.rules.base import DecodingRule, RuleSettings
from unmask.rollouts.rules.early_exit import EarlyExit
from unmask.rollouts.rules.registry import rule_for
from unmask.rollouts.sampler_config import SamplerConfig
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
    config = SamplerConfig.checked(
        gen_length=gen_length, steps=steps, block_length=block_length, temperature=temperature, remasking=remasking,
        cfg_scale=cfg_scale, threshold=threshold, dynamic_threshold=dynamic_threshold, schedule=schedule,
        schedule_k=schedule_k, confidence=confidence, cache=cache, cache_refresh=cache_refresh,
        partial_head=partial_head, early_exit=early_exit,
    )
    prompt_ids, attention_mask = _check_prompt(prompt_ids, attention_mask)
    conf_fn = resolve_confidence(remasking, confidence)
    batch, plen = prompt_ids.shape
    device, process = prompt_ids.device, model.process
    hint_mask, hint_tokens = _check_hints(hints, batch, gen_length, process, device)
    seeds = row_seeds(seed, batch)

    full_mask = None
    if attention_mask is not None:
        full_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, gen_length)], dim=1)
    prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    canvas = MaskedCanvas(
        answer=torch.where(hint_mask, hint_tokens, process.blank(hint_tokens)), masked=~hint_mask, hint_mask=hint_mask,
        rounds=process.answer_blocks(prompt_mask, gen_length, block_length),
        commit_step=torch.full((batch, gen_length), -1, dtype=torch.long, device=device),
        nfe=torch.zeros(batch, dtype=torch.long, device=device),
    )
    recorder = StepRecorder(record)
    forward = (
        BlockStepForward(model, prompt_ids, full_mask, gen_length, cfg_scale=cfg_scale) if cache == "block"
        else StepForward(model, prompt_ids, full_mask, gen_length, cache=cache, cfg_scale=cfg_scale, partial_head=partial_head, refresh=cache_refresh)
    )
    block_steps = max(1, steps // (gen_length // block_length))
    rule = _rule(config, block_steps, model, device)
    # greedy low-confidence without a record reads only the token and its probability
    lean = partial_head and temperature == 0 and conf_fn is CONFIDENCES["probability"] and not record
    predictor = Predictor(forward, process, conf_fn, temperature, lean=lean)
    # the draws a step may read: none for greedy decoding with a deterministic confidence
    draws = RowDraws(seeds, gen_length, device) if temperature > 0 or conf_fn not in (
        CONFIDENCES[name] for name in ("probability", "margin", "entropy")) else None
    record_all = record and forward.predicts_all  # predict (and record) every noised position, not only the scope
    rounds = MaskedRound(canvas, process, rule, forward, draws, block_length, record_all)
    parts = SamplerParts(
        rounds=int(canvas.rounds.max()) + 1, start_round=rounds.start,
        predict=MaskedPredict(canvas, rule, predictor, draws, passes=2 if cfg_scale > 0 else 1, record_all=record_all),
        decide=rule.decide, apply=CommitAndRemask(canvas, process), record=MaskedRecord(canvas, rule, recorder),
        stop=never, end_round=rounds.end,
    )
    total = None if rule.ends_when_done else parts.rounds * block_steps
    with step_progress(progress, total) as advance:
        drive(parts, advance)

    answer = canvas.answer
    tokens = torch.cat([prompt_ids, answer], dim=1)
    settings: dict[str, Any] = {**config.generate_kwargs(), "seed": seeds}
    return Trajectory(
        tokens=tokens.cpu(),
        attention_mask=(torch.ones_like(tokens, dtype=torch.bool) if full_mask is None else full_mask.bool()).cpu(),
        prompt_length=plen,
        answer_mask=answer_mask(answer, model.eos_token_ids).cpu(),
        commit_step=canvas.commit_step.masked_fill(hint_mask, -1).cpu(),
        hint_mask=hint_mask.cpu(),
        nfe=canvas.nfe.cpu(),
        settings=settings,
        flops=forward.flops if forward.native else None,
        **recorder.tensors(),
    )


def _rule(config: SamplerConfig, block_steps: int, model: DiffusionLM, device: torch.device) -> DecodingRule:
    """The decoding rule the settings select, wrapped for early exit when asked."""
    rule = rule_for(RuleSettings(
        process=model.process, remasking=config.remasking, threshold=config.threshold,
        dynamic_threshold=config.dynamic_threshold, schedule=config.schedule, schedule_k=config.schedule_k,
        block_length=config.block_length, block_steps=block_steps,
    ))
    if config.early_exit:
        eos = model.eos_token_ids
        rule = EarlyExit(rule, torch.tensor(eos, device=device), eos[0])
    return rule


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
