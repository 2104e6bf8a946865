"""``evaluate``: generate, decode and grade answers for one benchmark.

The CLI and the trainer both call this one function on an in-memory model, so a
run's reported accuracy and ``unmask eval`` on the same checkpoint agree by
construction: same prompts, same batching rules, same seeds, same grader.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import Progress

from unmask.evaluation.benchmarks import GRADER_TASK, reference
from unmask.evaluation.report import Summary, summarize
from unmask.evaluation.settings import EvalSettings
from unmask.evaluation.store import SampleLog, sample_key
from unmask.models.base import DiffusionLM
from unmask.rewards.grading import Grader
from unmask.rollouts.samplers import sample
from unmask.rollouts.trajectory import Trajectory

GenerateFn = Callable[..., Trajectory]


@dataclass
class EvalResult:
    """Every sample record of the call (resumed ones included) and their summaries."""

    records: list[dict[str, Any]]
    summaries: list[Summary]

    def accuracy(self, settings: EvalSettings | None = None) -> float:
        """Accuracy under ``settings`` (or the only setting evaluated)."""
        matching = [s for s in self.summaries if settings is None or s.setting == settings.label]
        if len(matching) != 1:
            raise ValueError(f"expected one summary for {settings}, found {len(matching)}")
        return matching[0].accuracy


def sample_seed(seed: int, bench: str, problem: int, sample: int) -> int:
    """A stable 63-bit seed per (problem, sample): independent of batching and of resume."""
    digest = hashlib.blake2b(f"{seed}/{bench}/{problem}/{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def encode_prompts(
    model: DiffusionLM, texts: Sequence[str], chat_template: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask of (chat-formatted) prompts on the model's device.

    A chat template already writes the special tokens it needs, so the tokenizer
    only adds its own (BOS) when none is applied.
    """
    tok = model.tokenizer
    has_template = chat_template and bool(getattr(tok, "chat_template", None))
    formatted = [model.format_prompt(t) for t in texts] if has_template else list(texts)
    previous, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(formatted, padding=True, return_tensors="pt", add_special_tokens=not has_template)
    finally:
        tok.padding_side = previous
    device = next(model.parameters()).device
    return enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()


def decode_answers(model: DiffusionLM, trajectory: Trajectory) -> list[tuple[str, int]]:
    """(text, token count) of each answer, cut at the first EOS."""
    eos = torch.tensor(model.eos_token_ids, device=trajectory.tokens.device)
    out = []
    for row in trajectory.answer_ids:
        ends = torch.isin(row, eos).nonzero()
        length = int(ends[0]) if len(ends) else len(row)
        out.append((model.tokenizer.decode(row[:length].tolist(), skip_special_tokens=True), length))
    return out


def evaluate(
    model: DiffusionLM,
    rows: Sequence[dict[str, Any]],
    task: str,
    settings: EvalSettings | Sequence[EvalSettings],
    *,
    num_samples: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    chat_template: bool = True,
    log: SampleLog | None = None,
    progress: Progress | None = None,
    generate_fn: GenerateFn = sample,
    grader: Grader | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``rows`` (each with a ``prompt``) of benchmark ``task``.

    With a ``log``, (problem, sample, setting) keys already in it are skipped and
    new records are appended after every batch, which is what makes an interrupted
    run resumable. ``chat_template=False`` feeds the raw prompts (recipes with
    ``data.chat_template: false``). ``generate_fn`` defaults to the in-process sampler the model's process names; a rollout
    pool's ``generate`` with the same signature spreads batches over workers.
    ``grader`` judges the answers (default: a ``Grader`` for this call, whose MATH
    verdicts run under a per-item deadline; a timeout counts as wrong and the record
    says ``grading_timeout``); pass one to reuse its workers across calls.
    """
    if task not in GRADER_TASK:
        raise ValueError(f"no grader for task {task!r}; choose one of {sorted(GRADER_TASK)}")
    grid = [settings] if isinstance(settings, EvalSettings) else list(settings)
    done = log.done if log is not None else set()
    todo = {
        s: [(p, k) for p in range(len(rows)) for k in range(num_samples) if (task, s.label, p, k) not in done]
        for s in grid
    }
    bar = None
    if progress is not None:
        bar = progress.add_task(task, total=sum(len(units) for units in todo.values()))
    was_training = model.training
    model.eval()
    fresh: list[dict[str, Any]] = []
    owned = grader is None
    grader = Grader() if grader is None else grader
    try:
        for setting, units in todo.items():
            for start in range(0, len(units), batch_size):
                batch = _run_batch(
                    model, rows, task, setting, units[start : start + batch_size], seed, chat_template, generate_fn,
                    grader,
                )
                fresh.extend(batch)
                if log is not None:
                    log.append(batch)
                if bar is not None:
                    progress.advance(bar, len(batch))
    finally:
        model.train(was_training)
        if owned:
            grader.close()
    wanted = {(task, s.label, p, k) for s in grid for p in range(len(rows)) for k in range(num_samples)}
    records = [r for r in (log.records if log is not None else fresh) if sample_key(r) in wanted]
    return EvalResult(records=records, summaries=summarize(records))


def _run_batch(
    model: DiffusionLM,
    rows: Sequence[dict[str, Any]],
    task: str,
    setting: EvalSettings,
    units: Sequence[tuple[int, int]],
    seed: int,
    chat_template: bool,
    generate_fn: GenerateFn,
    grader: Grader,
) -> list[dict[str, Any]]:
    """Generate, decode and grade one batch of (problem, sample) units under ``setting``."""
    prompts = [rows[p]["prompt"] for p, _ in units]
    ids, mask = encode_prompts(model, prompts, chat_template)
    seeds = [sample_seed(seed, task, p, k) for p, k in units]
    started = time.perf_counter()
    trajectory = generate_fn(model, ids, attention_mask=mask, seed=seeds, **setting.as_dict())
    seconds = (time.perf_counter() - started) / len(units)
    answers = decode_answers(model, trajectory)
    refs = [reference(task, rows[p]) for p, _ in units]
    verdicts = grader.grade_many(GRADER_TASK[task], [text for text, _ in answers], refs)
    records = []
    for (p, k), (completion, length), verdict, ref, nfe, row_seed in zip(
        units, answers, verdicts, refs, trajectory.nfe.tolist(), seeds, strict=True
    ):
        records.append(
            {
                "bench": task, "setting": setting.label, "problem": p, "sample": k,
                "settings": setting.as_dict(), "seed": row_seed, "prompt": rows[p]["prompt"],
                "completion": completion, "extracted": verdict.extracted, "correct": verdict.correct,
                "score": verdict.score, "error": verdict.error, "grading_timeout": verdict.timed_out,
                "reference": ref,
                "answer_tokens": length, "nfe": nfe, "seconds": seconds,
            }
        )  # fmt: skip
    return records
