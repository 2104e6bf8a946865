"""The sampler's named choices, in one torch-free place that recipes, the CLI and the sampler share.

Each choice is implemented where it is used (``cache``, ``schedules``, ``confidence``);
these tuples name them, so a recipe's ``Literal`` fields, the evaluation options and the
sampler's own checks cannot disagree.
"""

from __future__ import annotations

#: KV-cache modes of a step's forward (``rollouts.cache``; ``block`` in ``rollouts.block_forward``)
CACHE_MODES = ("none", "prompt", "prefix", "dual", "delayed", "block")
#: which positions a step commits or re-masks (``rollouts.confidence``)
REMASKING = ("low_confidence", "random", "margin", "entropy", "rcr")
#: tokens committed per step of a block (``rollouts.schedules``)
SCHEDULES = ("linear", "cosine", "pow_k", "log", "exp")
#: confidence measures by name (``rollouts.confidence``); None picks the strategy's own
CONFIDENCE_NAMES = ("probability", "sampling_probability", "margin", "entropy", "random")
#: the confidence each remasking strategy uses unless ``confidence=`` overrides it
DEFAULT_CONFIDENCE = {
    "low_confidence": "probability",
    "random": "random",
    "margin": "margin",
    "entropy": "entropy",
    "rcr": "sampling_probability",
}
