"""Peak memory and time of the kernels against naive full-tensor implementations.

LLaDA-like shapes: V = 126 464, N rows (default 256 on the CPU: a naive float64
sampling step then holds several N×V×8-byte tensors). Every CPU measurement runs
in its own subprocess so that the peak resident set (above the
inputs' baseline, read from ``VmHWM`` after resetting it) belongs to one implementation. With a GPU, the Triton kernels,
the torch twins and the naive versions are measured with CUDA's allocator stats.

    python bench/kernels.py [--rows N] [--hidden D]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from unmask.kernels.dispatch import use_backend
from unmask.kernels.ops import linear_token_logprobs, sample_step, token_logprobs
from unmask.kernels.rng import row_uniforms
from unmask.kernels.sampling import _sample_chunk

VOCAB = 126_464


def naive_sample(logits: torch.Tensor, u: torch.Tensor) -> None:
    _sample_chunk(logits, 1.0, u)  # the twin's math on the whole [N, V] at once


def naive_logprob(logits: torch.Tensor, targets: torch.Tensor) -> None:
    logp = logits.float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    (logp.gather(-1, targets[:, None]).sum() + entropy.sum()).backward()


def naive_linear(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> None:
    naive_logprob(hidden @ weight.T, targets)


def fused_logprob(logits: torch.Tensor, targets: torch.Tensor) -> None:
    lp, ent = token_logprobs(logits, targets)
    (lp.sum() + ent.sum()).backward()


def fused_linear(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> None:
    lp, ent = linear_token_logprobs(hidden, weight, targets, chunk_rows=64)
    (lp.sum() + ent.sum()).backward()


def make_case(name: str, rows: int, hidden_dim: int, device: str):
    """(function, args) of one benchmark case; inputs are created before the baseline."""
    gen = torch.Generator(device=device).manual_seed(0)
    targets = torch.randint(0, VOCAB, (rows,), device=device, generator=gen)
    if name.endswith("linear"):
        hidden = torch.randn(rows, hidden_dim, device=device, generator=gen, requires_grad=True)
        weight = (torch.randn(VOCAB, hidden_dim, device=device, generator=gen) / hidden_dim**0.5).requires_grad_()
        return (naive_linear if name.startswith("naive") else fused_linear), (hidden, weight, targets)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    logits = (torch.randn(rows, VOCAB, device=device, generator=gen) * 3).to(dtype)
    if name.endswith("sample"):
        u = row_uniforms(rows, seed=0, device=device)
        if name.startswith("naive"):
            return naive_sample, (logits, u)
        return (lambda x, w: sample_step(x, 1.0, uniforms=w)), (logits, u)
    logits.requires_grad_()
    return (naive_logprob if name.startswith("naive") else fused_logprob), (logits, targets)


def rss_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def measure_cpu(name: str, rows: int, hidden_dim: int) -> dict[str, float]:
    """Run in a fresh process: peak RSS above the inputs, and wall time."""
    torch.set_num_threads(2)
    fn, args = make_case(name, rows, hidden_dim, "cpu")
    baseline = rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS: input-creation temporaries do not count
    start = time.perf_counter()
    with use_backend("torch"):
        fn(*args)
    seconds = time.perf_counter() - start
    peak = rss_bytes("VmHWM") - baseline
    return {"seconds": seconds, "peak_mib": max(peak, 0) / 2**20}


def measure_cuda(name: str, backend: str, rows: int, hidden_dim: int) -> dict[str, float]:
    fn, args = make_case(name, rows, hidden_dim, "cuda")
    with use_backend(backend):
        fn(*args)  # warm-up (Triton compilation)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(5):
            fn(*args)
        torch.cuda.synchronize()
    return {"seconds": (time.perf_counter() - start) / 5, "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}


def report(title: str, naive: dict[str, float], fused: dict[str, float]) -> None:
    print(
        f"{title:<34} naive {naive['peak_mib']:9.1f} MiB {naive['seconds'] * 1e3:9.1f} ms | "
        f"fused {fused['peak_mib']:9.1f} MiB {fused['seconds'] * 1e3:9.1f} ms | "
        f"memory ratio {naive['peak_mib'] / max(fused['peak_mib'], 1e-3):6.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_cpu(args.one, args.rows, args.hidden)))
        return
    print(f"CPU, torch twin vs naive full tensor: V = {VOCAB}, N = {args.rows}, d = {args.hidden}")
    for case in ("sample", "logprob", "linear"):
        results = [
            json.loads(subprocess.run(
                [sys.executable, __file__, "--one", f"{kind}_{case}", "--rows", str(args.rows), "--hidden", str(args.hidden)],
                check=True, capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"},
            ).stdout)
            for kind in ("naive", "fused")
        ]
        report(f"{case} (fwd+bwd)" if case != "sample" else "sample step (tau=1)", *results)
    if not torch.cuda.is_available():
        print("GPU: none here, Triton kernels not measured")
        return
    rows = args.rows * 16
    print(f"GPU {torch.cuda.get_device_name()}: V = {VOCAB}, N = {rows}, bf16 logits")
    for case in ("sample", "logprob", "linear"):
        naive = measure_cuda(f"naive_{case}", "torch", rows, args.hidden)
        for backend in ("torch", "triton"):
            report(f"{case} [{backend}]", naive, measure_cuda(f"fused_{case}", backend, rows, args.hidden))


if __name__ == "__main__":
    main()
