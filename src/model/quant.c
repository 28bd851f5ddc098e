/* Weight formats: block layouts, the dequantisers that define each format,
 * and the dispatch of matrix-vector and matrix-matrix products to the
 * per-ISA kernels in src/cpu/quant_dot_isa.c. */
#include "quant.h"

#include "core/internal.h"
#include "cpu/isa.h"
#include "cpu/quant_kernels.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    la_ggml_type type;
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} type_info;

static const type_info types[] = {
    {LA_GGML_F32, "F32", 1, 4},       {LA_GGML_F16, "F16", 1, 2},        {LA_GGML_BF16, "BF16", 1, 2},
    {LA_GGML_Q8_0, "Q8_0", 32, 34},   {LA_GGML_Q4_0, "Q4_0", 32, 18},    {LA_GGML_Q4_1, "Q4_1", 32, 20},
    {LA_GGML_Q4_K, "Q4_K", 256, 144}, {LA_GGML_Q6_K, "Q6_K", 256, 210},
};

static const type_info *info(la_ggml_type t) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].type == t) return &types[i];
    return NULL;
}

bool la_ggml_type_known(la_ggml_type t) { return info(t) != NULL; }
const char *la_ggml_type_name(la_ggml_type t) { return info(t) ? info(t)->name : "unknown"; }
int64_t la_ggml_block_elems(la_ggml_type t) { return info(t) ? info(t)->block_elems : 0; }
size_t la_ggml_block_bytes(la_ggml_type t) { return info(t) ? info(t)->block_bytes : 0; }

la_status la_ggml_row_bytes(la_ggml_type t, int64_t n, size_t *out) {
    const type_info *ti = info(t);
    if (!ti) return la_fail(LA_ERR_UNSUPPORTED, "weight type %d is not supported", (int)t);
    if (n <= 0 || n % ti->block_elems)
        return la_fail(LA_ERR_SHAPE, "a %s row of %lld elements is not a whole number of %lld-element blocks", ti->name,
                       (long long)n, (long long)ti->block_elems);
    if (!la_mul_size((size_t)(n / ti->block_elems), ti->block_bytes, out))
        return la_fail(LA_ERR_OVERFLOW, "row of %lld %s elements overflows", (long long)n, ti->name);
    return LA_OK;
}

static float half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return la_f16_to_f32(h);
}

/* Q4_K / Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes:
 * sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-3 (scales) and
 * 4-7 (mins); sub-blocks 4-7 take their low 4 bits from bytes 8-11 and
 * their top 2 bits from the top of bytes 0-3 / 4-7. */
void la_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void la_dequantize_row(la_ggml_type t, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    switch (t) {
    case LA_GGML_F32: memcpy(dst, src, (size_t)n * 4); return;
    case LA_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = half(p + 2 * i);
        return;
    case LA_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = la_bf16_to_f32(h);
        }
        return;
    case LA_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = half(p);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)(int8_t)p[2 + j];
        }
        return;
    case LA_GGML_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = half(p);
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((p[2 + j] & 0xF) - 8);
                dst[b * 32 + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return;
    case LA_GGML_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            float d = half(p), m = half(p + 2);
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(p[4 + j] & 0xF) + m;
                dst[b * 32 + j + 16] = d * (float)(p[4 + j] >> 4) + m;
            }
        }
        return;
    case LA_GGML_Q4_K:
        /* 256 = 4 groups of 64; in group g the low nibbles of qs[32g..32g+31]
         * are sub-block 2g and the high nibbles sub-block 2g+1 */
        for (int64_t b = 0; b < n / 256; b++, p += 144) {
            float d = half(p), dmin = half(p + 2);
            const uint8_t *scales = p + 4, *qs = p + 16;
            float *y = dst + b * 256;
            for (int g = 0; g < 4; g++) {
                uint8_t sc0, m0, sc1, m1;
                la_q4k_scale_min(2 * g, scales, &sc0, &m0);
                la_q4k_scale_min(2 * g + 1, scales, &sc1, &m1);
                for (int l = 0; l < 32; l++) {
                    y[64 * g + l] = d * sc0 * (float)(qs[32 * g + l] & 0xF) - dmin * m0;
                    y[64 * g + 32 + l] = d * sc1 * (float)(qs[32 * g + l] >> 4) - dmin * m1;
                }
            }
        }
        return;
    case LA_GGML_Q6_K:
        /* two halves of 128; in each, ql holds the low 4 bits (64 bytes,
         * low then high nibbles), qh the top 2 bits of four values per
         * byte; scales are int8, one per 16 values */
        for (int64_t b = 0; b < n / 256; b++, p += 210) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = half(p + 208);
            float *y = dst + b * 256;
            for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128)
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[is] * (float)q1;
                    y[l + 32] = d * sc[is + 2] * (float)q2;
                    y[l + 64] = d * sc[is + 4] * (float)q3;
                    y[l + 96] = d * sc[is + 6] * (float)q4;
                }
        }
        return;
    default: return;
    }
}

