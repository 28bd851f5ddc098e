/* Quantised matrix products on the CPU: matvec's threading, its one-time
 * preparation of the activation, and the choice of the per-ISA kernels in
 * quant_dot_isa.c; matmul is wholly per ISA (matmul_isa.c) or one of the
 * bf16 paths (matmul_amx.c, matmul_bf16_isa.c). Arguments were
 * validated by the op layer (src/ops/quant/products.c). */
#include "cpu/quant/quant_kernels.h"

#include "base/parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows handed to a thread at a time by matvec: small enough to balance,
 * large enough that scheduling costs nothing next to a row's work. */
#define MATVEC_CHUNK 16

/* The SIMD kernels ask for the weights LA_QUANT_PREFETCH_BYTES ahead of
 * each row they read; the first bytes of a thread's run would otherwise
 * come in at the hardware prefetchers' pace while the kernel waits. So each
 * thread first asks for that many bytes at once: a layer's q/k/v and o
 * products are 100-170 KB a thread, where that start is a large share
 * (Zen 5, 8K generation: q/k/v 13.0 -> 9.6 us, o 8.2 -> 6.6 us a call
 * together with the 8 KB distance, BENCHMARKS s20-step). */
#define MATVEC_LEAD_BYTES 8192

/* Asks for the first MATVEC_LEAD_BYTES of the `left` bytes at w at once. */
static void lead_prefetch(const char *w, size_t left) {
    for (size_t o = 0; o < (left < MATVEC_LEAD_BYTES ? left : MATVEC_LEAD_BYTES); o += 64) __builtin_prefetch(w + o, 0, 3);
}

/* v rounded to the nearest integer, ties to even: lrintf's result in the
 * default rounding mode for |v| < 2^22 (here |v| <= 127), NaN to 0 as its
 * int8 cast was. Adding and taking away 1.5 * 2^23 leaves v's integer part
 * in the float; inline, where lrintf was a libm call per element (the
 * serial preparation before every one-token product: ~5% of a decode
 * step's products at the 8K context). */
static inline int32_t round_even(float v) {
    const float big = 12582912.0f;
    const float r = (v + big) - big;
    return r == r ? (int32_t)r : 0;
}

/* Blocks [b0, b1) of x: their sums (offset terms of Q4_0/Q4_1) and unless
 * the caller wants f32 activations, x quantised to int8 blocks
 * (dx = max|x| / 127, round to nearest) with the sums of those for the
 * integer kernels. */
static void prepare_x(const float *x, int64_t b0, int64_t b1, bool round_x, float *xsum, float *dx, float *xqsum,
                      int8_t *xq) {
    for (int64_t b = b0; b < b1; b++) {
        float s = 0, amax = 0;
        for (int j = 0; j < LA_QK; j++) {
            s += x[b * LA_QK + j];
            amax = fabsf(x[b * LA_QK + j]) > amax ? fabsf(x[b * LA_QK + j]) : amax;
        }
        xsum[b] = s;
        if (!round_x) continue;
        dx[b] = amax / 127.0f;
        float inv = amax > 0 ? 127.0f / amax : 0.0f;
        int32_t qs = 0;
        for (int j = 0; j < LA_QK; j++) qs += xq[b * LA_QK + j] = (int8_t)round_even(x[b * LA_QK + j] * inv);
        xqsum[b] = dx[b] * (float)qs;
    }
}

