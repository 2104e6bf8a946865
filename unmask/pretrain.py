"""``unmask pretrain``: masked-diffusion SFT of a tiny model on synthetic task data.

This is how the shipped ``builtin:tiny-countdown`` checkpoint is made: a fresh
tiny LLaDA-shaped model learns to answer 3-number Countdown prompts with
``<answer>EXPR</answer>`` followed by EOS padding. The objective is LLaDA's SFT
loss: the prompt is never masked, each answer token is masked with probability
``t ~ U(eps, 1)`` (one ``t`` per sequence) and the cross-entropy on the masked
tokens is weighted by ``1/t`` and normalised by the answer length, which makes it
an upper bound of the answer's negative log-likelihood.

Three in ten demonstrations are careless (``careless_fraction``): the numbers
simply added up, whatever the target, like the mixed-quality answers of scraped SFT
data. This gives the model a habit that reward can remove and that is not tied to
particular problems; a model trained on clean demonstrations only showed no
held-out RL gain in any configuration measured (docs/default-run.md, docs/history.md).

Everything is a function of ``--seed`` and the step count (never of wall time),
and runs with a fixed number of CPU threads, so ``make tiny-model`` reproduces the
shipped weights byte for byte. Problems of the held-out evaluation set
(``unmask.evaluation.benchmarks``) are removed from the training stream, so evaluation measures
generalisation to unseen problems rather than recall.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from unmask.assets.ship import HASH_FILE, install
from unmask.data import countdown, render_prompt
from unmask.errors import UserError
from unmask.evaluation.benchmarks import COUNTDOWN_EVAL_SIZE, benchmark_rows
from unmask.models.base import DiffusionLM
from unmask.models.generation import GenerationDefaults, write_generation_defaults
from unmask.rl.rollout import encode_prompts
from unmask.sft.loss import LossSettings, RowRandom, SFTBatch, family_corruption, sft_loss

#: training problems are drawn from seeds offset from the user seed (the eval seed is far away)
TRAIN_SEED_OFFSET = 1_000
#: the tiny model's prompt: the standard Countdown prompt without its constant middle
#: sentence, which costs 30 of 51 tokens and most of the compute; the tiny recipes
#: set ``data.prompt_template`` to this string
TINY_TEMPLATE = (
    "Using the numbers {nums}, create an equation that equals {target}. "
    "Put the equation in <answer> </answer> tags."
)
#: the settings of the shipped model (``make tiny-model``)
DEFAULT_STEPS = 18_000
TASKS = ("countdown",)


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of a pretraining run (the defaults make the shipped model)."""

    steps: int = DEFAULT_STEPS
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    #: fraction of the run at the end over which the learning rate decays linearly to 0
    decay_fraction: float = 0.3
    gen_length: int = 16
    min_mask_ratio: float = 1e-3
    pool_size: int = 20_000
    #: one thread: float sums do not depend on the machine's core count, so the bytes reproduce
    threads: int = 1
    #: smaller than ``TinyConfig``'s default: at a fixed CPU budget it sees more steps (d 128 × 4
    #: layers reached < 3 % where this shape reached 20 %). The prompt does not attend to the
    #: answer, so a prefix KV cache is exact: 3000 steps of this cost 5 points (14.8 vs 19.8 %)
    #: against full attention; 6000 clean steps reach 23.0 %, 18 000 with 30 % careless 16.2 %
    model: dict[str, Any] = field(
        default_factory=lambda: {
            "d_model": 96, "n_layers": 3, "n_heads": 4, "mlp_hidden_size": 256, "prompt_attends_answer": False,
        }  # fmt: skip
    )
    generator: dict[str, Any] = field(
        default_factory=lambda: {"num_numbers": 3, "min_number": 1, "max_number": 10}
    )
    #: share of demonstrations replaced by a careless answer that ignores the target (the
    #: numbers added up in the order given): greedy decoding then answers carelessly on
    #: 66 % of held-out problems, a prompt-independent habit for RL to remove
    careless_fraction: float = 0.3