static la_status check_product(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols,
                               const void *x, const void *y, size_t *row_bytes) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!W || !x || !y) return la_fail(LA_ERR_NULL, "W, x or y is NULL");
    if (rows <= 0) return la_fail(LA_ERR_SHAPE, "rows is %lld; must be > 0", (long long)rows);
    return la_ggml_row_bytes(t, cols, row_bytes);
}

static quant_dot_fn pick_dot(la_simd s) {
    return s == LA_SIMD_SCALAR ? la_quant_dot_rows_scalar : s == LA_SIMD_AVX2 ? la_quant_dot_rows_avx2
                                                                            : la_quant_dot_rows_avx512;
}

static quant_tile_fn pick_tile(la_simd s) {
    return s == LA_SIMD_SCALAR ? la_quant_matmul_tile_scalar
           : s == LA_SIMD_AVX2 ? la_quant_matmul_tile_avx2
                               : la_quant_matmul_tile_avx512;
}

/* Rows handed to a thread at a time by matvec: small enough to balance,
 * large enough that scheduling costs nothing next to a row's work. */
#define MATVEC_CHUNK 16

la_status la_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x) {
    if (!jobs) return la_fail(LA_ERR_NULL, "jobs is NULL");
    if (n_jobs <= 0 || n_jobs > LA_MATVEC_MAX_JOBS)
        return la_fail(LA_ERR_ARGUMENT, "n_jobs is %d; must be in [1, %d]", n_jobs, LA_MATVEC_MAX_JOBS);
    size_t rb[LA_MATVEC_MAX_JOBS];
    int64_t first_chunk[LA_MATVEC_MAX_JOBS + 1] = {0}, work = 0;
    for (int j = 0; j < n_jobs; j++) {
        la_status st = check_product(ctx, jobs[j].type, jobs[j].W, jobs[j].rows, cols, x, jobs[j].y, &rb[j]);
        if (st) return st;
        first_chunk[j + 1] = first_chunk[j] + (jobs[j].rows + MATVEC_CHUNK - 1) / MATVEC_CHUNK;
        work += jobs[j].rows * cols;
    }
    /* Once per vector, for every row: the per-block sums of x (offset terms
     * of Q4_0/Q4_1), and x quantised to int8 blocks (dx = max|x| / 127,
     * round to nearest) with the sums of those for the integer kernels. */
    const int64_t nb = cols / 32;
    float *xsum;
    la_status st = la_workspace(ctx, sizeof(float) * (size_t)(3 * nb + 3) + (size_t)cols + 64, (void **)&xsum);
    if (st) return st;
    float *dx = xsum + nb + 1, *xqsum = dx + nb + 1;
    int8_t *xq = (int8_t *)(xqsum + nb + 1);
    for (int64_t b = 0; b < nb; b++) {
        float s = 0, amax = 0;
        for (int j = 0; j < 32; j++) {
            s += x[b * 32 + j];
            amax = fabsf(x[b * 32 + j]) > amax ? fabsf(x[b * 32 + j]) : amax;
        }
        xsum[b] = s;
        dx[b] = amax / 127.0f;
        float inv = amax > 0 ? 127.0f / amax : 0.0f;
        int32_t qs = 0;
        for (int j = 0; j < 32; j++) qs += xq[b * 32 + j] = (int8_t)lrintf(x[b * 32 + j] * inv);
        xqsum[b] = dx[b] * (float)qs;
    }
    quant_dot_fn dot = pick_dot(ctx->simd);
    /* Static schedule: each thread streams one contiguous run of rows, which
     * the hardware prefetchers follow; interleaved small chunks measured
     * 20% slower on generation. */
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (work > 65536)
    for (int64_t c = 0; c < first_chunk[n_jobs]; c++) {
        int j = 0;
        while (c >= first_chunk[j + 1]) j++;
        const la_matvec_job *job = &jobs[j];
        int64_t r0 = (c - first_chunk[j]) * MATVEC_CHUNK, nr = job->rows - r0 < MATVEC_CHUNK ? job->rows - r0 : MATVEC_CHUNK;
        dot(job->type, (const char *)job->W + (size_t)r0 * rb[j], rb[j], nr, cols, x, xsum, cols % 32 ? NULL : xq, dx,
            xqsum, job->y + r0);
    }
    return la_succeed();
}

