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

/* jobs validated, rb[j] the row bytes of job j. */
la_status la_cpu_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, const size_t *rb, int64_t cols,
                              const float *x);
/* n >= 1 rows of X (f32 activations). */
la_status la_cpu_matmul(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows, int64_t cols,
                        const float *X, int64_t n, float *Y);

#endif
