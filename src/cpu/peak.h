/* This machine's ceilings, measured: what `longattn bench` reports every
 * kernel's speed against. */
#ifndef LA_PEAK_H
#define LA_PEAK_H

#include "longattn.h"

/* FP32 FMA throughput of `threads` threads at SIMD level `simd`, in
 * GFLOP/s (an FMA counts 2), over about `seconds`. */
double la_peak_fma_gflops(la_simd simd, int threads, double seconds);
/* BF16 dot-product throughput (AVX512_BF16 vdpbf16ps) in GFLOP/s, or 0 when
 * the level has no BF16 dot instruction. */
double la_peak_bf16_gflops(la_simd simd, int threads, double seconds);
/* Read bandwidth in GB/s: threads summing a buffer of `bytes` (make it
 * several times the last-level cache). */
double la_peak_read_gbps(int threads, size_t bytes);

#endif
