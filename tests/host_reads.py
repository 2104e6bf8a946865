"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode``: record every read of tensor data by the host.

On a GPU each of these waits for the device: a scalar read (``.item()``, ``bool()``,
``int()``), a copy to the host (``.cpu()``, ``.tolist()``, ``.numpy()``), ``torch.equal``,
and every op whose output shape depends on the data (``nonzero``, ``unique``,
``masked_select``, indexing with a bool mask). ``nonzero_static`` with a given size and
``torch._assert_async`` do not wait, and are not recorded. Each read is attributed to
the innermost frame of the repository's own code that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from traceback import extract_stack
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
REPO = Path(__file__).resolve().parents[1]

#: ops that read data on the host or return a data-dependent shape
SYNCING = {
    aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default,
    aten.masked_select.default, aten._unique.default, aten._unique2.default, aten.unique_dim.default,
    aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
}  # fmt: skip
#: ops that sync when one of their indices is a bool mask
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
#: Python-level host copies (on a CPU tensor they dispatch nothing)
HOST_COPIES = ("cpu", "tolist", "numpy")


def caller() -> str:
    """``path:line`` of the innermost frame of the repository's code (not its tests or virtual environment)."""
    for frame in reversed(extract_stack()):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(REPO) and not any(path.is_relative_to(REPO / d) for d in ("tests", ".venv")):
            return f"{path.relative_to(REPO)}:{frame.lineno}"
    return "?"


class _Detector(TorchDispatchMode):
    def __init__(self, reads: list[tuple[str, str]]) -> None:
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in SYNCING or (func in INDEXING and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)):
            self.reads.append((str(func), caller()))
        return func(*args, **kwargs)


def _recording(name: str, method: Callable[..., Any], reads: list[tuple[str, str]]) -> Callable[..., Any]:
    def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        reads.append((name, caller()))
        return method(self, *args, **kwargs)

    return wrapper


@contextmanager
def host_reads() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(op, where)`` for every host read inside the block."""
    reads: list[tuple[str, str]] = []
    originals = {name: getattr(torch.Tensor, name) for name in HOST_COPIES}
    for name, method in originals.items():
        setattr(torch.Tensor, name, _recording(name, method, reads))
    try:
        with _Detector(reads):
            yield reads
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
