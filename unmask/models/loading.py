"""``load_model``: a checkpoint directory or hub id → a ready ``DiffusionLM``.

The family comes from ``config.json`` (``model_type``) unless given. Weights are
checked against the model the config describes before anything is loaded, so a
wrong checkpoint fails with the file and tensor named instead of a torch traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from unmask.assets import PREFIX as BUILTIN_PREFIX
from unmask.assets import builtin_path
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.models.dream import Dream
from unmask.models.llada import LLaDA
from unmask.models.native import CheckpointError, NativeLM
from unmask.models.sdar import MOE_MODEL_TYPE, MOE_REFUSAL, SDAR
from unmask.models.tiny import TinyLM
from unmask.models.tiny_block import TinyBlockLM
from unmask.models.tiny_dgemma import TinyDiffusionGemma

#: ``config.json`` model_type (lower-cased) → family
MODEL_TYPES: dict[str, type[NativeLM]] = {
    "llada": LLaDA, "dream": Dream, "sdar": SDAR, "unmask-tiny": TinyLM, "unmask-tiny-block": TinyBlockLM,
    "diffusion_gemma": DiffusionGemma, "unmask-tiny-dgemma": TinyDiffusionGemma,
}  # fmt: skip
#: ``config.json`` model_type → why it is refused (families still to come)
REFUSED = {MOE_MODEL_TYPE: MOE_REFUSAL}
#: ``family=`` argument → family
FAMILIES: dict[str, type[NativeLM]] = {cls.family: cls for cls in MODEL_TYPES.values()}
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}  # fmt: skip
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` means float32; strings accept ``bf16``/``bfloat16``, ``fp32``/``float32``…"""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """``builtin:NAME``, a local directory as is, or a hub id (clear error without a hub)."""
    name = str(name_or_path)
    if name.startswith(BUILTIN_PREFIX):
        return builtin_path(name)
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/")) or name.count("/") != 1:
        raise CheckpointError(f"{name}: not a checkpoint directory and not a hub id (org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as exc:  # network, auth, offline mode: all mean "no usable hub"
        raise CheckpointError(
            f"{name}: no local directory of that name and the hub download failed "
            f"({type(exc).__name__}); pass a local checkpoint directory instead"
        ) from exc


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a checkpoint directory?)")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc


def family_class(config: dict[str, Any], family: str | None, config_file: Path) -> type[NativeLM]:
    model_type = str(config.get("model_type", "")).lower()
    if model_type in REFUSED:
        raise CheckpointError(f"{config_file}: {REFUSED[model_type]}")
    if family is not None:
        if family not in FAMILIES:
            raise CheckpointError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
        return FAMILIES[family]
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{config_file}: unknown model_type {config.get('model_type')!r}; supported: "
            f"{', '.join(MODEL_TYPES)} (or pass family=)"
        )
    return MODEL_TYPES[model_type]


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name → safetensors file, from the shard index or the single file."""
    index = path / INDEX_FILE
    if index.is_file():
        files = {name: path / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        absent = sorted({str(file) for file in files.values() if not file.is_file()})
        if absent:
            raise CheckpointError(f"{index}: lists shard {absent[0]}, which does not exist")
        return files
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    with safe_open(single, framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def load_weights(
    model: NativeLM, path: Path, dtype: torch.dtype, device: torch.device | str
) -> None:
    """Check names and shapes of every tensor, then load them into the (meta) model."""
    if hasattr(model, "load_checkpoint"):  # a family on transformers' modules loads through transformers
        model.load_checkpoint(path, dtype, device)
        return
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    files = weight_files(path)
    missing = sorted(set(expected) - set(files))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{path}: missing tensor {missing[0]}{more} required by config.json ({model.family})"
        )
    state: dict[str, torch.Tensor] = {}
    for file in sorted(set(files.values())):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if name not in expected:
                    raise CheckpointError(
                        f"{file}: unexpected tensor {name} (not part of a {model.family} model)"
                    )
                shape = tuple(f.get_slice(name).get_shape())
                if shape != expected[name]:
                    raise CheckpointError(
                        f"{file}: tensor {name} has shape {list(shape)}, config.json implies "
                        f"{list(expected[name])}"
                    )
                state[name] = f.get_tensor(name).to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)


def load_tokenizer(path: Path, cls: type[NativeLM]) -> Any:
    """The checkpoint's tokenizer, or ``None`` when the directory has no tokenizer files.

    Remote code is never run: a ``tokenizer_config.json`` that names a remote class
    (``auto_map``, e.g. Dream's ``DreamTokenizer``) is read by the family's own
    ``tokenizer_class`` over the same vocabulary files.
    """
    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path)
    config_file = path / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    try:
        remote = json.loads(config_file.read_text()).get("auto_map")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc
    try:
        if remote and cls.tokenizer_class is not None:
            return cls.tokenizer_class.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{config_file}: cannot build the tokenizer without remote code ({str(exc).splitlines()[0]}); "
            "add the tokenizer's vocabulary (tokenizer.json, or vocab.json + merges.txt) to the directory"
        ) from exc


def meta_model(name_or_path: str | Path, family: str | None = None) -> NativeLM:
    """The model a checkpoint's ``config.json`` describes, on the meta device, without tokenizer.

    Costs no memory, so an 8 B config gives its exact tensor names, shapes and
    parameter (and LoRA) counts on any machine.
    """
    path = resolve_checkpoint(name_or_path)
    raw = read_config(path)
    cls = family_class(raw, family, path / "config.json")
    config = cls.config_class.from_dict(raw, source=str(path / "config.json"))
    with torch.device("meta"):
        return cls(config)


def load_model(
    name_or_path: str | Path,
    family: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> NativeLM:
    """Load a tiny, LLaDA, Dream or SDAR checkpoint directory (or hub id) in eval mode."""
    path = resolve_checkpoint(name_or_path)
    model = meta_model(path, family)
    model.tokenizer = load_tokenizer(path, type(model))
    load_weights(model, path, resolve_dtype(dtype), device or "cpu")
    return model.eval()