def problem_key(row: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """Identity of a Countdown problem regardless of the order its numbers are shown in."""
    return tuple(sorted(row["nums"])), int(row["target"])


def training_rows(config: PretrainConfig, seed: int) -> list[dict[str, Any]]:
    """Synthetic problems for pretraining, with every held-out problem removed."""
    heldout = benchmark_rows("countdown", limit=COUNTDOWN_EVAL_SIZE, generator=config.generator)
    excluded = {problem_key(r) for r in heldout}
    rows = countdown.generate(config.pool_size, seed=seed + TRAIN_SEED_OFFSET, **config.generator)
    rows = [r for r in rows if problem_key(r) not in excluded]
    countdown.make_careless(rows, config.careless_fraction, seed)
    return rows


def answer_text(row: dict[str, Any]) -> str:
    return f"<answer>{row['solution']}</answer>"


@dataclass
class EncodedRows:
    """Left-padded prompts and EOS-padded answers as tensors."""

    prompt_ids: torch.Tensor  # [N, P]
    prompt_mask: torch.Tensor  # [N, P] bool
    answer_ids: torch.Tensor  # [N, gen_length]


def encode(model: DiffusionLM, rows: Iterable[dict[str, Any]], gen_length: int) -> EncodedRows:
    """Tokenise prompts (left padding, like the sampler) and answers (EOS to ``gen_length``)."""
    tok = model.tokenizer
    rows = list(rows)
    answers = []
    for row in rows:
        answer = tok(answer_text(row), add_special_tokens=False)["input_ids"]
        if len(answer) > gen_length:
            raise UserError(f"pretraining answer {answer_text(row)!r} is longer than gen_length {gen_length}")
        answers.append(answer + [model.eos_token_ids[0]] * (gen_length - len(answer)))
    texts = [render_prompt("countdown", row, TINY_TEMPLATE) for row in rows]
    ids, mask = encode_prompts(tok, texts, model.pad_token_id)
    return EncodedRows(ids, mask, torch.tensor(answers, dtype=torch.long))


def masked_diffusion_loss(
    model: DiffusionLM,
    batch: EncodedRows,
    generator: torch.Generator,
    min_mask_ratio: float = 1e-3,
) -> torch.Tensor:
    """LLaDA's SFT loss: ``E_t [ 1/t · Σ_masked CE ] / answer length``, prompt never masked.

    It is ``unmask sft``'s loss (unmask/sft/loss.py) with the tiny defaults, drawing
    from one generator for the batch as this trainer always has.
    """
    answer = batch.answer_ids
    sft_batch = SFTBatch(batch.prompt_ids, batch.prompt_mask, answer, torch.ones_like(answer, dtype=torch.bool))
    settings = LossSettings(epsilon=min_mask_ratio)
    corruption = family_corruption(model, full_logits=True)
    return sft_loss(model, sft_batch, RowRandom(len(answer), generator), settings, corruption)


def learning_rate(step: int, config: PretrainConfig) -> float:
    """Warm-up, constant, then a linear decay to zero over the last ``decay_fraction``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    decay_start = int(config.steps * (1 - config.decay_fraction))
    if step < decay_start:
        return config.learning_rate
    return config.learning_rate * (config.steps - step) / max(1, config.steps - decay_start)


def pretrain(config: PretrainConfig, seed: int, log_every: int = 100) -> DiffusionLM:
    """Train a fresh tiny model; identical outputs for identical ``(config, seed)``."""
    from unmask.models.tiny import tiny

    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    model = tiny(config.model, seed=seed)
    data = encode(model, training_rows(config, seed), config.gen_length)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.98)
    )
    generator = torch.Generator().manual_seed(seed)
    n_rows = data.answer_ids.shape[0]
    started, running = time.perf_counter(), 0.0
    model.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        index = torch.randint(n_rows, (config.batch_size,), generator=generator)
        batch = EncodedRows(data.prompt_ids[index], data.prompt_mask[index], data.answer_ids[index])
        loss = masked_diffusion_loss(model, batch, generator, config.min_mask_ratio)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if log_every and (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - started
            print(
                f"step {step + 1}/{config.steps}  loss {running / log_every:.4f}  "
                f"lr {learning_rate(step, config):.2e}  {elapsed:.0f}s",
                flush=True,
            )
            running = 0.0
    model.eval()
    return model


def generation_defaults(config: PretrainConfig, task: str) -> GenerationDefaults:
    """How the pretrained model answers: greedy, one token per step, answers as long as in pretraining."""
    length = config.gen_length
    return GenerationDefaults(
        gen_length=length, steps=length, block_length=length, temperature=0.0, remasking="low_confidence", task=task
    )


def save_atomically(model: DiffusionLM, out: str | Path, generation: GenerationDefaults | None = None) -> Path:
    """Write the checkpoint (and its sha256) into ``out`` atomically (``unmask.assets.ship.install``)."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if generation is not None:
            write_generation_defaults(tmp, generation)

    return install(fill, out)


def steps_for_minutes(config: PretrainConfig, minutes: float, seed: int) -> int:
    """Translate a time budget into a step count by timing a few steps on this machine."""
    probe = replace(config, steps=10, warmup_steps=1, pool_size=500)
    started = time.perf_counter()
    pretrain(probe, seed, log_every=0)
    per_step = (time.perf_counter() - started) / probe.steps
    return max(1, int(minutes * 60 / per_step))


def run_pretrain(args: argparse.Namespace) -> int:
    """CLI entry: ``unmask pretrain --task countdown --out DIR [--steps N | --minutes M] --seed S``."""
    if args.task not in TASKS:
        raise UserError(f"--task {args.task!r}: pretraining supports {', '.join(TASKS)}")
    if args.steps is not None and args.minutes is not None:
        raise UserError("give either --steps (reproducible) or --minutes, not both")
    if (args.steps is not None and args.steps <= 0) or (args.minutes is not None and args.minutes <= 0):
        raise UserError("--steps and --minutes must be positive")
    config = PretrainConfig()
    steps = args.steps
    if args.minutes is not None:
        steps = steps_for_minutes(config, args.minutes, args.seed)
        print(f"{args.minutes} min ≈ {steps} steps on this machine (rerun with --steps {steps} to reproduce)")
    steps = steps or config.steps
    config = replace(config, steps=steps, warmup_steps=min(config.warmup_steps, math.ceil(steps / 10)))
    model = pretrain(config, args.seed)
    out = save_atomically(model, args.out, generation_defaults(config, args.task))
    print(f"wrote {out} (sha256 {(out / HASH_FILE).read_text().split()[0]})")
    return 0
