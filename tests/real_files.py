"""Checkpoint directories built from the real LLaDA / Dream / SDAR files in ../shared/models.

The shared folders hold configs and tokenizer files but no weights, and LLaDA's
BPE vocabulary (``tokenizer.json``) is missing. These helpers build what a test
needs around the real files: a stand-in LLaDA vocabulary whose added tokens sit at
their official ids, and cut-down checkpoints (real config with fewer layers and a
narrower width, real vocabulary size and token ids) with random sharded weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from unmask.models.loading import meta_model

LLADA, DREAM = "llada-8b-instruct", "dream-v0-instruct-7b"
#: the SDAR folder with tokenizer files and chat template (TraDo uses the same files and class)
SDAR = "sdar-4b-chat"
#: exact parameter counts of the two configs (published: 8.02 B and 7.62 B); derivation in docs/models.md
PARAMETERS = {LLADA: 8_015_581_184, DREAM: 7_615_616_512}
#: trainable parameters of LoRA r=128 on all seven linear layers of every block
LORA_R128 = {LLADA: 335_544_320, DREAM: 322_961_408}
#: files copied as they are from the shared folders (whatever each folder has)
COPIED = (
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
)  # fmt: skip
#: the cut: depth and width only; vocabulary, token ids, rotary and norm settings stay real
CUTS = {
    LLADA: {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96},
    DREAM: {"num_hidden_layers": 2, "hidden_size": 112, "num_attention_heads": 7,
            "num_key_value_heads": 1, "intermediate_size": 96},
    SDAR: {"num_hidden_layers": 2, "hidden_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 16, "intermediate_size": 96},
}  # fmt: skip


def real_config(models_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((models_dir / name / "config.json").read_text())


def write_llada_standin_vocabulary(folder: Path) -> None:
    """A byte-level BPE ``tokenizer.json`` with LLaDA's added tokens at their official ids.

    Every id below the first added token is a byte symbol or an unused filler, so
    any text round-trips, and ``tokenizer_config.json``'s special tokens (BOS
    126080, EOS 126081, mask 126336, headers 126346/126347, end of turn 126348)
    keep the ids the real vocabulary gives them.
    """
    config = json.loads((folder / "tokenizer_config.json").read_text())
    added = {int(i): token for i, token in config["added_tokens_decoder"].items()}
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"<unused{i}>": i for i in range(len(vocab), min(added))})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(added[i]["content"], special=added[i]["special"], normalized=False) for i in sorted(added)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))


def tokenizer_folder(models_dir: Path, name: str, out: Path) -> Path:
    """The real tokenizer and config files in ``out`` (LLaDA with its stand-in vocabulary)."""
    out.mkdir(parents=True, exist_ok=True)
    for file in COPIED:
        if (models_dir / name / file).is_file():
            shutil.copy(models_dir / name / file, out / file)
    if name == LLADA:
        write_llada_standin_vocabulary(out)
    return out


def cut_down_folder(models_dir: Path, name: str, out: Path) -> Path:
    """Real tokenizer files and the real config cut by ``CUTS`` (no weights yet)."""
    tokenizer_folder(models_dir, name, out)
    config = {**real_config(models_dir, name), **CUTS[name]}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def cut_down_checkpoint(models_dir: Path, name: str, out: Path, seed: int = 0) -> Path:
    """Real config (cut by ``CUTS``) + real tokenizer files + random bf16 weights in several shards."""
    model = meta_model(cut_down_folder(models_dir, name, out)).to_empty(device="cpu")
    model.init_weights(seed=seed)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_torch_state_dict(state, out, max_shard_size="8MB")
    return out
