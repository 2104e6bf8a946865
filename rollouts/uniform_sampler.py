"""The uniform-noise block sampler of DiffusionGemma, recording what a renoise replay rescores.

Per canvas (block): encode the uncached context into the cache, start from uniform
ids, then for n = N..1: logits = decode(x_n, SC = z_{n+1}); z_n = logits / T_n (linear
temperature schedule); sample s_n ~ softmax(z_n) at every slot; accept the lowest-entropy
slots whose summed entropy, the largest left out, stays within the bound; the next canvas
keeps s_n at accepted slots and fresh uniform ids elsewhere; z_n conditions the next step.
A row stops when its argmax canvas repeats for ``stability_threshold`` steps and its mean
entropy is below ``confidence_threshold``; its block is the argmax canvas of that step
(docs/diffusion-gemma.md).

Randomness: without ``generators`` every draw is on the global RNG in transformers' order
(so the tokens equal ``DiffusionGemmaForBlockDiffusion.generate`` under the same seed);
with one ``torch.Generator`` per row, a row's tokens do not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.distributions import Categorical

from unmask.diffusion.uniform import uniform_tokens
from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma


@dataclass(frozen=True)
class UniformSettings:
    """transformers' ``generate`` defaults; ``eos_token_id`` / ``pad_token_id`` None = no EOS padding."""

    max_new_tokens: int = 256
    steps: int = 48
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_new_tokens < 1 or self.stability_threshold < 0:
            raise UserError("uniform sampler: steps and max_new_tokens must be >= 1, stability_threshold >= 0")
        if not 0 <= self.t_min < self.t_max or self.entropy_bound <= 0 or self.confidence_threshold <= 0:
            raise UserError("uniform sampler: need 0 <= t_min < t_max, entropy_bound > 0, confidence_threshold > 0")

    def temperature(self, n: int) -> torch.Tensor:
        """T_n = t_min + (t_max - t_min) · n / N, in float32 as transformers computes it (bit parity)."""
        return self.t_min + (self.t_max - self.t_min) * (torch.tensor(n, dtype=torch.int32) / self.steps)


