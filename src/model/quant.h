/* Weight formats of GGUF models and the products the runtime needs on them.
 * Every type has a dequantiser (the reference) and SIMD dot kernels chosen by
 * the context's SIMD level. */
#ifndef LA_QUANT_H
#define LA_QUANT_H

#include "gguf.h"

bool la_ggml_type_known(la_ggml_type t);          /* one of the types in gguf.h */
const char *la_ggml_type_name(la_ggml_type t);
int64_t la_ggml_block_elems(la_ggml_type t);      /* 1 for F32/F16/BF16, 32 or 256 for quants */
size_t la_ggml_block_bytes(la_ggml_type t);
/* Bytes of a row of n elements; LA_ERR_SHAPE if n is not a multiple of the block. */
la_status la_ggml_row_bytes(la_ggml_type t, int64_t n, size_t *out);

/* dst[0..n) = the n elements at src (n a multiple of the block). */
void la_dequantize_row(la_ggml_type t, const void *src, float *dst, int64_t n);

/* y[r] = dot(row r of W, x), r in [0, rows); W is rows x cols of type t with
 * rows packed back to back. Threads over rows. */
la_status la_matvec(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *x,
                    float *y);

/* Several products of one x (a layer's q, k and v; gate and up): x is
 * rounded once and all rows share one parallel region. */
#define LA_MATVEC_MAX_JOBS 8
typedef struct {
    la_ggml_type type;
    const void *W;
    int64_t rows;
    float *y;
} la_matvec_job;
la_status la_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x);

/* Y[i][r] = dot(row r of W, X[i]) for i in [0, n): a matrix-matrix product
 * for prefill (X is n x cols, Y is n x rows, both row-major f32). Reads each
 * weight block once per tile of X rows, not once per token. */
la_status la_matmul(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *X,
                    int64_t n, float *Y);

#endif
