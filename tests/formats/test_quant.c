/* Weight formats: la_dequantize_row against the element-wise float64
 * reference of each format, and la_matvec / la_matmul at every SIMD level
 * and thread count against float64 dots of the reference weights. */
#include "longattn.h"
#include "quant_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int all_types[] = {REF_F32, REF_F16, REF_BF16, REF_Q8_0, REF_Q4_0, REF_Q4_1, REF_Q4_K, REF_Q6_K};

/* Entries of Y [n, rows] farther from the float64 dot of the reference
 * weights with X than f32 accumulation allows: 1e-5 of sum |w x| (not of
 * the possibly cancelling result), plus, where x was rounded to int8 per
 * 32-block (step dx = max|x_block| / 127, each term moved by at most
 * |w| dx / 2), that bound exactly. */
static int64_t values_off(const double *want, const float *X, const float *Y, int64_t rows, int64_t cols, int64_t n,
                          bool int8_x) {
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            double dot = 0, mag = 0, quant = 0;
            for (int64_t k = 0; k < cols; k++) {
                dot += want[r * cols + k] * X[i * cols + k];
                mag += fabs(want[r * cols + k] * X[i * cols + k]);
            }
            for (int64_t b = 0; int8_x && b < cols / 32; b++) {
                double amax = 0, wsum = 0;
                for (int j = 0; j < 32; j++) {
                    amax = fmax(amax, fabs(X[i * cols + b * 32 + j]));
                    wsum += fabs(want[r * cols + b * 32 + j]);
                }
                quant += wsum * amax / 127 / 2;
            }
            if (!(fabs(Y[i * rows + r] - dot) <= 1e-5 * mag + quant + 1e-7)) off++;
        }
    return off;
}

static void test_type(uint64_t *rng, int type, int64_t cols) {
    const int64_t rows = 37;
    const char *name = la_ggml_type_name((la_ggml_type)type);
    size_t rb;
    TU_EXPECT_STATUS(la_ggml_row_bytes((la_ggml_type)type, cols, &rb), LA_OK);
    tu_check(rb == (size_t)(cols / ref_block_elems(type)) * ref_block_bytes(type), "%s row bytes", name);
    uint8_t *w = tu_alloc(rb * rows);
    for (int64_t r = 0; r < rows; r++) ref_random_row(type, w + r * rb, cols, rng);
    double *want = tu_alloc(sizeof(double) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++) want[r * cols + i] = ref_dequant(type, w + r * rb, i);

    /* dequantisation: the library works in f32, so products like d * sc * q
     * round once or twice: relative 1e-6 */
    float *row = tu_alloc(sizeof(float) * (size_t)cols);
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++) {
        tu_poison(row, LA_F32, cols);
        la_dequantize_row((la_ggml_type)type, w + r * rb, row, cols);
        for (int64_t i = 0; i < cols; i++)
            if (!tu_close(row[i], want[r * cols + i], 1e-7, 1e-6)) bad++;
    }
    tu_check(bad == 0, "%s dequantize cols=%lld: %lld elements off", name, (long long)cols, (long long)bad);

    /* products, within values_off's bounds; the SIMD matvec of
     * Q4_0/Q4_1/Q8_0 rounds x to int8 per 32-block, la_matvec_batch_f32
     * does not */
    const int64_t ns[] = {1, 3, 17};
    float *X = tu_alloc(sizeof(float) * (size_t)(17 * cols)), *Y = tu_alloc(sizeof(float) * (size_t)(17 * rows));
    tu_fill(rng, X, LA_F32, 17 * cols, -1, 1);
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++)
        for (int threads = 1; threads <= 3; threads += 2)
            for (int ni = 0; ni < 3; ni++) {
                la_context *ctx;
                la_context_create(&ctx, threads);
                la_context_set_simd(ctx, levels[li]);
                int64_t n = ns[ni];
                tu_poison(Y, LA_F32, n * rows);
                la_status s = n == 1 && ni == 0 ? la_matvec(ctx, (la_ggml_type)type, w, rows, cols, X, Y)
                                                : la_matmul(ctx, (la_ggml_type)type, w, rows, cols, X, n, Y);
                tu_check(s == LA_OK, "%s product: %s", name, la_last_error());
                int64_t off = values_off(want, X, Y, rows, cols, n, true);
                tu_check(off == 0, "%s product cols=%lld n=%lld threads=%d [%s]: %lld values off", name, (long long)cols,
                         (long long)n, threads, la_simd_name(levels[li]), (long long)off);
                if (n == 1) { /* f32 activations: the same bound without the int8 term */
                    tu_poison(Y, LA_F32, rows);
                    la_matvec_job job = {(la_ggml_type)type, w, rows, Y};
                    TU_EXPECT_STATUS(la_matvec_batch_f32(ctx, &job, 1, cols, X), LA_OK);
                    off = values_off(want, X, Y, rows, cols, 1, false);
                    tu_check(off == 0, "%s f32-activation matvec cols=%lld threads=%d [%s]: %lld values off", name,
                             (long long)cols, threads, la_simd_name(levels[li]), (long long)off);
                }
                la_context_destroy(ctx);
            }
    free(w), free(want), free(row), free(X), free(Y);
}

