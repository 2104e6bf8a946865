"""Model families behind one interface: ``tiny()`` / ``tiny_block()`` for a fresh CPU model, ``load_model`` for checkpoints."""

from unmask.models.base import DiffusionLM, positions_from_mask
from unmask.models.dream import Dream, DreamConfig
from unmask.models.llada import LLaDA, LLaDAConfig
from unmask.models.loading import load_model, meta_model
from unmask.models.native import CheckpointError, NativeLM
from unmask.models.sdar import SDAR, SDARConfig
from unmask.models.tiny import TinyConfig, TinyLM, tiny
from unmask.models.tiny_block import TinyBlockConfig, TinyBlockLM, tiny_block

__all__ = [
    "CheckpointError",
    "DiffusionLM",
    "Dream",
    "DreamConfig",
    "LLaDA",
    "LLaDAConfig",
    "NativeLM",
    "SDAR",
    "SDARConfig",
    "TinyBlockConfig",
    "TinyBlockLM",
    "TinyConfig",
    "TinyLM",
    "load_model",
    "meta_model",
    "positions_from_mask",
    "tiny",
    "tiny_block",
]
