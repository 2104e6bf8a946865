"""Atomic training checkpoints: trainable weights, optimizer, scheduler, RNG, step, data position.

A LoRA run's weights are stored as a peft adapter directory (``adapter_config.json`` +
``adapter_model.safetensors``), so ``unmask export --adapter`` and ``unmask eval
--adapter`` take ``checkpoint-N`` as it is, and resume reads the same file: the
adapter is stored once. A full fine-tune stores its weights in ``trainable.safetensors``.

A checkpoint is written into a temporary sibling directory and renamed into place,
so a run killed mid-write leaves either the previous checkpoint or the new one,
never a half-written directory that ``resume_from`` would trust. ``trainer_state.json``
records each file's sha256, so a checkpoint damaged later (a truncated copy, a bad
disk) is refused with one line instead of training on from garbage weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from unmask.errors import UserError

WEIGHTS = "trainable.safetensors"
ADAPTER = "adapter_model.safetensors"
STATE = "trainer_state.json"
OPTIM = "optim.pt"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained (the LoRA tensors, or every weight when fully fine-tuning)."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> Path:
    """Write ``directory/checkpoint-{step}`` atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}-", dir=directory))
    try:
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card, not ours to ship
        else:
            save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
            tmp / OPTIM,
        )
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / STATE).write_text(json.dumps({"step": step, **state, "sha256": files}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in directory.glob(".checkpoint-*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The trainer state of ``path`` once every file matches the sha256 it was written with."""
    try:
        state = json.loads((path / STATE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"checkpoint.resume_from: {path / STATE} is corrupt ({err}); resume from an earlier checkpoint-N") from None
    for name, expected in state.get("sha256", {}).items():  # older checkpoints carry no sums
        file = path / name
        if not file.is_file() or sha256(file) != expected:
            raise UserError(
                f"checkpoint.resume_from: {file} is truncated or corrupt (sha256 differs from when it was "
                "written); resume from an earlier checkpoint-N"
            )
    return state


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer state (``step``, …)."""
    path = Path(path)
    is_lora = isinstance(model, PeftModel)
    missing = [name for name in (ADAPTER if is_lora else WEIGHTS, STATE, OPTIM) if not (path / name).is_file()]
    if missing:
        raise UserError(
            f"checkpoint.resume_from: {path} is not an unmask checkpoint of a "
            f"{'LoRA' if is_lora else 'full fine-tuning'} run (missing {', '.join(missing)}); "
            "point it at a checkpoint-N directory of a previous run with the same lora settings"
        )
    state = verify_checkpoint(path)
    load_trainable_weights(path, model, is_lora)
    extra = torch.load(path / OPTIM, weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    return state


def load_trainable_weights(path: Path, model: nn.Module, is_lora: bool) -> None:
    """Copy the checkpoint's weights into ``model``, refusing weights the model does not have."""
    if is_lora:
        try:
            unknown = sorted(set_peft_model_state_dict(model, load_file(str(path / ADAPTER))).unexpected_keys)
        except RuntimeError as err:  # torch's size-mismatch report: another lora.r or model
            raise UserError(
                f"checkpoint.resume_from: {path} was trained with other shapes ({str(err).splitlines()[-1].strip()}); "
                "resume with the same model and lora settings"
            ) from err
    else:
        weights = load_file(str(path / WEIGHTS))
        params = dict(model.named_parameters())
        unknown = sorted(set(weights) - set(params))
        if not unknown:
            with torch.no_grad():
                for name, value in weights.items():
                    params[name].copy_(value)
    if unknown:
        raise UserError(
            f"checkpoint.resume_from: {path} holds weights this model does not have ({unknown[0]}, …); "
            "resume with the same model and lora settings"
        )