la_status la_matvec(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *x,
                    float *y) {
    la_matvec_job job = {t, W, rows, y};
    return la_matvec_batch(ctx, &job, 1, cols, x);
}

la_status la_matmul(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *X,
                    int64_t n, float *Y) {
    size_t rb;
    la_status st = check_product(ctx, t, W, rows, cols, X, Y, &rb);
    if (st) return st;
    if (n <= 0) return la_fail(LA_ERR_SHAPE, "n is %lld; must be > 0", (long long)n);
    if (n == 1) return la_matvec(ctx, t, W, rows, cols, X, Y);
    /* Workspace: X^T padded to whole vectors of tokens, shared; per thread a
     * tile of dequantised weight rows and its output. */
    const int64_t np = (n + 15) / 16 * 16;
    size_t xt, per_thread, total, bytes;
    if (!la_mul_size((size_t)cols, (size_t)np, &xt) ||
        !la_mul_size((size_t)LA_MATMUL_TILE_ROWS, (size_t)(cols + np), &per_thread) ||
        !la_mul_size(per_thread, (size_t)ctx->threads, &total) || (total += xt) < xt ||
        !la_mul_size(total, sizeof(float), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "matmul workspace overflows");
    float *mem;
    if ((st = la_workspace(ctx, bytes, (void **)&mem))) return st;
    float *xT = mem;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < cols; k++) xT[k * np + i] = X[i * cols + k];
    for (int64_t k = 0; k < cols; k++)
        for (int64_t i = n; i < np; i++) xT[k * np + i] = 0;
    quant_tile_fn tile = pick_tile(ctx->simd);
    const char *w = W;
    const int64_t tiles = (rows + LA_MATMUL_TILE_ROWS - 1) / LA_MATMUL_TILE_ROWS;
#pragma omp parallel num_threads(ctx->threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *scratch = mem + xt + (size_t)tid * per_thread;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < tiles; ti++) {
            int64_t r0 = ti * LA_MATMUL_TILE_ROWS, nr = rows - r0 < LA_MATMUL_TILE_ROWS ? rows - r0 : LA_MATMUL_TILE_ROWS;
            tile(t, w + (size_t)r0 * rb, rb, nr, cols, xT, n, np, scratch, Y + r0, rows);
        }
    }
    return la_succeed();
}
