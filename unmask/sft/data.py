"""SFT data: records → (prompt, completion) pairs → token examples → padded batches (docs/sft.md).

Records come from ``data.path`` (JSONL, JSON, CSV, Parquet), ``data.hub_id``, or the
task's own rows (generated Countdown problems with the held-out set removed, a
``data.careless_fraction`` of them answered carelessly). A record
is read as TRL users expect: ``prompt``/``completion`` (strings, or a list of messages
for the prompt; or what ``data.formatting_func`` returns), ``messages`` (the last assistant turn is the completion, earlier turns
the prompt), or ``text`` (no split: the whole text is noised). Without a prompt column
the prompt is the task's ``data.prompt_template`` rendered over the row, byte for byte
the prompt an RL recipe with the same template samples from.

Tokens: the prompt is rendered by the chat template with the generation prompt; the
completion is tokenized on its own and ends with the family's end-of-turn token (EOS
without a chat template), then EOS fill. Rendering the assistant turn through the
template instead (``sft.assistant_through_template``) requires the prompt's tokens to
be a prefix of the conversation's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unmask.data.benchmarks import ROW_BUILDERS, _from_hub, read_records
from unmask.data.countdown import make_careless
from unmask.data.prompts import render_prompt
from unmask.errors import RecipeError, UserError
from unmask.models.base import DiffusionLM
from unmask.plugins import import_function
from unmask.recipe import Recipe
from unmask.sft.config import SFTRecipe
from unmask.sft.loss import SFTBatch

#: named completion layouts for ``data.completion_template``; d1's with a newline inside each tag, the
#: layout its format rewards score
COMPLETION_TEMPLATES: dict[str, str] = {"d1": "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"}

Messages = list[dict[str, str]]


@dataclass
class Pair:
    """One row as text: ``prompt`` None for language-modelling ``text`` rows."""

    prompt: str | Messages | None
    completion: str


@dataclass
class Example:
    """One tokenized row: its prompt, its answer tokens (end token included) and its window."""

    prompt: list[int]
    answer: list[int]
    window: int
    #: truncated to its window (``overflow: cut``): no end token, no fill
    cut: bool = False


@dataclass
class Encoded:
    examples: list[Example]
    long_prompts: int
    overflow: int

    def summary(self) -> str:
        return (f"{len(self.examples)} training rows ({self.long_prompts} dropped for their prompt length, "
                f"{self.overflow} answers over their window)")


def records(recipe: SFTRecipe, fed: Recipe | None = None) -> list[dict[str, Any]]:
    """The raw records: a file, a hub dataset, or the task's rows without the held-out problems of
    this recipe's evaluation and of the fed RL recipe's (SFT must not train on what RL is judged on)."""
    d = recipe.data
    if d.path is not None:
        rows = read_records(Path(d.path))
    elif d.hub_id is not None:
        rows = _from_hub(d.task, d.hub_id, d.split)
    else:
        from unmask.run import eval_rows, training_rows

        # only generated Countdown rows can repeat a held-out problem (other tasks split train/test)
        generated = d.task == "countdown"
        heldout = eval_rows(recipe) + (eval_rows(fed) if fed is not None else []) if generated else []
        rows = training_rows(recipe, heldout)
        if d.careless_fraction:
            make_careless(rows, d.careless_fraction, recipe.seed)
        return rows
    return rows[: d.limit] if d.limit is not None else rows


def s1k_row(row: dict[str, Any]) -> dict[str, Any]:
    """s1K (question, thinking_trajectories, attempt) as a math row whose reasoning is the first trace."""
    traces = row["thinking_trajectories"]
    trace = traces[0] if isinstance(traces, list) else traces
    return {"problem": row["question"], "reasoning": trace, "answer": row["attempt"]}


def to_pair(record: dict[str, Any], index: int, recipe: SFTRecipe) -> Pair:
    """Read one record in the formats TRL users expect (after ``data.columns`` renames)."""
    d = recipe.data
    if d.formatting_func is not None:
        out = import_function(d.formatting_func, "data.formatting_func")(record)
        if not isinstance(out, dict) or "prompt" not in out or "completion" not in out:
            raise UserError(f"data.formatting_func: row {index} gave {type(out).__name__}, not a dict with "
                            "'prompt' and 'completion'")
        return Pair(out["prompt"], str(out["completion"]))
    missing = [source for source in d.columns.values() if source not in record]
    if missing:
        raise UserError(f"data row {index}: no column '{missing[0]}' (named in data.columns); it has {sorted(record)}")
    row = {**record, **{name: record[source] for name, source in d.columns.items()}}
    if d.format == "s1k":
        row = s1k_row(row)
    if "messages" in row:
        messages = list(row["messages"])
        if not messages or messages[-1].get("role") != "assistant":
            raise UserError(f"data row {index}: 'messages' must end with the assistant turn to learn")
        return Pair(messages[:-1], str(messages[-1]["content"]))
    if "text" in row and "prompt" not in row:
        return Pair(None, str(row["text"]))
    if "prompt" not in row and d.task in ROW_BUILDERS and d.format == "auto":
        try:
            row = {**row, **ROW_BUILDERS[d.task](row)}
        except KeyError as exc:
            raise UserError(
                f"data row {index}: no 'prompt' column, and it lacks the column {exc} that task '{d.task}' reads; "
                "map columns with data.columns"
            ) from None
    prompt = row["prompt"] if "prompt" in row else render_prompt(d.task, row, d.prompt_template)
    if "completion" in row:
        return Pair(prompt, str(row["completion"]))
    if d.completion_template is None:
        raise UserError(
            f"data row {index}: no 'completion' column (it has {sorted(row)}); map one with data.columns "
            "or set data.completion_template (e.g. d1)"
        )
    template = COMPLETION_TEMPLATES.get(d.completion_template, d.completion_template)
    try:
        return Pair(prompt, template.format(**row))
    except (KeyError, IndexError) as exc:
        raise UserError(f"data.completion_template: field {exc} is not a column of row {index} ({sorted(row)})") from None


def end_token(model: DiffusionLM, chat: bool) -> int:
    """The token that ends an answer: the family's end-of-turn under its chat template, else EOS."""
    eot = getattr(model, "end_of_turn_id", None)
    return eot if chat and eot in model.eos_token_ids else model.eos_token_ids[0]


