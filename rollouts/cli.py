"""``unmask sample``: generate for one prompt and show the denoising process step by step."""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.markup import escape

from unmask.models import load_model
from unmask.rollouts.generate import generate
from unmask.rollouts.render import render_denoising


def run_sample(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    tokenizer = model.tokenizer
    text = args.prompt if args.no_chat_template else model.format_prompt(args.prompt)
    prompt_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    traj = generate(
        model,
        prompt_ids,
        gen_length=args.gen_length,
        steps=args.steps,
        block_length=args.block_length or args.gen_length,
        temperature=args.temperature,
        remasking=args.remasking,
        threshold=args.threshold,
        seed=args.seed,
        record=True,
    )
    console = Console(highlight=False)
    console.print(f"[bold]prompt[/bold] {escape(text)}")
    for line in render_denoising(traj, tokenizer, mask_token_id=model.mask_token_id):
        console.print(line)
    answer = traj.answer_ids[0][traj.answer_mask[0]]
    console.print(f"[bold]answer[/bold] {escape(tokenizer.decode(answer.tolist(), skip_special_tokens=True))}")
    console.print(f"forward passes: {int(traj.nfe[0])}")
    return 0
