"""Pictures of denoising: the answer after every step, newly committed tokens highlighted.

``denoising_frames`` reads a recorded trajectory once; the terminal view
(``render_denoising``, rich markup) and the file a person can open
(``denoising_html``, one self-contained page) both draw from it.
"""

from __future__ import annotations

import html
from typing import Any, Literal

from rich.markup import escape

from unmask.diffusion.process import DiffusionProcess
from unmask.rollouts.trajectory import Trajectory

State = Literal["masked", "new", "kept"]
Frame = list[tuple[str, State]]


def denoising_frames(traj: Trajectory, tokenizer: Any, *, process: DiffusionProcess, row: int = 0) -> list[Frame]:
    """One frame per step: ``(token text, state)`` for every answer position of ``row`` after that step.

    ``new`` marks tokens committed at that step, ``masked`` positions still masked
    (under RCR a position can turn masked again). Needs ``record=True``.
    """
    if traj.step_masked is None:
        raise ValueError("denoising pictures need a trajectory generated with record=True")
    plen = traj.prompt_length
    frames = []
    for t in range(traj.num_steps):
        after = traj.canvas(t + 1, process)[row, plen:]
        was_masked = traj.step_masked[t, row]
        frame: Frame = []
        noised = process.noised(after).tolist()
        for pos, token in enumerate(after.tolist()):
            if noised[pos]:
                frame.append(("", "masked"))
            else:
                frame.append((tokenizer.decode([token]), "new" if was_masked[pos] else "kept"))
        frames.append(frame)
    return frames


def render_denoising(traj: Trajectory, tokenizer: Any, *, process: DiffusionProcess, row: int = 0, mask_text: str = "░") -> list[str]:
    """Rich-markup lines, one per step: new tokens bold green, masked positions dim."""
    style = {"new": "bold green", "masked": "dim"}
    lines = []
    for t, frame in enumerate(denoising_frames(traj, tokenizer, process=process, row=row)):
        pieces = []
        for text, state in frame:
            shown = mask_text if state == "masked" else escape(text)
            pieces.append(f"[{style[state]}]{shown}[/{style[state]}]" if state in style else shown)
        lines.append(f"[cyan]{t:>3}[/cyan] " + "".join(pieces))
    return lines


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: ui-monospace, monospace; margin: 2em; background: #fafafa; }}
.frame {{ white-space: pre; line-height: 1.8; }}
.step {{ color: #0a7ea4; display: inline-block; width: 3.5em; }}
.tok {{ padding: 0 1px; }} .new {{ background: #b7f0b1; font-weight: bold; }}
.masked {{ color: #bbb; }}
body.playing .frame {{ display: none; }} body.playing .frame.on {{ display: block; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="prompt">{prompt}</p>
<p><button onclick="play()">play</button> one line per denoising step;
<span class="tok new">green</span> = committed at that step, <span class="masked">░</span> = still masked</p>
{frames}
<p class="answer">{footer}</p>
<script>
function play() {{
  const frames = document.querySelectorAll('.frame'); let i = 0;
  document.body.classList.add('playing');
  const tick = () => {{ frames.forEach((f, j) => f.classList.toggle('on', j === i)); i += 1;
    if (i < frames.length) setTimeout(tick, 400); else setTimeout(() => document.body.classList.remove('playing'), 1200); }};
  tick();
}}
</script>
</body></html>
"""


def denoising_html(frames: list[Frame], *, title: str, prompt: str, footer: str, mask_text: str = "░") -> str:
    """A self-contained HTML page: every frame as a line (a ``play`` button animates them)."""
    lines = []
    for t, frame in enumerate(frames):
        spans = "".join(
            f'<span class="tok {state}">{html.escape(mask_text if state == "masked" else text)}</span>'
            for text, state in frame
        )
        lines.append(f'<div class="frame" data-step="{t}"><span class="step">{t:>3}</span>{spans}</div>')
    return _PAGE.format(
        title=html.escape(title), prompt=html.escape(prompt), frames="\n".join(lines), footer=html.escape(footer)
    )
