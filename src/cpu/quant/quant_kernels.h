/* The CPU's quantised products: the threaded drivers behind la_matvec and
 * la_matmul (products.c) and their per-ISA kernels (quant_dot_isa.c,
 * matmul_isa.c). */
#ifndef LA_QUANT_KERNELS_H
#define LA_QUANT_KERNELS_H

#include "cpu/isa.h"
#include "formats/formats.h"

/* An fp16 block field as f32: F16C in the AVX2/AVX-512 copies (the same,
 * exact value as la_f16_to_f32). */
static inline float la_quant_f16(uint16_t h) {
#if defined(LA_ISA_AVX2) || defined(LA_ISA_AVX512)
    return _cvtsh_ss(h);
#else
    return la_f16_to_f32(h);
#endif
}

/* One weight row of type t (cols elements at w) as f32 into row: the block
 * formats of the model expanded here, d * q + m in f32 (possibly fused:
 * within 1 rounding of la_dequantize_row), others through the format's own
 * dequantize. Inlined into each copy, so it vectorises at the copy's ISA. */
static inline void la_quant_expand_row(const la_format *f, la_ggml_type t, const char *w, int64_t cols, float *row) {
    const int64_t nb = cols / LA_QK;
    switch (t) {
    case LA_GGML_Q4_1: {
        const la_block_q4_1 *blk = (const la_block_q4_1 *)w;
        for (int64_t b = 0; b < nb; b++) {
            const float d = la_quant_f16(blk[b].d), m = la_quant_f16(blk[b].m);
            float *dst = row + b * LA_QK;
            for (int j = 0; j < LA_QK / 2; j++) {
                dst[j] = d * (float)(blk[b].qs[j] & 0xF) + m;
                dst[j + LA_QK / 2] = d * (float)(blk[b].qs[j] >> 4) + m;
            }
        }
        break;
    }
    case LA_GGML_Q4_0: {
        const la_block_q4_0 *blk = (const la_block_q4_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            const float d = la_quant_f16(blk[b].d);
            float *dst = row + b * LA_QK;
            for (int j = 0; j < LA_QK / 2; j++) {
                dst[j] = d * (float)((blk[b].qs[j] & 0xF) - 8);
                dst[j + LA_QK / 2] = d * (float)((blk[b].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case LA_GGML_Q8_0: {
        const la_block_q8_0 *blk = (const la_block_q8_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            const float d = la_quant_f16(blk[b].d);
            for (int j = 0; j < LA_QK; j++) row[b * LA_QK + j] = d * (float)blk[b].qs[j];
        }
        break;
    }
    default: f->dequantize(w, row, cols); break;
    }
}

/* y[r] = dot(row r, x) for nrows rows starting at w; xsum[b] = sum of x's
 * 32-element block b (for formats with an offset term); xq/dx: x as int8
 * blocks with their scales, used by the SIMD copies for Q4_0, Q4_1 and
 * Q8_0 weights (the scalar copy works in f32 throughout), and xqsum[b] =
 * dx[b] * sum of xq's block b: the offset terms must see the same rounded
 * x as the nibbles, or the rounding error scales with q rather than with
 * the weight d * q + m. */
typedef void (*quant_dot_fn)(la_ggml_type t, const char *w, size_t row_bytes, int64_t nrows, int64_t cols,
                             const float *x, const float *xsum, const int8_t *xq, const float *dx,
                             const float *xqsum, float *y);
LA_ISA_DECLARE(void, la_quant_dot_rows, (la_ggml_type t, const char *w, size_t row_bytes, int64_t nrows,
                                         int64_t cols, const float *x, const float *xsum, const int8_t *xq,
                                         const float *dx, const float *xqsum, float *y));
/* Y = X W^T for n >= 1 tokens, f32 activations (matmul_isa.c): the whole
 * product, threads included, in one copy per ISA. */
LA_ISA_DECLARE(la_status, la_quant_matmul, (la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows,
                                            int64_t cols, const float *X, int64_t n, float *Y));

/* The GEMMs' work units: panels of weight rows, each split into `split`
 * runs of whole token blocks when there are too few panels to keep every
 * thread busy (at most one run per block). */
static inline int64_t la_mm_split(int64_t panels, int64_t blocks, int threads) {
    int64_t split = 1;
    if (panels < 2 * threads) split = (2 * threads + panels - 1) / panels;
    return split > blocks ? blocks : split;
}

/* Which kernel la_matmul (not la_matmul_f32) runs: the one choice, made by
 * la_cpu_matmul_path for both la_matmul and the public la_matmul_path. */
typedef enum { LA_MM_MATVEC, LA_MM_F32, LA_MM_AMX_BF16, LA_MM_DOT_BF16 } la_mm_path;
la_mm_path la_cpu_matmul_path(const la_context *ctx, la_ggml_type t, int64_t cols, int64_t n);
#if defined(LA_HAVE_AMX)
/* Y = X W^T for n > 1 on AMX tiles (matmul_amx.c, built with the AMX flags
 * only when the compiler has them); only where la_amx_usable said yes. */
la_status la_quant_matmul_amx(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows, int64_t cols,
                              const float *X, int64_t n, float *Y);
/* The AMX ceiling's loop (la_peak_amx_bf16_gflops, cpu/peak/peak.c): iters
 * x 4 TDPBF16PS on the calling thread; returns the flops it did. Only
 * where la_amx_usable said yes (it asks the kernel for the tile state). */
double la_peak_amx_run(int64_t iters);
#endif
/* Y = X W^T for n > 1 with VDPBF16PS (matmul_bf16_isa.c, which has a body
 * in its avx512_bf16 copy only); only at SIMD level avx512_bf16. */
la_status la_quant_matmul_bf16_avx512_bf16(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows,
                                           int64_t cols, const float *X, int64_t n, float *Y);

/* jobs validated, rb[j] the row bytes of job j; round_x: x rounded to int8
 * per 32-block for the integer kernels (la_matvec_batch), else f32 x
 * throughout (la_matvec_batch_f32). */
la_status la_cpu_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, const size_t *rb, int64_t cols,
                              const float *x, bool round_x);
/* n >= 1 rows of X: the f32 GEMM, or a bf16 path (AMX or VDPBF16PS) when
 * `bf16_ok` and la_cpu_matmul_path says so. */
la_status la_cpu_matmul(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows, int64_t cols,
                        const float *X, int64_t n, float *Y, bool bf16_ok);

#endif