la_status la_cpu_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, const size_t *rb, int64_t cols,
                              const float *x, bool round_x) {
    int64_t first_chunk[LA_MATVEC_MAX_JOBS + 1] = {0}, work = 0;
    for (int j = 0; j < n_jobs; j++) {
        first_chunk[j + 1] = first_chunk[j] + (jobs[j].rows + MATVEC_CHUNK - 1) / MATVEC_CHUNK;
        work += jobs[j].rows * cols;
    }
    const int64_t nb = cols / LA_QK;
    float *xsum;
    la_status st = la_workspace(ctx, sizeof(float) * (size_t)(3 * nb + 3) + (size_t)cols + 64, (void **)&xsum);
    if (st) return st;
    float *dx = xsum + nb + 1, *xqsum = dx + nb + 1;
    int8_t *xq = (int8_t *)(xqsum + nb + 1);
    quant_dot_fn dot = LA_ISA_PICK(la_quant_dot_rows, ctx->simd);
    /* Each thread streams one contiguous run of rows, which the hardware
     * prefetchers follow; interleaved small chunks measured 20% slower on
     * generation. */
#pragma omp parallel num_threads(ctx->threads) if (work > 65536)
    {
        int64_t lo, hi, b0, b1;
        la_split_range(first_chunk[n_jobs], la_thread_id(), la_team_size(), &lo, &hi);
        int j = 0; /* the job of chunk c: advances with c */
        while (lo < hi && lo >= first_chunk[j + 1]) j++;
        if (lo < hi) { /* the run's first bytes (see MATVEC_LEAD_BYTES) */
            const int64_t r0 = (lo - first_chunk[j]) * MATVEC_CHUNK;
            lead_prefetch((const char *)jobs[j].W + (size_t)r0 * rb[j], (size_t)(jobs[j].rows - r0) * rb[j]);
        }
        /* Once per vector, for every row, split over the team by blocks
         * (a block's values depend on that block alone: the same bits for
         * any team) while those first bytes come in. Serial before the
         * region, the other thread spun through it (BENCHMARKS s21-step). */
        la_split_range(nb, la_thread_id(), la_team_size(), &b0, &b1);
        prepare_x(x, b0, b1, round_x, xsum, dx, xqsum, xq);
#pragma omp barrier
        for (int64_t c = lo; c < hi; c++) {
            while (c >= first_chunk[j + 1]) j++;
            const la_matvec_job *job = &jobs[j];
            /* a job's last chunk: the next job's rows are a new stream the
             * prefetchers have not seen (q/k/v: the thread with k and v
             * finished 1-2 us after the other without this, s23-imb) */
            if (c + 1 == first_chunk[j + 1] && c + 1 < hi) lead_prefetch(jobs[j + 1].W, (size_t)jobs[j + 1].rows * rb[j + 1]);
            int64_t r0 = (c - first_chunk[j]) * MATVEC_CHUNK, nr = job->rows - r0 < MATVEC_CHUNK ? job->rows - r0 : MATVEC_CHUNK;
            dot(job->type, (const char *)job->W + (size_t)r0 * rb[j], rb[j], nr, cols, x, xsum,
                cols % LA_QK || !round_x ? NULL : xq, dx, xqsum, job->y + r0);
        }
    }
    return LA_OK;
}

/* LONGATTN_BF16=dot keeps the AMX path off where it is usable, so the dot
 * path can be tested and compared on an AMX machine; read at every choice
 * (a few per layer), so a test may set it between calls. */
static bool amx_kept_off(void) {
    const char *e = getenv("LONGATTN_BF16");
    return e && !strcmp(e, "dot");
}

la_mm_path la_cpu_matmul_path(const la_context *ctx, la_ggml_type t, int64_t cols, int64_t n) {
    if (n == 1) return LA_MM_MATVEC;
    const bool bf16_type = t == LA_GGML_Q4_0 || t == LA_GGML_Q4_1 || t == LA_GGML_Q8_0 || t == LA_GGML_Q4_K ||
                           t == LA_GGML_Q6_K || t == LA_GGML_BF16;
    /* ctx->amx is the context's "bf16 products allowed" (la_context_set_bf16,
     * la_context_set_amx): AMX where usable, else VDPBF16PS at the
     * avx512_bf16 level; both read 32 columns at a time. */
    if (!ctx->amx || !bf16_type || cols % 32) return LA_MM_F32;
    if (ctx->simd >= LA_SIMD_AVX512 && la_amx_usable(NULL) && !amx_kept_off()) return LA_MM_AMX_BF16;
    if (ctx->simd == LA_SIMD_AVX512_BF16) return LA_MM_DOT_BF16;
    return LA_MM_F32;
}

la_status la_cpu_matmul(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows, int64_t cols,
                        const float *X, int64_t n, float *Y, bool bf16_ok) {
    const la_mm_path path = bf16_ok ? la_cpu_matmul_path(ctx, t, cols, n) : LA_MM_F32;
#if defined(LA_HAVE_AMX)
    if (path == LA_MM_AMX_BF16) return la_quant_matmul_amx(ctx, t, W, rb, rows, cols, X, n, Y);
#endif
    if (path == LA_MM_DOT_BF16) return la_quant_matmul_bf16_avx512_bf16(ctx, t, W, rb, rows, cols, X, n, Y);
    return LA_ISA_PICK(la_quant_matmul, ctx->simd)(ctx, t, W, rb, rows, cols, X, n, Y);
}