/* Three random weight matrices (types[j], rows[j] x cols) as matvec jobs
 * writing y[j], a second output y1[j] each, and with `want` the float64
 * dequantised weights [rows[j]][cols]. */
typedef struct {
    uint8_t *w[3];
    float *y[3], *y1[3];
    double *want[3];
    la_matvec_job jobs[3];
} job_set;

static job_set job_set_random(uint64_t *rng, const int types[3], const int64_t rows[3], int64_t cols, bool want) {
    job_set s = {0};
    for (int j = 0; j < 3; j++) {
        size_t rb = (size_t)(cols / ref_block_elems(types[j])) * ref_block_bytes(types[j]);
        s.w[j] = tu_alloc(rb * (size_t)rows[j]);
        if (want) s.want[j] = tu_alloc(sizeof(double) * (size_t)(rows[j] * cols));
        for (int64_t r = 0; r < rows[j]; r++) {
            ref_random_row(types[j], s.w[j] + r * rb, cols, rng);
            for (int64_t i = 0; want && i < cols; i++) s.want[j][r * cols + i] = ref_dequant(types[j], s.w[j] + r * rb, i);
        }
        s.y[j] = tu_alloc(sizeof(float) * (size_t)rows[j]), s.y1[j] = tu_alloc(sizeof(float) * (size_t)rows[j]);
        s.jobs[j] = (la_matvec_job){(la_ggml_type)types[j], s.w[j], rows[j], s.y[j]};
    }
    return s;
}

static void job_set_free(job_set *s) {
    for (int j = 0; j < 3; j++) free(s->w[j]), free(s->want[j]), free(s->y[j]), free(s->y1[j]);
}

/* A batched matvec (one x, several matrices of mixed types and row counts)
 * gives exactly what separate matvecs give: the same rounding of x and the
 * same kernels, only the threads' split differs. */
static void test_batch(uint64_t *rng) {
    const int64_t cols = 256, rows[3] = {37, 5, 70};
    const int types[3] = {REF_Q4_1, REF_Q6_K, REF_F16};
    float *x = tu_alloc(sizeof(float) * cols);
    tu_fill(rng, x, LA_F32, cols, -1, 1);
    job_set js = job_set_random(rng, types, rows, cols, false);
    uint8_t **w = js.w;
    float **y = js.y, **y1 = js.y1;
    la_matvec_job *jobs = js.jobs;
    for (int j = 0; j < 3; j++) tu_poison(y[j], LA_F32, rows[j]);
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        la_context *ctx;
        la_context_create(&ctx, 3);
        la_context_set_simd(ctx, levels[li]);
        TU_EXPECT_STATUS(la_matvec_batch(ctx, jobs, 3, cols, x), LA_OK);
        int64_t off = 0;
        for (int j = 0; j < 3; j++) {
            la_matvec(ctx, (la_ggml_type)types[j], w[j], rows[j], cols, x, y1[j]);
            for (int64_t r = 0; r < rows[j]; r++) off += y[j][r] != y1[j][r];
        }
        tu_check(off == 0, "batched matvec [%s]: %lld values differ from separate matvecs", la_simd_name(levels[li]),
                 (long long)off);
        TU_EXPECT_STATUS(la_matvec_batch(ctx, jobs, 0, cols, x), LA_ERR_ARGUMENT);
        TU_EXPECT_STATUS(la_matvec_batch(ctx, jobs, LA_MATVEC_MAX_JOBS + 1, cols, x), LA_ERR_ARGUMENT);
        TU_EXPECT_STATUS(la_matvec_batch(ctx, NULL, 1, cols, x), LA_ERR_NULL);
        TU_EXPECT_STATUS(la_matvec_batch_f32(ctx, NULL, 1, cols, x), LA_ERR_NULL);
        TU_EXPECT_STATUS(la_matvec_batch_f32(ctx, jobs, 0, cols, x), LA_ERR_ARGUMENT);
        TU_EXPECT_STATUS(la_matvec_batch_f32(NULL, jobs, 3, cols, x), LA_ERR_NULL);
        TU_EXPECT_STATUS(la_matvec_batch_f32(ctx, jobs, 3, cols, NULL), LA_ERR_NULL);
        TU_EXPECT_STATUS(la_matvec_batch_f32(ctx, jobs, 3, 100, x), LA_ERR_SHAPE);
        TU_EXPECT_STATUS(la_matvec_batch(ctx, jobs, 3, 100, x), LA_ERR_SHAPE); /* not a multiple of Q4_1's block */
        la_context_destroy(ctx);
    }
    job_set_free(&js);
    free(x);
}

