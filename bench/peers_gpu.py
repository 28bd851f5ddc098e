#!/usr/bin/env python3
"""longattn's CUDA attention forward against PyTorch's scaled_dot_product_attention
(flash and cuDNN backends) on the same shapes, in the same run, on the GPU
machine: bf16, H heads of dim D, batch x length = --tokens, causal and not,
plus length 64K at batch 1. Also measures the bf16 matrix-product ceiling
(8192^3) and the device copy bandwidth in this run.

    python3 bench/peers_gpu.py --bench build/longattn_cuda_bench [--heads 16 --dim 128 --tokens 16384]

Every figure is the median of timed calls after warm-up, each timed with CUDA
events (the longattn side does the same, in C). TFLOP/s count 4*D flops per
visible (query, key) pair. Prints JSON lines, then a table whose last column
is longattn's speed as a ratio to each peer.
"""
import argparse
import json
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warmup=3, iters=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def ceilings():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, 3, 10)
    mm = 2 * n**3 / (ms * 1e-3) / 1e12
    x = torch.randn(1 << 30, device="cuda", dtype=torch.bfloat16)  # 2 GiB
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), 3, 10)
    bw = 2 * x.numel() * 2 / (ms * 1e-3) / 1e12
    del a, b, x, y
    return mm, bw


def sdpa_tflops(backend, B, L, H, D, causal):
    q, k, v = (torch.rand(B, H, L, D, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(3))
    with sdpa_kernel([backend]):
        try:
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)), 3,
                           5 if L >= 65536 else 20)
        except RuntimeError as e:
            print(f"# {backend} B={B} L={L}: {e}", file=sys.stderr)
            return None
    pairs = L * (L + 1) / 2 if causal else L * L
    return 4 * B * H * D * pairs / (ms * 1e-3) / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path of longattn_cuda_bench")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16384)
    args = ap.parse_args()
    mm, bw = ceilings()
    print(json.dumps({"op": "ceilings", "bf16_matmul_tflops": round(mm, 1), "copy_tbps": round(bw, 2)}))
    out = subprocess.run([args.bench, "--heads", str(args.heads), "--dim", str(args.dim), "--tokens",
                          str(args.tokens)], capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0:
        print(f"longattn_cuda_bench exited {out.returncode}", file=sys.stderr)
    table = []
    for r in rows:
        B, L, H, D, c = r["B"], r["L"], r["H"], r["D"], r["causal"]
        flash = sdpa_tflops(SDPBackend.FLASH_ATTENTION, B, L, H, D, c)
        cudnn = sdpa_tflops(SDPBackend.CUDNN_ATTENTION, B, L, H, D, c)
        rec = dict(r, sdpa_flash_tflops=flash and round(flash, 1), sdpa_cudnn_tflops=cudnn and round(cudnn, 1),
                   of_matmul=round(r["tflops"] / mm, 3))
        print(json.dumps(rec))
        table.append(rec)
    print(f"\nceilings this run: bf16 matmul {mm:.0f} TFLOP/s, copy {bw:.2f} TB/s")
    print(f"{'B':>3} {'L':>6} {'causal':>6} {'longattn':>9} {'flash':>7} {'cuDNN':>7} {'/flash':>7} {'/cuDNN':>7} {'/mm':>6}")
    for r in table:
        f, c = r["sdpa_flash_tflops"], r["sdpa_cudnn_tflops"]
        print(f"{r['B']:>3} {r['L']:>6} {r['causal']:>6} {r['tflops']:>9.1f} {f or 0:>7.1f} {c or 0:>7.1f} "
              f"{(r['tflops'] / f) if f else 0:>7.2f} {(r['tflops'] / c) if c else 0:>7.2f} {r['of_matmul']:>6.2f}")
    return 0 if out.returncode == 0 and rows else 1


if __name__ == "__main__":
    sys.exit(main())