def tokenize(pair: Pair, index: int, model: DiffusionLM, recipe: SFTRecipe) -> tuple[list[int], list[int]]:
    """``(prompt ids, answer ids with the end token)``; the prompt moves into the answer when it is scored too."""
    tok, chat = model.tokenizer, recipe.data.chat_template
    only_completion = recipe.sft.completion_only_loss is not False
    if pair.prompt is None:
        if recipe.sft.completion_only_loss:
            raise RecipeError(
                f"data row {index}: 'text' rows have no prompt/completion split; set sft.completion_only_loss: false "
                "(or give prompt/completion columns)"
            )
        return [], ids_of(tok, pair.completion) + [model.eos_token_ids[0]]
    messages = [{"role": "user", "content": pair.prompt}] if isinstance(pair.prompt, str) else pair.prompt
    if chat:
        text = (model.format_prompt(pair.prompt) if isinstance(pair.prompt, str)
                else tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    elif isinstance(pair.prompt, str):
        text = pair.prompt
    else:
        raise UserError(f"data row {index}: a list of messages needs data.chat_template: true")
    prompt = ids_of(tok, text)
    if chat and recipe.sft.assistant_through_template:
        full = ids_of(tok, tok.apply_chat_template([*messages, {"role": "assistant", "content": pair.completion}],
                                                   tokenize=False))
        check_prefix(prompt, full, index)
        answer = full[len(prompt):]
    else:
        answer = ids_of(tok, pair.completion) + [end_token(model, chat)]
    if bool(model.process.is_noise_token(torch.tensor(prompt + answer, dtype=torch.long)).any()):
        raise UserError(f"data row {index}: contains the noise (mask) token of {model.family}; remove it from the text")
    return (prompt, answer) if only_completion else ([], prompt + answer)


def ids_of(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_prefix(prompt: list[int], full: list[int], index: int) -> None:
    """The rendered prompt's tokens must open the rendered conversation, or the answer's start is unknown."""
    if full[: len(prompt)] != prompt:
        at = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), min(len(prompt), len(full)))
        raise UserError(
            f"data row {index}: the chat template's prompt tokens are not a prefix of the conversation's "
            f"(they differ at token {at}); set sft.assistant_through_template: false to tokenize answers on their own"
        )


def encode(pairs: Sequence[Pair], model: DiffusionLM, recipe: SFTRecipe, length: int) -> Encoded:
    """Tokenize every pair and fit it to its window (``sft.eos_fill``, ``sft.overflow``)."""
    s = recipe.sft
    examples, long_prompts, overflow = [], 0, 0
    for index, pair in enumerate(pairs):
        prompt, answer = tokenize(pair, index, model, recipe)
        window = s.max_length - len(prompt) if s.eos_fill == "max_length" else length
        too_long = (s.max_prompt_length is not None and len(prompt) > s.max_prompt_length) or window <= 0 or (
            s.max_length is not None and len(prompt) + window > s.max_length)
        if too_long:
            long_prompts += 1
            continue
        if len(answer) <= window:
            examples.append(Example(prompt, answer, window))
            continue
        overflow += 1
        if s.overflow == "error":
            raise UserError(
                f"data row {index}: the answer has {len(answer)} tokens with its end token, over the window of "
                f"{window}; raise sft.answer_length or set sft.overflow: drop"
            )
        if s.overflow == "cut":
            examples.append(Example(prompt, answer[:window], window, cut=True))
    if not examples:
        raise UserError("data: no training rows left after tokenizing; check sft.answer_length and sft.max_length")
    return Encoded(examples, long_prompts, overflow)


def collate(examples: Sequence[Example], seeds: Sequence[int], pad_id: int, eos_id: int, longest: bool) -> SFTBatch:
    """Left-padded prompts; answers EOS-filled to their window (``longest``: to the batch's longest answer).

    The fill is supervised (the model learns to stop) except in cut rows; columns past a
    row's own window (``eos_fill: max_length``) are neither attended nor scored.
    """
    width = max(len(e.prompt) for e in examples)
    span = max(len(e.answer) for e in examples) if longest else max(e.window for e in examples)
    prompt = torch.full((len(examples), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros(len(examples), width, dtype=torch.bool)
    answer = torch.full((len(examples), span), eos_id, dtype=torch.long)
    attended = torch.zeros(len(examples), span, dtype=torch.bool)
    supervised = torch.zeros(len(examples), span, dtype=torch.bool)
    for i, e in enumerate(examples):
        if e.prompt:
            prompt[i, width - len(e.prompt):] = torch.tensor(e.prompt)
            prompt_mask[i, width - len(e.prompt):] = True
        answer[i, : len(e.answer)] = torch.tensor(e.answer)
        own = span if longest else e.window
        attended[i, :own] = True
        supervised[i, : len(e.answer) if e.cut else own] = True
    full = bool(attended.all())
    return SFTBatch(prompt, prompt_mask, answer, supervised, None if full else attended, list(seeds))
