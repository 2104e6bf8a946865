"""``unmask sample``: a first look at a dLLM, one denoising step per line.

Decoding settings come from the command line, else from the checkpoint's
``generation_config.json`` (how the model was trained to answer), else the
fallbacks below. Without ``--prompt`` the model gets a held-out problem of its
task in the exact prompt format it was trained on, and the run ends with the
extracted answer and the grader's verdict. ``--save page.html`` writes the
denoising as a page a person can open.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from unmask.errors import UserError
from unmask.models import load_model
from unmask.models.generation import GenerationDefaults, read_generation_defaults
from unmask.rl.rollout import decode_answers, encode_prompts
from unmask.rollouts.render import denoising_html, render_denoising, step_frames
from unmask.rollouts.sampler_config import SamplerConfig, cli_label
from unmask.rollouts.sampler_flags import given_settings
from unmask.rollouts.samplers import sample

#: answer length where neither the command line nor the checkpoint gives one
FALLBACK_LENGTH = 32
#: without --problem: the first of this many held-out problems the model solves is shown
SEARCH = 16


def settings(args: argparse.Namespace, defaults: GenerationDefaults) -> dict[str, Any]:
    """Sampler settings: the command line's, else the checkpoint's generation config, else fallbacks:
    one token per step in a single block, and ``SamplerConfig``'s defaults (greedy, low-confidence).
    """
    given = given_settings(args)
    chosen = {**defaults.sampler_settings(own_length="gen_length" not in given), **given}
    gen_length = chosen.setdefault("gen_length", FALLBACK_LENGTH)
    chosen.setdefault("steps", gen_length)
    chosen["block_length"] = min(chosen.get("block_length", gen_length), gen_length)
    return SamplerConfig.checked(cli_label, **chosen).generate_kwargs()


def held_out(task: str, family: str, problem: int | None) -> list[dict[str, Any]]:
    """Held-out problems of ``task`` in the prompt format the model family was trained on."""
    from unmask.evaluation.benchmarks import COUNTDOWN_EVAL_SIZE, benchmark_rows
    from unmask.evaluation.cli import family_template

    if task == "countdown" and problem is not None and problem >= COUNTDOWN_EVAL_SIZE:
        raise UserError(f"--problem {problem}: the countdown held-out set has {COUNTDOWN_EVAL_SIZE} problems")
    count = SEARCH if problem is None else problem + 1
    rows = benchmark_rows(task, limit=count, template=family_template(family, task))
    if problem is not None and problem >= len(rows):
        raise UserError(f"--problem {problem}: the {task} held-out set has {len(rows)} problems")
    return rows if problem is None else rows[problem:]


@dataclass
class Posed:
    """What the model is asked: prompt texts and, for held-out problems, their rows."""

    texts: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    task: str | None = None
    #: held-out index of ``rows[0]``
    first: int = 0


def pose(args: argparse.Namespace, model: Any, defaults: GenerationDefaults) -> Posed:
    """The user's ``--prompt``, or held-out problems of the model's task posed as ``unmask eval`` poses them."""
    if args.prompt is not None:
        return Posed([args.prompt if args.no_chat_template else model.format_prompt(args.prompt)])
    task = args.task or defaults.task
    if task is None:
        raise UserError(f"{args.model} names no task in its generation_config.json: pass --prompt TEXT or --task NAME")
    from unmask.evaluation.benchmarks import BENCHMARKS

    if task not in BENCHMARKS:
        raise UserError(f"--task {task!r}: choose one of {', '.join(BENCHMARKS)}")
    rows = held_out(task, model.family, args.problem)
    return Posed([model.format_prompt(row["prompt"]) for row in rows], rows, task, args.problem or 0)


def run_sample(args: argparse.Namespace) -> int:
    if args.problem is not None and args.prompt is not None:
        raise UserError("give either --prompt (your own text) or --problem N (a held-out problem), not both")
    if args.problem is not None and args.problem < 0:
        raise UserError(f"--problem must be >= 0, got {args.problem}")
    if args.save:
        check_save_path(args.save)
    model = load_model(args.model)
    defaults = read_generation_defaults(args.model)
    posed = pose(args, model, defaults)
    tokenizer = model.tokenizer
    prompt_ids, attention = encode_prompts(tokenizer, posed.texts, model.pad_token_id)
    chosen = settings(args, defaults)
    seeds = [args.seed] * len(posed.texts)  # each problem sampled as if alone
    traj = sample(model, prompt_ids, attention_mask=attention, seed=seeds, record=True, **chosen)
    answers = decode_answers(tokenizer, traj.answer_ids, model.eos_token_ids)
    verdicts = [_grade(posed.task, a, r) for a, r in zip(answers, posed.rows, strict=False)]
    row = next((i for i, v in enumerate(verdicts) if v.correct), 0)  # the first one solved, when searching
    verdict = verdicts[row] if verdicts else None

    console = Console(highlight=False)
    if posed.rows:
        last = len(posed.rows) - 1
        how = "" if args.problem is not None else (
            f" (the first of held-out problems 0-{last} it solves; --problem N shows any)"
            if verdict.correct else f" (it solves none of problems 0-{last}; --problem N shows any)"
        )
        console.print(f"[bold]{posed.task} held-out problem {posed.first + row}[/bold]{how}")
    console.print(f"[bold]prompt[/bold] {escape(posed.texts[row])}")
    console.print(f"[dim]decoding: {decoding(chosen, traj.settings)}[/dim]")
    for line in render_denoising(traj, tokenizer, process=model.process, row=row):
        console.print(line)
    console.print(f"[bold]answer[/bold] {escape(answers[row])}")
    footer = f"answer: {answers[row]}"
    if verdict is not None:
        mark = "[green]correct[/green]" if verdict.correct else "[red]wrong[/red]"
        console.print(f"[bold]extracted[/bold] {escape(str(verdict.extracted))}  {mark}")
        footer += f"  |  extracted: {verdict.extracted}  |  {'correct' if verdict.correct else 'wrong'}"
    console.print(f"forward passes: {int(traj.nfe[row])}")
    if args.save:
        frames = step_frames(traj, tokenizer, process=model.process, row=row)
        page = denoising_html(frames, title=f"unmask sample: {args.model}", prompt=posed.texts[row], footer=footer)
        console.print(f"wrote {save_page(args.save, page)}")
    return 0


def decoding(chosen: dict[str, Any], ran: dict[str, Any]) -> str:
    """One line on how the answer was decoded (the uniform sampler's own settings for DiffusionGemma)."""
    if ran.get("sampler") == "uniform":
        return (f"{ran['max_new_tokens']} tokens, {ran['steps']} steps per canvas, uniform noise: entropy bound "
                f"{ran['entropy_bound']}, temperature {ran['t_max']} -> {ran['t_min']}, argmax readout")
    return (f"{chosen['gen_length']} tokens in {chosen['steps']} steps, block {chosen['block_length']}, "
            f"{chosen['remasking']}, temperature {chosen['temperature']}")


def _grade(task: str, answer: str, row: dict[str, Any]) -> Any:
    from unmask.evaluation.benchmarks import GRADER_TASK, reference
    from unmask.rewards.graders import grade

    return grade(GRADER_TASK[task], answer, **reference(task, row))


def check_save_path(path: str) -> Path:
    """``--save``'s target, checked before any generation is spent."""
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--save {path}: the picture is an HTML page; name the file *.html")
    if not out.parent.is_dir():
        raise UserError(f"--save {path}: directory {out.parent} does not exist")
    return out


def save_page(path: str, page: str) -> Path:
    """Write the HTML page atomically (a temp file renamed into place)."""
    out = check_save_path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


__all__ = ["run_sample", "save_page", "settings"]