@dataclass
class UniformTrajectory:
    """A rollout and, per executed step t (flat over blocks and steps), the replay's inputs.

    ``step_canvas[t]`` is the canvas x_n decoded at step t, ``step_sc[t]`` its SC input as
    soft embeddings (zeros at a block's first step), ``step_accept[t]`` the accepted set
    A_n, ``step_sample[t]`` the draw s_n; x_{n-1} = where(A_n, s_n, uniform). ``step_active
    [t, b]``: row b was still denoising (not frozen by the stop rule, not finished at EOS).
    ``step_logprob[t]`` = log softmax(z_n) at s_n. ``step_argmax[t]`` the argmax canvas y_n
    (frozen rows keep theirs: MDPO grades it). ``stop_step[k, b]``: the step n* whose
    argmax became block k (the last n run when the rule never fired).
    """

    sequences: torch.Tensor
    prompt_length: int
    step_canvas: torch.Tensor
    step_sample: torch.Tensor
    step_accept: torch.Tensor
    step_logprob: torch.Tensor
    step_sc: torch.Tensor
    step_temperature: torch.Tensor
    step_n: torch.Tensor
    step_block: torch.Tensor
    step_active: torch.Tensor
    stop_step: torch.Tensor
    step_argmax: torch.Tensor

    def select(self, rows: torch.Tensor) -> UniformTrajectory:
        """Only the given batch rows (``[T]`` step fields are shared by all rows)."""
        per_step = {name: getattr(self, name)[:, rows] for name in PER_STEP_ROW}
        return replace(self, sequences=self.sequences[rows], stop_step=self.stop_step[:, rows], **per_step)

    def to(self, device: torch.device | str) -> UniformTrajectory:
        return replace(self, **{k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)})

    def intermediate_answers(self, answers: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """``[T, B, G]`` from the final ``answers [B, G]``: at step t of block k, the blocks before k, then
        that step's argmax canvas y_n, then padding (MDPO's grading)."""
        length = self.step_argmax.shape[-1]
        out = answers.new_full((len(self.step_n), *answers.shape), pad_token_id)
        for t, block in enumerate(self.step_block.tolist()):
            out[t, :, : block * length] = answers[:, : block * length]
            out[t, :, block * length : (block + 1) * length] = self.step_argmax[t]
        return out

    @classmethod
    def cat(cls, parts: list[UniformTrajectory]) -> UniformTrajectory:
        """Rows of several rollouts (e.g. pool workers), whose canvases may have stopped at other steps.

        The joined steps run, per canvas, from N down to the last step any part ran; a part's
        rows are inactive (``step_active`` False) at steps it did not run, which the replay skips.
        ``sequences`` are right-padded with 0 where a part ended early (``Trajectory.tokens`` holds
        the padded answers).
        """
        layout = sorted({key for part in parts for key in part.steps()}, key=lambda key: (key[0], -key[1]))
        temperature = {int(n): part.step_temperature[t] for part in parts for t, n in enumerate(part.step_n.tolist())}
        per_step: dict[str, list[torch.Tensor]] = {name: [] for name in PER_STEP_ROW}
        for part in parts:
            index, ran = part.gather_index(layout)
            for name in PER_STEP_ROW:
                per_step[name].append(getattr(part, name)[index])
            per_step["step_active"][-1] = per_step["step_active"][-1] & ran[:, None]
        blocks = max(part.stop_step.shape[0] for part in parts)
        width = max(part.sequences.shape[1] for part in parts)
        return replace(
            parts[0],
            sequences=torch.cat([F.pad(part.sequences, (0, width - part.sequences.shape[1])) for part in parts]),
            stop_step=torch.cat([F.pad(part.stop_step, (0, 0, 0, blocks - part.stop_step.shape[0]), value=1)
                                 for part in parts], 1),
            step_n=torch.tensor([n for _, n in layout]), step_block=torch.tensor([k for k, _ in layout]),
            step_temperature=torch.stack([temperature[n] for _, n in layout]),
            **{name: torch.cat(values, 1) for name, values in per_step.items()},
        )  # fmt: skip

    def steps(self) -> list[tuple[int, int]]:
        """``(block, n)`` of every recorded step, in order."""
        return list(zip(self.step_block.tolist(), self.step_n.tolist(), strict=True))

    def gather_index(self, layout: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """For each ``(block, n)`` of ``layout``: this rollout's step (its block's last one when it stopped
        earlier, step 0 for a block it never ran) and whether it ran that step."""
        own = {key: t for t, key in enumerate(self.steps())}
        last = {block: t for t, (block, _) in enumerate(self.steps())}
        index = [own.get(key, last.get(key[0], 0)) for key in layout]
        device = self.step_n.device
        return torch.tensor(index, device=device), torch.tensor([key in own for key in layout], device=device)


#: the recorded ``[T, B, ...]`` fields (``step_temperature``, ``step_n``, ``step_block`` are ``[T]``)
PER_STEP_ROW = ("step_canvas", "step_sample", "step_accept", "step_logprob", "step_sc", "step_active", "step_argmax")

@dataclass
class _Recorder:
    """Per-step tensors, stacked at the end (nothing kept when ``record=False``)."""

    on: bool
    rows: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, **tensors: torch.Tensor) -> None:
        if self.on:
            for key, value in tensors.items():
                self.rows.setdefault(key, []).append(value)

    def stacked(self, key: str) -> torch.Tensor:
        return torch.stack(self.rows[key])


def entropy_bound_accept(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """Accept the longest lowest-entropy prefix whose summed entropy minus its largest is <= ``bound``."""
    ordered, order = entropy.sort(dim=-1)
    keep = ordered.cumsum(-1) - ordered <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator] | None, frozen: torch.Tensor) -> torch.Tensor:
    """One token per slot from ``probs [B, L, V]``: every row in one call on the global RNG (transformers'
    order), or one generator per row, where a stopped (``frozen``) row draws nothing and gets its argmax.

    A stopped row's draws are discarded anyway; not making them keeps each row's generator stream
    its own, whether the batch around it keeps denoising or stops (the per-row independence).
    """
    b, length, vocab = probs.shape
    if generators is None:
        return torch.multinomial(probs.view(-1, vocab), 1).view(b, length)
    return torch.stack([
        probs[i].argmax(-1) if stopped else torch.multinomial(probs[i], 1, generator=g)[:, 0]
        for i, (g, stopped) in enumerate(zip(generators, frozen.tolist(), strict=True))
    ])


def noise_tokens(
    canvas: torch.Tensor, vocab: int, generators: Sequence[torch.Generator] | None, frozen: torch.Tensor
) -> torch.Tensor:
    """Fresh uniform ids shaped like ``canvas``; with per-row generators a ``frozen`` row keeps its canvas (no draw)."""
    if generators is None:
        return uniform_tokens(tuple(canvas.shape), vocab, None, canvas.device)
    live = (~frozen).nonzero()[:, 0]
    noise = canvas.clone()
    if len(live):
        own = [generators[i] for i in live.tolist()]
        noise[live] = uniform_tokens((len(own), canvas.shape[1]), vocab, own, canvas.device)
    return noise


