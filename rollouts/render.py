"""A picture of denoising: the answer after every step, newly committed tokens highlighted."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from unmask.rollouts.trajectory import Trajectory


def render_denoising(traj: Trajectory, tokenizer: Any, *, mask_token_id: int, row: int = 0, mask_text: str = "░") -> list[str]:
    """Rich-markup lines, one per step: the answer of ``row`` after that step.

    Tokens committed at that step are bold green, still-masked positions dim
    (under RCR a position can turn masked again). Needs ``record=True``.
    """
    if traj.step_masked is None:
        raise ValueError("render_denoising needs a trajectory generated with record=True")
    plen = traj.prompt_length
    lines = []
    for t in range(traj.num_steps):
        after = traj.canvas(t + 1, mask_token_id)[row, plen:]
        was_masked = traj.step_masked[t, row]
        pieces = []
        for pos, token in enumerate(after.tolist()):
            if token == mask_token_id:
                pieces.append(f"[dim]{mask_text}[/dim]")
            elif was_masked[pos]:
                pieces.append(f"[bold green]{escape(tokenizer.decode([token]))}[/bold green]")
            else:
                pieces.append(escape(tokenizer.decode([token])))
        lines.append(f"[cyan]{t:>3}[/cyan] " + "".join(pieces))
    return lines
