"""Pictures of denoising: the answer after every step, newly committed tokens highlighted.

``step_frames`` reads a recorded trajectory once; the terminal view
(``render_denoising``, rich markup) and the file a person can open
(``denoising_html``, one self-contained page) both draw from it. A masked family's
frames (``denoising_frames``) show committed tokens and masks; a uniform-noise
family's (``renoise_frames``, DiffusionGemma) show the whole canvas after each step:
the accepted draws, and the fresh random ids at the renoised slots.
"""

from __future__ import annotations

import html
from typing import Any, Literal

from rich.markup import escape

from unmask.diffusion.process import DiffusionProcess
from unmask.rollouts.trajectory import Trajectory
from unmask.rollouts.uniform_sampler import UniformTrajectory

State = Literal["masked", "new", "kept", "accepted", "renoised"]
Frame = list[tuple[str, State]]
#: a renoised slot at a canvas's last step: its fresh id is drawn but never recorded
UNRECORDED = "·"


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


#: whitespace a random canvas may hold, drawn visibly so a frame stays one line
VISIBLE = str.maketrans({"\n": "⏎", "\r": "␍", "\t": "⇥", "\x0b": "␋", "\x0c": "␌"})


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each id's text on its own, line breaks and tabs drawn as symbols."""
    return [tokenizer.decode([i]).translate(VISIBLE) for i in ids]


def renoise_frames(run: UniformTrajectory, tokenizer: Any, *, row: int = 0) -> list[tuple[str, Frame]]:
    """``(label, frame)`` per step ``row`` ran, labelled ``block:n``, then each canvas's readout (``block:out``).

    A step's frame is the committed earlier canvases (``kept``) and the canvas it leaves:
    ``accepted`` slots hold the draw s_n, ``renoised`` ones the fresh uniform id (the next
    step's input; ``UNRECORDED`` after a canvas's last step). The readout, the argmax the
    canvas commits, is ``new``. Steps where the row had stopped or ended are left out.
    """
    text = lambda ids: token_texts(tokenizer, ids)  # noqa: E731
    plen, length = run.prompt_length, run.step_canvas.shape[-1]
    answer = run.sequences[row, plen:].tolist()
    blocks, active = run.step_block.tolist(), run.step_active[:, row].tolist()
    frames: list[tuple[str, Frame]] = []
    for t, block in enumerate(blocks):
        if not active[t]:
            continue
        kept: Frame = [(tok, "kept") for tok in text(answer[: block * length])]
        same_next = t + 1 < len(blocks) and blocks[t + 1] == block
        after = text(run.step_canvas[t + 1, row].tolist()) if same_next else [UNRECORDED] * length
        drawn, accepted = text(run.step_sample[t, row].tolist()), run.step_accept[t, row].tolist()
        canvas: Frame = [(d, "accepted") if a else (n, "renoised") for d, n, a in zip(drawn, after, accepted, strict=True)]
        frames.append((f"{block}:{int(run.step_n[t]):>2}", kept + canvas))
        if not (same_next and active[t + 1]):
            readout = text(answer[block * length : (block + 1) * length])
            frames.append((f"{block}:out", kept + [(tok, "new") for tok in readout]))
    return frames


def step_frames(traj: Trajectory, tokenizer: Any, *, process: DiffusionProcess, row: int = 0) -> list[tuple[str, Frame]]:
    """``(label, frame)`` per step: the renoising canvas of a uniform-noise rollout, else the masked answer."""
    if traj.renoise is not None:
        return renoise_frames(traj.renoise, tokenizer, row=row)
    return [(f"{t:>3}", frame) for t, frame in enumerate(denoising_frames(traj, tokenizer, process=process, row=row))]


#: rich styles of the terminal view (``kept`` is plain)
STYLES = {"new": "bold green", "masked": "dim", "accepted": "bold green", "renoised": "dim red"}


def render_denoising(traj: Trajectory, tokenizer: Any, *, process: DiffusionProcess, row: int = 0, mask_text: str = "░") -> list[str]:
    """Rich-markup lines, one per step: new (or accepted) tokens bold green, masked positions dim,
    renoised slots dim red."""
    lines = []
    for label, frame in step_frames(traj, tokenizer, process=process, row=row):
        pieces = []
        for text, state in frame:
            shown = mask_text if state == "masked" else escape(text)
            pieces.append(f"[{STYLES[state]}]{shown}[/{STYLES[state]}]" if state in STYLES else shown)
        lines.append(f"[cyan]{label}[/cyan] " + "".join(pieces))
    return lines


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: ui-monospace, monospace; margin: 2em; background: #fafafa; }}
.frame {{ white-space: pre; line-height: 1.8; }}
.step {{ color: #0a7ea4; display: inline-block; width: 3.5em; }}
.tok {{ padding: 0 1px; }} .new {{ background: #b7f0b1; font-weight: bold; }}
.masked {{ color: #bbb; }} .accepted {{ background: #b7f0b1; font-weight: bold; }}
.renoised {{ color: #c66; text-decoration: line-through; }}
body.playing .frame {{ display: none; }} body.playing .frame.on {{ display: block; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="prompt">{prompt}</p>
<p><button onclick="play()">play</button> one line per denoising step; {legend}</p>
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


LEGENDS = {
    "masked": '<span class="tok new">green</span> = committed at that step, <span class="masked">░</span> = still masked',
    "renoise": '<span class="tok accepted">green</span> = accepted at that step, <span class="renoised">red</span> = '
               'renoised (a fresh random token), <span class="tok new">out</span> = the canvas committed',
}


def denoising_html(frames: list[tuple[str, Frame]], *, title: str, prompt: str, footer: str, mask_text: str = "░") -> str:
    """A self-contained HTML page: every ``(label, frame)`` of ``step_frames`` as a line (``play`` animates them)."""
    lines = []
    for t, (label, frame) in enumerate(frames):
        spans = "".join(
            f'<span class="tok {state}">{html.escape(mask_text if state == "masked" else text)}</span>'
            for text, state in frame
        )
        lines.append(f'<div class="frame" data-step="{t}"><span class="step">{html.escape(label)}</span>{spans}</div>')
    renoise = any(state == "accepted" for _, frame in frames for _, state in frame)
    return _PAGE.format(
        title=html.escape(title), prompt=html.escape(prompt), frames="\n".join(lines), footer=html.escape(footer),
        legend=LEGENDS["renoise" if renoise else "masked"],
    )
