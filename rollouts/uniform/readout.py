"""Ending a DiffusionGemma round: the argmax canvas is the block; EOS padding; the block joins the context."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unmask.rollouts.uniform.state import UniformCanvas


class ArgmaxReadout:
    """Commits the round's argmax canvas (the next round's start encodes it into the cache). With both ids
    set, a finished row's block and everything after a block's first EOS are ``pad_token_id``.
    ``True`` (no later round) once every row has an EOS."""

    def __init__(self, canvas: UniformCanvas, eos_token_id: int | None, pad_token_id: int | None) -> None:
        self.canvas, self.pad = canvas, pad_token_id
        self.eos = None if eos_token_id is None else torch.tensor([eos_token_id], device=canvas.sequences.device)

    def __call__(self, k: int) -> bool:
        c = self.canvas
        c.stops.append(c.stop_at)
        readout = c.argmax.clone()
        if self.pad is not None:
            readout[c.finished] = self.pad
        eos = None if self.eos is None else torch.isin(readout, self.eos)
        ended = torch.zeros_like(c.finished) if eos is None else eos.any(-1)
        if eos is not None and self.pad is not None:
            seen = eos.cumsum(-1)
            readout[(seen > 0) & ~((seen == 1) & eos)] = self.pad
        c.finished = c.finished | ended
        c.sequences, c.context = torch.cat([c.sequences, readout], 1), readout
        if c.padded is not None:
            c.padded = F.pad(c.padded, (0, readout.shape[1]), value=True)
        return bool(c.finished.all())
