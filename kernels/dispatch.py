"""Which implementation a kernel call runs: the Triton kernel or its torch twin.

Resolution order: a backend forced with :func:`use_backend` / :func:`set_backend`,
then the ``UNMASK_KERNELS`` environment variable (``torch``, ``triton`` or
``auto``), then ``auto``: Triton for CUDA tensors when ``triton`` imports, the
torch twin otherwise. Forcing Triton on CPU tensors is allowed only under the
Triton interpreter (``TRITON_INTERPRET=1``), which is how the tests run it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "UNMASK_KERNELS"

_forced: str | None = None


def _check(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not a kernel backend; use one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` can work here (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def set_backend(name: str | None) -> None:
    """Force a backend for every later call (``None`` goes back to the env var / auto)."""
    global _forced
    _forced = None if name is None else _check(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block (restores the previous choice)."""
    global _forced
    previous, _forced = _forced, _check(name, "use_backend")
    try:
        yield
    finally:
        _forced = previous


def requested_backend() -> str:
    """The backend asked for (``auto`` unless forced or set in ``UNMASK_KERNELS``)."""
    if _forced is not None:
        return _forced
    return _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


def backend_for(tensor: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for a call on ``tensor``; one clear error if impossible."""
    name = requested_backend()
    if name == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if name == "triton":
        if not triton_available():
            raise RuntimeError(f"{ENV_VAR}=triton but triton is not installed; pip install triton or use torch")
        if not tensor.is_cuda and not interpreting():
            raise RuntimeError(
                f"{ENV_VAR}=triton needs CUDA tensors, or TRITON_INTERPRET=1 to run on the CPU "
                f"(got a {tensor.device.type} tensor)"
            )
    return name


def enable_interpreter() -> None:
    """Run Triton kernels in the CPU interpreter from now on in this process (tests, debugging).

    ``triton.jit`` picks interpreted or compiled mode when a function is decorated,
    including Triton's own ``tl.*`` helpers at ``import triton``. Libraries (torch's
    dynamo) often import triton first, so setting ``TRITON_INTERPRET`` later has no
    effect; this drops the compiled-mode modules so that the next import re-decorates.
    """
    os.environ["TRITON_INTERPRET"] = "1"
    import sys

    standard = sys.modules.get("triton.language.standard")
    if standard is None or type(standard.zeros).__name__ == "InterpretedFunction":
        return
    kernels = ("unmask.kernels.sampling_triton", "unmask.kernels.logprob_triton")
    for name in [n for n in sys.modules if n == "triton" or n.startswith("triton.") or n in kernels]:
        if not name.startswith("triton._C"):  # the compiled extension cannot be loaded twice
            del sys.modules[name]
