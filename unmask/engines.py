"""The generation engines ``unmask eval --engine`` can use.

``unmask`` is the project's own samplers (every family). vLLM serves DiffusionGemma
natively, but no GPU has been available to test an integration, so none is shipped:
an engine joins this tuple together with the test that runs it (docs/diffusion-gemma.md).
"""

from __future__ import annotations

ENGINES = ("unmask",)
