"""The GPU check: one table, ready for the day a GPU is lent; the same code at tiny shapes on a CPU.

    python bench/gpu_check.py                      # CUDA: full shapes (V = 126 464, d_model 4096)
    python bench/gpu_check.py --tiny               # any machine: tiny shapes (the CPU default)
    python bench/gpu_check.py --config PATH/config.json --layers 4

1. Triton kernels against their torch twins (token log-probs and entropy with their
   gradients, the sampling step's tokens), fp32 and bf16, at V = 126 464.
2. Forward + backward time and peak memory of a LLaDA-shaped model built from the
   real ``config.json`` (default ``../shared/models/llada-8b-instruct``; LLaDA-8B's
   own numbers when absent) with its layer count cut to ``--layers``.
3. Sampler tokens/s with no cache, the prefix cache and the dual cache, batch 1, 8, 32.
4. Three RL steps of that model with LoRA and gradient checkpointing.

Exit code 1 on any kernel mismatch or a non-finite RL step. Without CUDA the Triton
kernels run in Triton's interpreter (set before triton is imported), at tiny shapes.
"""

from __future__ import annotations

import os
import sys

if "--tiny" in sys.argv or not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from unmask.kernels.dispatch import (
    triton_available,  # noqa: E402
    use_backend,  # noqa: E402
)
from unmask.kernels.ops import sample_step, token_logprobs  # noqa: E402
from unmask.models import LLaDA  # noqa: E402
from unmask.models.llada import LLaDAConfig  # noqa: E402
from unmask.models.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402
from unmask.recipe import validate_recipe  # noqa: E402
from unmask.rl.trainer import Trainer  # noqa: E402
from unmask.rollouts.generate import generate  # noqa: E402

SHARED_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "models" / "llada-8b-instruct" / "config.json"
#: shapes of a --tiny run: the same code paths at a size a CPU finishes in seconds
TINY = {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128, "vocab_size": 1024,
        "embedding_size": 1024, "mask_token_id": 1000, "eos_token_id": 1001, "pad_token_id": 1001}
#: allowed |triton − torch| per dtype: of the float32 values, and of the gradient relative to
#: its largest entry (a bf16 gradient is rounded to 8 mantissa bits: 2 ulps ≈ 1.6e-2)
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2e-2, 1.6e-2)}


