"""unmask: RL post-training for diffusion language models.

The subpackages ``unmask.rl``, ``unmask.rewards``, ``unmask.rollouts`` and
``unmask.kernels`` live in the repository's top-level folders of those names, and
those folders have no ``__init__.py``: a regular package there would hide the
installed distribution of the same name from any script run in the repository
(transformers imports Hugging Face's ``kernels``). An installed wheel holds them
inside ``unmask/``; in a source checkout (an editable install) unmask's search path
is extended to the checkout so that they resolve there (docs/layout.md).
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "rl").is_dir() and (_checkout / "rl").is_dir():
    __path__.append(str(_checkout))