/* Products large enough to run on several threads (matvec's parallel
 * region needs rows x cols > 65536): each thread streams its own run of
 * rows, after preparing its share of x's blocks. Whatever the team (1 to 5
 * threads, more than this host may have cores), every row is the same bits
 * as the one-thread product, within values_off's bound of the float64
 * reference, and no output is left unwritten (poisoned before each call).
 * Also with a lent workspace that starts off a 64-byte line. */
static void test_threads_split(uint64_t *rng) {
    const int64_t cols = 576, rows[3] = {1000, 203, 577};
    const int types[3] = {REF_Q4_1, REF_Q8_0, REF_Q4_0};
    float *x = tu_alloc(sizeof(float) * cols);
    tu_fill(rng, x, LA_F32, cols, -1, 1);
    job_set js = job_set_random(rng, types, rows, cols, true);
    double **want = js.want;
    float **y = js.y, **y1 = js.y1;
    la_matvec_job *jobs = js.jobs;
    const size_t lent_bytes = 1 << 20;
    char *lent = tu_alloc(lent_bytes + 64);
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++)
        for (int lend = 0; lend < 2; lend++)
            for (int threads = 1; threads <= 5; threads++) {
                la_context *ctx;
                la_context_create(&ctx, threads);
                la_context_set_simd(ctx, levels[li]);
                if (lend) TU_EXPECT_STATUS(la_context_set_workspace(ctx, lent + 4, lent_bytes), LA_OK);
                for (int rep = 0; rep < 4; rep++) {
                    for (int j = 0; j < 3; j++) tu_poison(y[j], LA_F32, rows[j]);
                    TU_EXPECT_STATUS(la_matvec_batch(ctx, jobs, 3, cols, x), LA_OK);
                    int64_t off = 0, differ = 0;
                    for (int j = 0; j < 3; j++) {
                        off += values_off(want[j], x, y[j], rows[j], cols, 1, true);
                        if (threads == 1 && rep == 0 && !lend) /* this level's one-thread product */
                            for (int64_t r = 0; r < rows[j]; r++) y1[j][r] = y[j][r];
                        else
                            for (int64_t r = 0; r < rows[j]; r++) differ += memcmp(&y[j][r], &y1[j][r], sizeof(float)) != 0;
                    }
                    tu_check(off == 0 && differ == 0,
                             "split matvec threads=%d lent=%d rep %d [%s]: %lld values off, %lld differ from one thread's",
                             threads, lend, rep, la_simd_name(levels[li]), (long long)off, (long long)differ);
                }
                la_context_destroy(ctx);
            }
    job_set_free(&js);
    free(x), free(lent);
}

static void bad_inputs(void) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    float x[64] = {0}, y[4];
    uint8_t w[256] = {0};
    size_t rb;
    TU_EXPECT_STATUS(la_ggml_row_bytes(LA_GGML_Q4_1, 33, &rb), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_ggml_row_bytes((la_ggml_type)5, 32, &rb), LA_ERR_UNSUPPORTED);
    TU_EXPECT_STATUS(la_matvec(NULL, LA_GGML_F32, w, 1, 32, x, y), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_matvec(ctx, LA_GGML_F32, NULL, 1, 32, x, y), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_matvec(ctx, LA_GGML_F32, w, 0, 32, x, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matvec(ctx, LA_GGML_Q8_0, w, 1, 40, x, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul(ctx, LA_GGML_F32, w, 1, 32, x, 0, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul(ctx, LA_GGML_F32, w, 1, -32, x, 2, y), LA_ERR_SHAPE);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    /* row lengths of 1, 2, 3, 5, 16 and 49 blocks: odd block counts reach
     * the kernels' tails (the AVX-512 Q4_1 dot takes blocks in pairs) */
    const int64_t cols[] = {32, 64, 96, 160, 512, 1568};
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++)
        for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
            if (cols[c] % ref_block_elems(all_types[i]) == 0) test_type(&rng, all_types[i], cols[c]);
    test_type(&rng, REF_Q4_K, 768), test_type(&rng, REF_Q6_K, 768); /* 3 super-blocks */
    test_batch(&rng);
    test_threads_split(&rng);
    bad_inputs();
    return tu_finish();
}