@dataclass
class Row:
    section: str
    setting: str
    value: str
    compare: str
    ok: bool = True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """CUDA allocator peak since the last reset; on a CPU the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- 1. kernels ------------------------------------------------------------------------
def kernel_rows(rows: int, vocab: int, device: torch.device) -> list[Row]:
    if not triton_available():
        return [Row("kernels", "triton", "not installed", "pip install triton", False)]
    out = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (3 * torch.randn(rows, vocab, generator=gen)).to(device, dtype)
        targets = torch.randint(0, vocab, (rows,), generator=gen).to(device)
        weights = torch.randn(2, rows, generator=gen).to(device)
        results = {}
        for backend in ("triton", "torch"):
            x = logits.clone().requires_grad_(True)
            with use_backend(backend):
                logprob, entropy = token_logprobs(x, targets, temperature=0.7)
                ((logprob * weights[0]).sum() + (entropy * weights[1]).sum()).backward()
                tokens = sample_step(logits, temperature=0.7, seed=7).token
            results[backend] = (logprob.detach(), entropy.detach(), x.grad.float(), tokens)
        value_tol, grad_tol = TOLERANCE[dtype]
        name = str(dtype).removeprefix("torch.")
        for i, label in enumerate(("log-prob", "entropy")):
            diff = float((results["triton"][i] - results["torch"][i]).abs().max())
            out.append(Row("kernels", f"{label} {name} [{rows}×{vocab}]", f"max |Δ| {diff:.2e}",
                           f"≤ {value_tol:g} vs torch twin", diff <= value_tol))
        reference = results["torch"][2]
        diff = float((results["triton"][2] - reference).abs().max() / reference.abs().max())
        out.append(Row("kernels", f"grad {name}", f"max |Δ|/max|g| {diff:.2e}", f"≤ {grad_tol:g} vs torch twin",
                       diff <= grad_tol))
        same = int((results["triton"][3] == results["torch"][3]).sum())
        out.append(Row("kernels", f"sampled tokens {name}", f"{same}/{rows} equal", "all equal", same == rows))
    return out


# -- 2. forward + backward ---------------------------------------------------------------------
def llada_config(args: argparse.Namespace) -> tuple[LLaDAConfig, str]:
    path = Path(args.config)
    raw = json.loads(path.read_text()) if path.is_file() else {}
    source = str(path) if raw else "LLaDAConfig defaults (= LLaDA-8B-Instruct; config.json not found)"
    raw = {**raw, "n_layers": args.layers, **(TINY if args.tiny else {})}
    return LLaDAConfig.from_dict(raw, source), source


def build_model(config: LLaDAConfig, device: torch.device, dtype: torch.dtype) -> LLaDA:
    torch.manual_seed(0)
    return LLaDA(config, build_tiny_tokenizer()).to(device=device, dtype=dtype)


def forward_backward_rows(model: LLaDA, batch: int, length: int, device: torch.device) -> list[Row]:
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    model.train()
    times = []
    reset_peak(device)
    for _ in range(3):  # first is warm-up
        sync(device)
        began = time.perf_counter()
        logits = model(ids)
        logits.float().logsumexp(-1).mean().backward()
        sync(device)
        times.append(time.perf_counter() - began)
        model.zero_grad(set_to_none=True)
    seconds = min(times[1:])
    tokens = batch * length / seconds
    return [
        Row("forward+backward", f"{model.config.n_layers} layers, batch {batch} × {length}",
            f"{seconds * 1e3:.1f} ms ({tokens:,.0f} tok/s)", "scale by 32/layers for LLaDA-8B"),
        Row("forward+backward", "peak memory", f"{peak_gib(device):.2f} GiB",
            "CUDA: weights+grads+activations; CPU: process RSS"),
    ]


# -- 3. sampler ----------------------------------------------------------------------------------
def sampler_rows(model: LLaDA, batches: list[int], gen_length: int, device: torch.device) -> list[Row]:
    model.eval()
    out = []
    for batch in batches:
        prompts = torch.randint(0, model.config.mask_token_id, (batch, 32), device=device)
        rates = {}
        for cache in ("none", "prefix", "dual"):
            settings = {"gen_length": gen_length, "steps": gen_length, "block_length": gen_length // 2,
                        "temperature": 0.0, "cache": cache, "seed": 0}
            generate(model, prompts[:1], **{**settings, "gen_length": 8, "steps": 8, "block_length": 4})
            sync(device)
            began = time.perf_counter()
            generate(model, prompts, **settings)
            sync(device)
            rates[cache] = batch * gen_length / (time.perf_counter() - began)
        out.append(Row("sampler", f"batch {batch}, {gen_length} tokens, {gen_length} steps",
                       " / ".join(f"{rates[c]:,.0f}" for c in rates) + " tok/s",
                       f"none / prefix / dual; cache ×{rates['prefix'] / rates['none']:.1f} / ×{rates['dual'] / rates['none']:.1f}"))
    return out


# -- 4. RL steps ------------------------------------------------------------------------------------
def spread_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """Distinct rewards for distinct answers (a random model's answers mean nothing)."""
    return [(sum(map(ord, text)) % 97) / 97 for text in completions]


def rl_rows(config: LLaDAConfig, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, out: Path) -> list[Row]:
    recipe = validate_recipe({
        "seed": 0, "output_dir": str(out),
        "model": {"name_or_path": "gpu-check", "device": device.type, "dtype": str(dtype).removeprefix("torch."),
                  "gradient_checkpointing": True},
        "lora": {"r": 16, "alpha": 32},
        "data": {"chat_template": False},
        "rollout": {"num_generations": 4, "prompts_per_step": 2, "max_completion_length": args.gen_length,
                    "steps": args.gen_length, "block_length": args.gen_length},
        "rewards": {"functions": [{"name": "gpu_check:spread_reward"}], "num_workers": 0},
        "optim": {"max_steps": 3, "learning_rate": 1e-4, "per_device_train_batch_size": 4},
        "checkpoint": {"save_final": False}, "logging": {"progress": False, "report_to": []},
    }, "gpu_check")
    rows = [{"prompt": f"count to {i}: 1 2 3"} for i in range(8)]
    reset_peak(device)
    trainer = Trainer(recipe, model_factory=lambda: build_model(config, device, dtype), rows=rows)
    began = time.perf_counter()
    metrics = list(trainer.steps())
    seconds = (time.perf_counter() - began) / len(metrics)
    finite = all(math.isfinite(m["loss"]) and m["skipped"] == 0.0 for m in metrics)
    return [Row("RL steps", "3 × diffu-GRPO, LoRA r16, grad. checkpointing",
                f"{seconds:.2f} s/step, loss {metrics[-1]['loss']:+.3g}, peak {peak_gib(device):.2f} GiB",
                "finite, no step skipped", finite)]


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "setting", "value", "compare with", "ok"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.section, r.setting, r.value, r.compare, "ok" if r.ok else "[red]MISMATCH[/red]")
    Console(width=180).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the default without CUDA)")
    parser.add_argument("--config", default=str(SHARED_CONFIG), help="LLaDA config.json")
    parser.add_argument("--layers", type=int, default=4, help="layers kept of the config's 32")
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--seq", type=int, default=1024, help="forward+backward sequence length")
    parser.add_argument("--out", default="runs/gpu_check", help="where the RL steps write")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    args.tiny = not cuda
    if args.tiny:
        args.layers, args.gen_length, args.seq = min(args.layers, 2), min(args.gen_length, 8), min(args.seq, 64)
    device = torch.device("cuda" if cuda else "cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the RL steps' reward: gpu_check:spread_reward
    config, source = llada_config(args)
    vocab = config.vocab_size
    began = time.perf_counter()
    rows = kernel_rows(rows=256 if cuda else 8, vocab=vocab, device=device)
    sections: list[Callable[[], list[Row]]] = []
    for dtype in (torch.bfloat16,) if cuda else (torch.float32,):
        model = build_model(config, device, dtype)
        sections += [
            lambda m=model: forward_backward_rows(m, 8 if cuda else 2, args.seq, device),
            lambda m=model: sampler_rows(m, [1, 8, 32], args.gen_length, device),
        ]
        sections.append(lambda d=dtype: rl_rows(config, args, device, d, Path(args.out)))
    for section in sections:
        rows += section()
    title = (f"gpu_check on {torch.cuda.get_device_name(device) if cuda else 'CPU (tiny shapes)'}, "
             f"model from {source}, {time.perf_counter() - began:.0f} s")
    print_table(rows, title)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
