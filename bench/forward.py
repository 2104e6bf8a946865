"""Forward-pass throughput and peak memory of the tiny family at a few sequence lengths.

    python bench/forward.py [--lengths 128 256 512] [--batch 8] [--device cuda] [--dtype bf16]

On CUDA the peak is the allocator's peak for each length; on the CPU it is the
process's peak resident set size so far (lengths run in increasing order).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from unmask.models import tiny
from unmask.models.loading import resolve_dtype


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def bench(length: int, args: argparse.Namespace, model, device: torch.device) -> tuple[float, float]:
    ids = torch.randint(0, model.config.vocab_size, (args.batch, length), device=device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        model.logits(ids, attention_mask=mask)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(args.repeats):
            model.logits(ids, attention_mask=mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return args.batch * length * args.repeats / seconds, peak_mib(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    config = {"d_model": args.d_model, "n_layers": args.n_layers, "mlp_hidden_size": 3 * args.d_model}
    config["max_sequence_length"] = max(args.lengths)
    model = tiny(config).to(device=device, dtype=resolve_dtype(args.dtype))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny: {n_params / 1e6:.2f} M params, batch {args.batch}, {args.dtype}, {device}")
    print(f"{'length':>8} {'tokens/s':>12} {'peak MiB':>10}")
    for length in sorted(args.lengths):
        tokens_per_s, peak = bench(length, args, model, device)
        print(f"{length:>8} {tokens_per_s:>12,.0f} {peak:>10,.1f}")


if __name__ == "__main__":
    main()
