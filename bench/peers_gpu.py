#!/usr/bin/env python3
"""longattn's CUDA attention against PyTorch's scaled_dot_product_attention
(flash and cuDNN backends) and FlexAttention (on the long rows) on the same shapes, in the same run, on the GPU
machine, with the bf16 matrix-product ceiling (8192^3) and the device copy
bandwidth measured in this run too.

    python3 bench/peers_gpu.py --bench build/longattn_cuda_bench [--ops fwd,fwdbwd,decode]
                               [--heads 16 --dim 128 --tokens 16384]
                               [--rounds R --lens 16384,65536]   (interleaved with cuDNN: see interleaved())

fwd:    forward, bf16, H heads of dim D, batch x length = --tokens, causal
        and not, plus length 64K at batch 1. TFLOP/s count 4 D flops per
        visible (query, key) pair.
fwdbwd: forward then backward timed together on the same shapes (SDPA:
        out.backward(dout)). TFLOP/s count 14 D flops per visible pair (2 + 5
        products), for longattn and the peers alike.
decode: one query token per sequence, 32 query heads over 8 K/V heads, D,
        bf16 cache (longattn: f32 q, the cache contiguous or paged; SDPA: bf16
        q with enable_gqa). GB/s count the K and V bytes read once.

Every figure is the median of timed calls after warm-up, each timed with CUDA
events (the longattn side does the same, in C). The fwd and fwdbwd tables
take one shape at a time: longattn's run at that length, then each peer on
its rows, so each side meets the GPU in the same clock and power state (one
longattn run over every length, with the peers after it, put longattn's
later rows under sustained load the peers never saw: 611 against 702
TFLOP/s for the 16K forward, s29). Prints JSON lines, then one
table per op with longattn's figure as a ratio to each peer and to the
ceiling (bf16 matmul for TFLOP/s, copy for GB/s).
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


def rand(*shape, grad=False):
    return (torch.rand(*shape, device="cuda", dtype=torch.bfloat16) * 2 - 1).requires_grad_(grad)


def sdpa_tflops(backend, B, L, H, D, causal, with_bwd):
    q, k, v = (rand(B, H, L, D, grad=with_bwd) for _ in range(3))
    dout = rand(B, H, L, D)

    def step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
        if with_bwd:
            q.grad = k.grad = v.grad = None
            out.backward(dout)

    with sdpa_kernel([backend]):
        try:
            ms = median_ms(step, 3, 5 if L >= 65536 else 20)
        except RuntimeError as e:
            print(f"# {backend} B={B} L={L}: {e}", file=sys.stderr)
            return None
    pairs = L * (L + 1) / 2 if causal else L * L
    return (14 if with_bwd else 4) * B * H * D * pairs / (ms * 1e-3) / 1e12


_flex = {}


def flex_tflops(B, L, H, D, causal, with_bwd):
    """FlexAttention (torch.compile'd, Triton) on the same shape; None where
    it is missing or fails. Compiles once per shape, so it runs on few rows."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as e:
        print(f"# flex_attention unavailable: {e}", file=sys.stderr)
        return None
    if "fn" not in _flex:
        _flex["fn"] = torch.compile(flex_attention)
    q, k, v = (rand(B, H, L, D, grad=with_bwd) for _ in range(3))
    dout = rand(B, H, L, D)
    mask = create_block_mask(lambda b, h, i, j: i >= j, None, None, L, L) if causal else None

    def step():
        out = _flex["fn"](q, k, v, block_mask=mask)
        if with_bwd:
            q.grad = k.grad = v.grad = None
            out.backward(dout)

    try:
        ms = median_ms(step, 3, 5 if L >= 65536 else 20)
    except Exception as e:  # compilation or launch failures: report, do not stop the run
        print(f"# flex B={B} L={L}: {e}", file=sys.stderr)
        return None
    pairs = L * (L + 1) / 2 if causal else L * L
    return (14 if with_bwd else 4) * B * H * D * pairs / (ms * 1e-3) / 1e12


def sdpa_decode_gbps(backend, B, L, H, Hkv, D):
    q = rand(B, H, 1, D)
    k, v = rand(B, Hkv, L, D), rand(B, Hkv, L, D)
    with sdpa_kernel([backend]):
        try:
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 3, 20)
        except RuntimeError as e:
            print(f"# {backend} decode B={B} L={L}: {e}", file=sys.stderr)
            return None
    return 2 * k.numel() * 2 / (ms * 1e-3) / 1e9