def generate_uniform(
    model: DiffusionGemma,
    prompt: torch.Tensor,
    settings: UniformSettings,
    attention_mask: torch.Tensor | None = None,
    generators: Sequence[torch.Generator] | None = None,
    record: bool = True,
) -> UniformTrajectory:
    """Sample ``ceil(max_new_tokens / canvas_length)`` canvases after ``prompt [B, P]`` (left padding in ``attention_mask``)."""
    b, p = prompt.shape
    length, vocab, hidden = model.config.canvas_length, model.text_config.vocab_size, model.text_config.hidden_size
    device = prompt.device
    mask = torch.ones(b, p, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
    padded = None if attention_mask is None else mask
    eos = None if settings.eos_token_id is None else torch.tensor([settings.eos_token_id], device=device)
    rec = _Recorder(record)
    stops: list[torch.Tensor] = []
    sequences, new_context, cache = prompt, prompt, model.new_cache()
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    with torch.no_grad():
        for block in range(-(-settings.max_new_tokens // length)):
            start = sequences.shape[1] - new_context.shape[1]
            model.encode(new_context, cache, padded, torch.arange(start, sequences.shape[1], device=device)[None])
            positions = torch.arange(sequences.shape[1], sequences.shape[1] + length, device=device)[None]
            decoder_mask = None if padded is None else torch.nn.functional.pad(padded, (0, length), value=True)
            canvas = uniform_tokens((b, length), vocab, generators, device)
            argmax, stop_at = canvas, torch.full((b,), 1, device=device)
            z = sc = None
            history = torch.full((settings.stability_threshold, b, length), -1, device=device)
            frozen = torch.zeros(b, dtype=torch.bool, device=device)
            for n in range(settings.steps, 0, -1):
                temperature = settings.temperature(n)
                new_z = model.decode(canvas, cache, sc, attention_mask=decoder_mask, position_ids=positions) / temperature
                probs = new_z.softmax(-1, dtype=torch.float32)
                sample = draw(probs, generators, frozen)
                entropy = Categorical(logits=new_z).entropy()
                accept = entropy_bound_accept(entropy, settings.entropy_bound)
                noise = noise_tokens(canvas, vocab, generators, frozen)
                rec.add(step_canvas=canvas, step_sample=sample, step_accept=accept,
                        step_sc=torch.zeros(b, length, hidden, dtype=model.dtype, device=device) if sc is None else sc,
                        step_logprob=probs.gather(-1, sample[..., None])[..., 0].log(), step_temperature=temperature,
                        step_n=torch.tensor(n), step_block=torch.tensor(block), step_active=~(frozen | finished))  # fmt: skip
                keep = frozen[:, None]
                canvas = torch.where(keep, canvas, torch.where(accept, sample, noise))
                argmax = torch.where(keep, argmax, new_z.argmax(-1))
                rec.add(step_argmax=argmax)
                z = new_z if z is None else torch.where(keep[..., None], z, new_z)
                stable = (history == argmax[None]).all(-1).all(0)
                if settings.stability_threshold:
                    history = torch.cat([history[1:], argmax[None]])
                confident = Categorical(logits=z).entropy().mean(-1) < settings.confidence_threshold
                stop_at = torch.where(frozen, stop_at, torch.full_like(stop_at, n))
                frozen = frozen | (stable & confident)
                z = z.to(model.dtype)
                sc = model.soft_embeddings(z)
                if frozen.all():
                    break
            stops.append(stop_at)
            readout = argmax.clone()
            if settings.pad_token_id is not None:
                readout[finished] = settings.pad_token_id
            ended = torch.zeros_like(finished) if eos is None else torch.isin(readout, eos).any(-1)
            if eos is not None and settings.pad_token_id is not None:
                seen = torch.isin(readout, eos).cumsum(-1)
                readout[(seen > 0) & ~((seen == 1) & torch.isin(readout, eos))] = settings.pad_token_id
            finished = finished | ended
            sequences, new_context = torch.cat([sequences, readout], 1), readout
            if padded is not None:
                padded = torch.nn.functional.pad(padded, (0, length), value=True)
            if finished.all():
                break
    empty = torch.empty(0)
    get = rec.stacked if record else (lambda key: empty)
    return UniformTrajectory(
        sequences=sequences, prompt_length=p, step_canvas=get("step_canvas"), step_sample=get("step_sample"),
        step_accept=get("step_accept"), step_logprob=get("step_logprob"), step_sc=get("step_sc"),
        step_temperature=get("step_temperature"), step_n=get("step_n"), step_block=get("step_block"),
        step_active=get("step_active"), stop_step=torch.stack(stops), step_argmax=get("step_argmax"),
    )  # fmt: skip
