/* Public quantised matrix products: validate, then run the CPU kernels
 * (weights are host memory: there is no device to choose). */
#include "cpu/quant/quant_kernels.h"
#include "ops/validate.h"

static la_status check_product(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols,
                               const void *x, const void *y, size_t *row_bytes) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!W || !x || !y) return la_fail(LA_ERR_NULL, "W, x or y is NULL");
    /* W's rows may start at any byte (longattn.h); x and y are f32 arrays */
    la_status al = la_check_aligned(x, sizeof(float), "x");
    if (al || (al = la_check_aligned(y, sizeof(float), "y"))) return al;
    if (rows <= 0) return la_fail(LA_ERR_SHAPE, "rows is %lld; must be > 0", (long long)rows);
    la_status st = la_ggml_row_bytes(t, cols, row_bytes);
    if (st) return st;
    /* W's bytes and y's floats must be addressable: the kernels index them with size_t */
    size_t bytes;
    if (!la_mul_size((size_t)rows, *row_bytes, &bytes) || !la_mul_size((size_t)rows, sizeof(float), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "W of %lld rows of %zu bytes overflows size_t", (long long)rows, *row_bytes);
    return LA_OK;
}

/* The products do not run in place (y written while x or W is still read
 * gave LA_OK and garbage: la_matvec with y = x): the outputs, then x and
 * the weights, for the aliasing rule every op applies (la_check_arg_memory,
 * which also keeps them off a workspace lent to the context). */
static la_status check_outputs(la_context *ctx, const la_matvec_job *jobs, int n_jobs, const size_t *row_bytes,
                               int64_t n, int64_t cols, const float *x) {
    static const char *const y_names[LA_MATVEC_MAX_JOBS] = {"jobs[0].y", "jobs[1].y", "jobs[2].y", "jobs[3].y",
                                                            "jobs[4].y", "jobs[5].y", "jobs[6].y", "jobs[7].y"};
    la_arg_memory mem[2 * LA_MATVEC_MAX_JOBS + 1];
    for (int j = 0; j < n_jobs; j++) {
        mem[j] = (la_arg_memory){n_jobs == 1 ? "y" : y_names[j], NULL, jobs[j].y, la_array_bytes(n * jobs[j].rows, sizeof(float))};
        mem[n_jobs + 1 + j] = (la_arg_memory){"W", NULL, jobs[j].W, (size_t)jobs[j].rows * row_bytes[j]};
    }
    mem[n_jobs] = (la_arg_memory){"x", NULL, x, la_array_bytes(n * cols, sizeof(float))};
    return la_check_arg_memory(ctx, mem, 2 * n_jobs + 1, n_jobs);
}

/* X [n, cols] and Y [n, rows] f32: their byte counts must fit in size_t. */
static la_status check_tokens(int64_t n, int64_t rows, int64_t cols) {
    if (n <= 0) return la_fail(LA_ERR_SHAPE, "n is %lld; must be > 0", (long long)n);
    size_t e;
    if (!la_mul_size((size_t)n, (size_t)cols, &e) || !la_mul_size(e, sizeof(float), &e) ||
        !la_mul_size((size_t)n, (size_t)rows, &e) || !la_mul_size(e, sizeof(float), &e))
        return la_fail(LA_ERR_OVERFLOW, "n %lld tokens of %lld inputs and %lld outputs overflow size_t", (long long)n,
                       (long long)cols, (long long)rows);
    return LA_OK;
}

static la_status matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x,
                              bool round_x) {
    if (!jobs) return la_fail(LA_ERR_NULL, "jobs is NULL");
    if (n_jobs <= 0 || n_jobs > LA_MATVEC_MAX_JOBS)
        return la_fail(LA_ERR_ARGUMENT, "n_jobs is %d; must be in [1, %d]", n_jobs, LA_MATVEC_MAX_JOBS);
    size_t rb[LA_MATVEC_MAX_JOBS];
    for (int j = 0; j < n_jobs; j++) {
        la_status st = check_product(ctx, jobs[j].type, jobs[j].W, jobs[j].rows, cols, x, jobs[j].y, &rb[j]);
        if (st) return st;
    }
    la_status st = check_outputs(ctx, jobs, n_jobs, rb, 1, cols, x);
    if (st) return st;
    st = la_cpu_matvec_batch(ctx, jobs, n_jobs, rb, cols, x, round_x);
    return st ? st : la_succeed();
}

la_status la_matvec_batch(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x) {
    return matvec_batch(ctx, jobs, n_jobs, cols, x, true);
}

la_status la_matvec_batch_f32(la_context *ctx, const la_matvec_job *jobs, int n_jobs, int64_t cols, const float *x) {
    return matvec_batch(ctx, jobs, n_jobs, cols, x, false);
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
    if ((st = check_tokens(n, rows, cols))) return st;
    const la_matvec_job job = {t, W, rows, Y};
    if ((st = check_outputs(ctx, &job, 1, &rb, n, cols, X))) return st;
    if (n == 1) return la_matvec(ctx, t, W, rows, cols, X, Y);
    st = la_cpu_matmul(ctx, t, W, rb, rows, cols, X, n, Y, true);
    return st ? st : la_succeed();
}

la_status la_matmul_f32(la_context *ctx, la_ggml_type t, const void *W, int64_t rows, int64_t cols, const float *X,
                        int64_t n, float *Y) {
    size_t rb;
    la_status st = check_product(ctx, t, W, rows, cols, X, Y, &rb);
    if (st) return st;
    if ((st = check_tokens(n, rows, cols))) return st;
    const la_matvec_job job = {t, W, rows, Y};
    if ((st = check_outputs(ctx, &job, 1, &rb, n, cols, X))) return st;
    st = la_cpu_matmul(ctx, t, W, rb, rows, cols, X, n, Y, false);
    return st ? st : la_succeed();
}

const char *la_matmul_path(const la_context *ctx, la_ggml_type t, int64_t cols, int64_t n) {
    /* no kernel for what la_matmul refuses: n < 1 was "amx_bf16", an unknown type "f32" */
    if (!ctx || n < 1 || cols < 1 || !la_ggml_type_known(t)) return NULL;
    switch (la_cpu_matmul_path(ctx, t, cols, n)) {
    case LA_MM_MATVEC: return "matvec";
    case LA_MM_AMX_BF16: return "amx_bf16";
    case LA_MM_DOT_BF16: return "dot_bf16";
    default: return "f32";
    }
}