def run_bench(args, op, lens=None):
    extra = [a for L in (lens or []) for a in ("--len", str(L))]
    if lens and max(lens) >= 65536:  # as many timed calls as the peers get at that length (sdpa_tflops)
        extra += ["--iters", "5"]
    out = subprocess.run([args.bench, "--op", op, "--heads", str(args.heads), "--dim", str(args.dim), "--tokens",
                          str(args.tokens)] + extra, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        print(f"longattn_cuda_bench --op {op} exited {out.returncode}", file=sys.stderr)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [r for r in rows if r.get("op") != "peak"], out.returncode  # its copy ceiling: this script measures its own


def ratio(a, b):
    return a / b if a and b else 0.0


def med(xs):
    xs = sorted(x for x in xs if x)
    return xs[len(xs) // 2] if xs else None


def default_lens(args):
    """longattn_cuda_bench's own lengths: 1024 doubling to --tokens, then 64K at batch 1."""
    lens, L = [], 1024
    while L <= args.tokens:
        lens.append(L)
        L *= 2
    return lens + ([65536] if args.tokens < 65536 else [])


def interleaved(args, mm):
    """--rounds R: per round and per length, longattn's rows (a run of its
    own) then cuDNN's on the same shapes right after, so both meet the same
    clock and power state; the table gives each side's median over the
    rounds and the median of the rounds' paired ratios. The GPU's clock
    under sustained load moves the 16K forward by ~8% between runs; a
    paired ratio moves less."""
    lens = [int(x) for x in args.lens.split(",")] if args.lens else default_lens(args)
    for op in [o for o in args.ops.split(",") if o in ("fwd", "fwdbwd")]:
        runs, by_round = {}, {}
        for rnd in range(args.rounds):
            for L in lens:
                rows, rc = run_bench(args, op, [L])
                for r in rows:
                    c = sdpa_tflops(SDPBackend.CUDNN_ATTENTION, r["B"], r["L"], r["H"], r["D"], r["causal"], op == "fwdbwd")
                    print(json.dumps({"op": op, "round": rnd, "B": r["B"], "L": r["L"], "causal": r["causal"],
                                      "tflops": r["tflops"], "sdpa_cudnn_tflops": c and round(c, 1)}))
                    runs.setdefault((r["B"], r["L"], r["causal"]), []).append((r["tflops"], c))
                    by_round.setdefault((r["B"], r["L"], rnd), {})[r["causal"]] = (r["tflops"], c)
        print(f"\n{op} (TFLOP/s), {args.rounds} interleaved rounds: medians, and the median of the rounds' ratios")
        print(f"{'B':>3} {'L':>6} {'causal':>6} {'longattn':>9} {'cuDNN':>7} {'/cuDNN':>7} {'paired':>7} {'/mm':>6} "
              f"{'longattn range':>16}")
        for (B, L, causal), v in runs.items():
            la, cu = med([x for x, _ in v]), med([y for _, y in v])
            pr = med([ratio(x, y) for x, y in v])
            print(f"{B:>3} {L:>6} {causal:>6} {la:>9.1f} {cu or 0:>7.1f} {ratio(la, cu):>7.2f} {pr or 0:>7.2f} "
                  f"{ratio(la, mm):>6.2f} {min(x for x, _ in v):>7.1f}-{max(x for x, _ in v):.1f}")
        # causal against non-causal within one round: both rows come from one longattn run (and cuDNN's
        # right after), so the ratio sees one clock state (the goal: causal >= 0.90 of non-causal)
        print(f"\n{op} causal / non-causal TFLOP/s per round (median, range)")
        for B, L in dict.fromkeys((b, l) for b, l, _ in by_round):
            pairs = [v for (b, l, _), v in by_round.items() if (b, l) == (B, L) and 0 in v and 1 in v]
            la = [ratio(v[1][0], v[0][0]) for v in pairs]
            cu = [ratio(v[1][1], v[0][1]) for v in pairs]
            if la:
                print(f"B={B} L={L}: longattn {med(la):.3f} ({min(la):.3f}-{max(la):.3f}), "
                      f"cuDNN {med(cu) or 0:.3f} ({min(cu):.3f}-{max(cu):.3f}), {len(la)} rounds")


def peer_row(args, op, r, bw, mm):
    """The peers' figures on longattn's row r (in place)."""
    if op == "decode":
        f = sdpa_decode_gbps(SDPBackend.FLASH_ATTENTION, r["B"], r["L"], r["H"], r["Hkv"], r["D"])
        c = sdpa_decode_gbps(SDPBackend.CUDNN_ATTENTION, r["B"], r["L"], r["H"], r["Hkv"], r["D"])
        r.update(sdpa_flash_gbps=f and round(f, 1), sdpa_cudnn_gbps=c and round(c, 1),
                 of_copy=round(r["gbps"] / (bw * 1e3), 3))
        return
    bwd = op == "fwdbwd"
    f = sdpa_tflops(SDPBackend.FLASH_ATTENTION, r["B"], r["L"], r["H"], r["D"], r["causal"], bwd)
    c = sdpa_tflops(SDPBackend.CUDNN_ATTENTION, r["B"], r["L"], r["H"], r["D"], r["causal"], bwd)
    x = (flex_tflops(r["B"], r["L"], r["H"], r["D"], r["causal"], bwd)
         if args.flex_min_len and r["L"] >= args.flex_min_len else None)
    r.update(sdpa_flash_tflops=f and round(f, 1), sdpa_cudnn_tflops=c and round(c, 1),
             flex_tflops=x and round(x, 1), of_matmul=round(r["tflops"] / mm, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path of longattn_cuda_bench")
    ap.add_argument("--ops", default="fwd,fwdbwd,decode")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--flex-min-len", type=int, default=16384,
                    help="time FlexAttention on rows at least this long (each shape compiles; 0 = never)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="instead of the table: R rounds of longattn then cuDNN per length, interleaved (fwd, fwdbwd)")
    ap.add_argument("--lens", default="", help="the lengths (comma-separated; B = tokens / L; default: "
                    "1024 doubling to --tokens, and 65536)")
    args = ap.parse_args()
    mm, bw = ceilings()
    print(json.dumps({"op": "ceilings", "bf16_matmul_tflops": round(mm, 1), "copy_tbps": round(bw, 2)}))
    if args.rounds > 0:
        interleaved(args, mm)
        print(f"\nceilings this run: bf16 matmul {mm:.0f} TFLOP/s, copy {bw:.2f} TB/s")
        return 0
    tables, failed = {}, False
    for op in args.ops.split(","):
        # decode: one run of the bench's own shapes (memory-bound, short); else one run per length
        lens = [None] if op == "decode" else [int(L) for L in args.lens.split(",")] if args.lens else default_lens(args)
        for L in lens:
            rows, rc = run_bench(args, op, [L] if L else None)
            failed |= rc != 0 or not rows
            for r in rows:
                peer_row(args, op, r, bw, mm)
                print(json.dumps(r))
                tables.setdefault(op, []).append(r)
    print(f"\nceilings this run: bf16 matmul {mm:.0f} TFLOP/s, copy {bw:.2f} TB/s")
    for op, rows in tables.items():
        if op == "decode":
            print("\ndecode (GB/s of K+V read; 32 q heads / 8 kv heads)")
            print(f"{'B':>3} {'L':>7} {'page':>5} {'longattn':>9} {'flash':>7} {'cuDNN':>7} {'/flash':>7} "
                  f"{'/cuDNN':>7} {'/copy':>6}")
            for r in rows:
                f, c = r["sdpa_flash_gbps"], r["sdpa_cudnn_gbps"]
                print(f"{r['B']:>3} {r['L']:>7} {r['page']:>5} {r['gbps']:>9.0f} {f or 0:>7.0f} {c or 0:>7.0f} "
                      f"{ratio(r['gbps'], f):>7.2f} {ratio(r['gbps'], c):>7.2f} {r['of_copy']:>6.2f}")
        else:
            print(f"\n{op} (TFLOP/s)")
            print(f"{'B':>3} {'L':>6} {'causal':>6} {'longattn':>9} {'flash':>7} {'cuDNN':>7} {'flex':>7} {'/flash':>7} "
                  f"{'/cuDNN':>7} {'/flex':>6} {'/mm':>6}")
            for r in rows:
                f, c, x = r["sdpa_flash_tflops"], r["sdpa_cudnn_tflops"], r["flex_tflops"]
                print(f"{r['B']:>3} {r['L']:>6} {r['causal']:>6} {r['tflops']:>9.1f} {f or 0:>7.1f} {c or 0:>7.1f} "
                      f"{x or 0:>7.1f} {ratio(r['tflops'], f):>7.2f} {ratio(r['tflops'], c):>7.2f} "
                      f"{ratio(r['tflops'], x):>6.2f} {r['of_matmul']:>6.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
